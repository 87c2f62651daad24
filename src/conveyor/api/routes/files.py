"""/v1/jobs/{id}/files: list, upload (streamed, size-limited) and download (streamed, Range)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Iterator
from typing import Annotated, Literal

import anyio.from_thread
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep, SettingsDep
from conveyor.api.schemas import FileInfo, FileList, problems
from conveyor.models import JobState
from conveyor.service import Service
from conveyor.storage import check_name, job_key
from conveyor.storage.base import BlobInfo, TooLargeError

router = APIRouter(prefix="/v1/jobs", tags=["files"])

Reader = Annotated[Principal, Depends(require_scope("read"))]
Submitter = Annotated[Principal, Depends(require_scope("submit"))]
Direction = Annotated[
    Literal["in", "out"], Query(description="`in`: input files; `out`: the job's outputs.")
]
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
PRESIGN_EXPIRES_S = 300
# Types a download is labelled with, from its name's extension (PDFs open as PDFs); only inert
# ones: a file named .html or .svg still downloads as octet-stream, never as a page of this
# origin (and every download is an attachment, with nosniff).
DOWNLOAD_TYPES = frozenset({
    "application/pdf", "application/json", "application/zip", "application/gzip",
    "text/plain", "text/csv", "text/tab-separated-values", "image/png", "image/jpeg",
    "image/gif", "image/webp", "audio/mpeg", "audio/ogg",
})  # fmt: skip
DOWNLOAD_CONTENT = {t: {"schema": {"type": "string"}} for t in sorted(DOWNLOAD_TYPES)}


def download_type(name: str) -> str:
    """The media type a file is served as: its extension's when inert, else octet-stream."""
    guessed = mimetypes.guess_type(name, strict=False)[0]
    return guessed if guessed in DOWNLOAD_TYPES else "application/octet-stream"


def check_upload(request: Request, limit: int) -> int:
    """Refuse (before reading) bodies declared too large (413) or sent as forms (415)."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise TooLargeError(f"the file is larger than the limit of {limit} bytes", limit=limit)
    ctype = request.headers.get("content-type", "application/octet-stream")
    if ctype.startswith(("multipart/", "application/x-www-form-urlencoded")):
        raise HTTPException(415, "send the file as the raw request body, not as a form")
    return limit


def body_chunks(request: Request) -> Iterator[bytes]:
    """The request body as a blocking iterator, for storage code running in a worker thread."""
    stream = request.stream().__aiter__()

    async def next_chunk() -> bytes:
        return await stream.__anext__()

    while True:
        try:
            yield anyio.from_thread.run(next_chunk)
        except StopAsyncIteration:
            return


@router.get("/{job_id}/files", summary="List a job's files", responses=problems(401, 403, 404))
async def list_files(job_id: str, service: ServiceDep, principal: Reader) -> FileList:
    found = await run_in_threadpool(service.files, job_id)
    return FileList(files=[FileInfo.model_validate(f) for f in found])


def _check_output_lease(service: Service, job_id: str, token: str | None) -> None:
    """Outputs may be written only by the worker holding the job's current lease."""
    job = service.get(job_id)
    lease = job.lease
    if job.state is not JobState.RUNNING or lease is None or token != lease.token:
        raise errors.StaleLeaseError(
            f"job {job_id}: output files need the current lease token of the running job",
            job_id=job_id,
        )


@router.put(
    "/{job_id}/files/{name}",
    status_code=201,
    summary="Upload a file",
    responses=problems(400, 401, 403, 404, 409, 413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def upload_file(
    job_id: str,
    name: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Submitter,
    direction: Direction = "in",
    token: Annotated[str | None, Query(description="Lease token, for `out` files.")] = None,
) -> FileInfo:
    """Stream the raw request body into the job's file `name`.

    Input files (`direction=in`) can be added until the job starts. External workers write
    outputs (`direction=out`) with their lease token. Larger than the server's limit: 413,
    before the rest is read.
    """
    check_name(name)
    limit = check_upload(request, settings.max_upload_bytes)

    def store_it() -> BlobInfo:
        if direction == "in":
            return service.upload(job_id, name, body_chunks(request), limit)
        _check_output_lease(service, job_id, token)
        key = job_key(job_id, "out", name)
        service.storage.write(key, body_chunks(request), limit)
        return service.storage.stat(key)

    info = await run_in_threadpool(store_it)
    return FileInfo(name=info.name, direction=direction, size=info.size)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`[start, end)` of a single `bytes=` range, None for the whole file; 416 if unusable."""
    if not header:
        return None
    match = RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        raise HTTPException(416, f"unsupported Range {header!r}; use one bytes=start-end range",
                            headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size
    else:
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    if start >= size or start >= end:
        raise HTTPException(416, f"the range {header!r} is outside the file ({size} bytes)",
                            headers={"Content-Range": f"bytes */{size}"})  # fmt: skip
    return start, end


def _stat(service: Service, job_id: str, direction: Literal["in", "out"], name: str) -> BlobInfo:
    service.get(job_id)  # 404 for an unknown job before looking for its file
    return service.storage.stat(job_key(job_id, direction, name))


@router.get(
    "/{job_id}/files/{name}",
    summary="Download a file",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string"}},
                **DOWNLOAD_CONTENT,
            }
        },
        206: {"description": "Part of the file (Range)."},
        307: {"description": "Redirect to a presigned URL (`redirect=1`, S3 storage)."},
        **problems(400, 401, 403, 404, 416),
    },
)
async def download_file(
    job_id: str,
    name: str,
    request: Request,
    service: ServiceDep,
    principal: Reader,
    direction: Direction = "out",
    redirect: Annotated[bool, Query(description="307 to a presigned URL if storage can.")] = False,
) -> Response:
    """Stream a file as an attachment; one `Range: bytes=a-b` gives 206."""
    check_name(name)
    info = await run_in_threadpool(_stat, service, job_id, direction, name)
    presign = getattr(service.storage, "presign", None)
    if redirect and callable(presign):
        url = await run_in_threadpool(presign, info.key, "GET", PRESIGN_EXPIRES_S)
        return RedirectResponse(str(url), status_code=307)
    span = parse_range(request.headers.get("range"), info.size)
    start, end = span or (0, info.size)
    _, body = await run_in_threadpool(service.download, job_id, name, direction, start, end)
    headers = {
        "Content-Disposition": f'attachment; filename="{info.name}"',
        "X-Content-Type-Options": "nosniff",
        "Accept-Ranges": "bytes",
        "Content-Length": str(end - start),
    }
    status = 200
    if span is not None:
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
    return StreamingResponse(body, status_code=status, media_type=download_type(name),
                             headers=headers)  # fmt: skip
