"""RFC 9457 problem+json answers with stable `type`s, for every error the API can give."""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from conveyor import errors

log = logging.getLogger("conveyor.api")

TYPE_BASE = "https://conveyor.dev/problems/"
MEDIA_TYPE = "application/problem+json"

HTTP_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    416: "range-not-satisfiable",
    422: "invalid-request",
    429: "too-many-requests",
    503: "unavailable",
}


def problem(
    status: int,
    type_: str,
    detail: str,
    *,
    title: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """A problem+json response; `type_` is the stable short name (e.g. `job-not-found`)."""
    body: dict[str, Any] = {
        "type": TYPE_BASE + type_,
        "title": title or type_.replace("-", " ").capitalize(),
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


async def _conveyor_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.ConveyorError)
    if exc.status >= 500 and exc.status != 503:
        log.error("internal error on %s %s: %s", request.method, request.url.path, exc)
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    if isinstance(exc, errors.QuotaExceededError):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    return problem(
        exc.status, exc.type, exc.message, instance=request.url.path, headers=headers,
        **exc.details,
    )  # fmt: skip


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(map(str, f['loc']))}: {f['msg']}" for f in fields)
    return problem(
        422, "invalid-request", f"the request is invalid: {summary}", instance=request.url.path,
        errors=fields,
    )  # fmt: skip


NativeError = Callable[[int, str, dict[str, str] | None], Response]
_native: list[tuple[str, NativeError]] = []


def native_errors(prefix: str, render: NativeError) -> None:
    """HTTP errors under `prefix` (no such route: 404, wrong method: 405, ...) answer in the
    shape of the compat API served there, as its clients parse them; `render(status, detail,
    headers)` makes the answer."""
    _native.append((prefix, render))


def allowed_methods(request: Request) -> str | None:
    """Every method the API documents at this path (None: a path outside the document).
    Starlette's 405 names only the methods of the first route matching the path, though GET
    and DELETE of one path are two routes; the OpenAPI document knows them all."""
    paths = request.app.openapi().get("paths", {})
    methods: set[str] = set()
    for template, operations in paths.items():
        if _template_regex(template).fullmatch(request.url.path):
            methods |= {m.upper() for m in operations if m in _HTTP_METHODS}
    if not methods:
        return None
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


_HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@functools.lru_cache(maxsize=1024)
def _template_regex(template: str) -> re.Pattern[str]:
    """`/v1/jobs/{job_id}` as a regex; `{name:path}` spans slashes."""
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile(
        "".join(
            (".+" if part.endswith(":path}") else "[^/]+")
            if part.startswith("{")
            else re.escape(part)
            for part in parts
        )
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {}) or None
    allow = allowed_methods(request) if exc.status_code == 405 else None
    if allow:
        headers = {**(headers or {}), "Allow": allow}
    for prefix, render in _native:
        if request.url.path.startswith(prefix):
            return render(exc.status_code, str(exc.detail), headers)
    type_ = HTTP_TYPES.get(exc.status_code, "error")
    return problem(
        exc.status_code, type_, str(exc.detail), instance=request.url.path, headers=headers
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(500, "internal", "an unexpected error happened; it has been logged")


def install(app: FastAPI) -> None:
    """Make every error the app can raise answer as problem+json."""
    app.add_exception_handler(errors.ConveyorError, _conveyor_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
