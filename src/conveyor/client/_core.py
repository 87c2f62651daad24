"""What `Client` and `AsyncClient` share: building requests and reading responses (no I/O)."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from conveyor import errors
from conveyor.models import Job, JobEvent, JobFilter, NewJob
from conveyor.storage.base import MissingFileError, TooLargeError

CHUNK = 1 << 20
RETRY_STATUSES = frozenset({502, 503, 504})
FilesArg = Mapping[str, "str | Path | bytes"]


class ApiError(errors.ConveyorError):
    """The API answered with an error this client has no specific class for."""

    def __init__(self, status: int, type_: str, message: str, **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status
        self.type = type_


def _error_classes() -> dict[str, type[errors.ConveyorError]]:
    found: dict[str, type[errors.ConveyorError]] = {}
    pending: list[type[errors.ConveyorError]] = [errors.ConveyorError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.type, cls)
        pending.extend(cls.__subclasses__())
    for cls in (TooLargeError, MissingFileError):
        found[cls.type] = cls
    return found


ERROR_CLASSES = _error_classes()


def raise_for_problem(response: httpx.Response) -> None:
    """Raise the `ConveyorError` a problem+json (or other error) response stands for."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    type_ = str(body.get("type", "")).rsplit("/", 1)[-1] or "error"
    detail = str(body.get("detail") or response.reason_phrase or "error")
    extra = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail"}}
    cls = ERROR_CLASSES.get(type_)
    if cls is not None and cls.status == response.status_code and cls is not errors.ConveyorError:
        raise cls(detail, **extra)
    raise ApiError(response.status_code, type_, detail, **extra)


def backoff_delay(attempt: int, base: float) -> float:
    return float(min(5.0, base * 2**attempt) * (0.5 + random.random() / 2))


def may_retry(method: str, kwargs: dict[str, Any], exc: httpx.TransportError) -> bool:
    """Resend only what is safe twice: reads, idempotent writes, or requests never sent."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    headers = kwargs.get("headers") or {}
    return method in {"GET", "PUT", "DELETE"} or "Idempotency-Key" in headers


def new_job(job: NewJob | str, input: Any, options: dict[str, Any]) -> NewJob:
    if isinstance(job, NewJob):
        return job.model_copy(update=options) if options else job
    return NewJob(kind=job, input={} if input is None else input, **options)


def filter_params(filter: JobFilter, cursor: str | None, limit: int) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = [("limit", str(limit))]
    if cursor:
        params.append(("cursor", cursor))
    for state in filter.state or ():
        params.append(("state", state.value))
    for name in ("kind", "queue", "tag", "workflow_id", "parent_id"):
        value = getattr(filter, name)
        if value is not None:
            params.append((name, value))
    for name in ("created_after", "created_before"):
        when: datetime | None = getattr(filter, name)
        if when is not None:
            params.append((name, when.isoformat()))
    return params


def submit_body(jobs: Sequence[NewJob], staged: Sequence[dict[str, str]]) -> dict[str, Any]:
    bodies = []
    for job, files in zip(jobs, staged, strict=True):
        body = job.model_dump(mode="json", exclude_none=True)
        if files:
            body["files"] = files
        bodies.append(body)
    return bodies[0] if len(bodies) == 1 else {"jobs": bodies}


def parse_jobs(response: httpx.Response) -> list[Job]:
    body = response.json()
    items = body["jobs"] if isinstance(body, dict) and "jobs" in body else [body]
    return [Job.model_validate(item) for item in items]


class SSEParser:
    """Turns `text/event-stream` lines into `JobEvent`s."""

    def __init__(self) -> None:
        self.data: list[str] = []

    def feed(self, line: str) -> JobEvent | None:
        if line == "":
            if not self.data:
                return None
            text, self.data = "\n".join(self.data), []
            return JobEvent.model_validate_json(text)
        if line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        return None


def resolve_url(url: str | None, token: str | None) -> tuple[str, str | None]:
    found = url or os.environ.get("CONVEYOR_URL")
    if not found:
        raise errors.ConfigurationError("no API URL: pass url= or set CONVEYOR_URL")
    return found.rstrip("/"), token if token is not None else os.environ.get("CONVEYOR_TOKEN")


def default_headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "conveyor-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def workflow_body(document: Any) -> Any:
    """The JSON body of a workflow submit: a document, a `Flow`, or a plain dict."""
    if hasattr(document, "document"):  # a Flow
        document = document.document()
    if hasattr(document, "model_dump"):
        return document.model_dump(mode="json", by_alias=True, exclude_none=True)
    return document
