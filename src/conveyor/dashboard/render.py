"""Jinja templates (autoescaped) and the filters the pages use."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from conveyor.models import Job

HERE = Path(__file__).parent
# The page may load its own scripts, styles, images and frames; nothing inline, nothing else.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " frame-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self';"
    " frame-ancestors 'self'"
)


def pretty(value: Any) -> str:
    """JSON for people: indented, unicode kept (the template escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def ago(value: datetime | float | None, now: float | None = None) -> str:
    if value is None:
        return "-"
    ts = value.timestamp() if isinstance(value, datetime) else value
    seconds = max(0.0, (now if now is not None else datetime.now(UTC).timestamp()) - ts)
    return f"{duration(seconds)} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"


def clock(value: datetime | float | None) -> str:
    """UTC time with milliseconds, as written in every timeline."""
    if value is None:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def localtime(value: datetime, zone: str) -> str:
    """A moment in a time zone, with its abbreviation (`02:30 CET`)."""
    from conveyor.schedules.timing import zone as find

    return value.astimezone(find(zone)).strftime("%Y-%m-%d %H:%M %Z")


def percent(job: Job) -> int | None:
    """Progress as a whole percentage, None when the total is unknown."""
    if job.state.value == "succeeded":
        return 100
    progress = job.progress
    if progress is None or not progress.total:
        return None
    return max(0, min(100, int(progress.current * 100 / progress.total)))


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pretty=pretty, ago=ago, duration=duration, clock=clock, percent=percent, localtime=localtime
    )
    return env


ENV = _env()


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template with the viewer and request in its context."""
    context.setdefault("viewer", getattr(request.state, "viewer", None))
    context["request"] = request
    context["path"] = request.url.path
    html = ENV.get_template(template).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=security_headers())


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }
