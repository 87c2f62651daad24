"""The dashboard's static files: served from the package, by exact name only."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter()

STATIC = Path(__file__).parent / "static"
TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
FILES = {p.name: p for p in STATIC.iterdir() if p.suffix in TYPES}


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    path = FILES.get(name)
    if path is None:
        raise HTTPException(404, f"no static file {name!r}")
    # Names carry versions (htmx-2.0.11) or change rarely; a day of caching is safe enough.
    return FileResponse(
        path,
        media_type=TYPES[path.suffix],
        headers={"Cache-Control": "public, max-age=86400", "X-Content-Type-Options": "nosniff"},
    )
