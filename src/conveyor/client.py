"""Python clients for the conveyor HTTP API: `Client` (sync) and `AsyncClient` (asyncio).

    with conveyor.Client("http://127.0.0.1:8000", token="cvk_...") as client:
        job = client.submit("demo.count", {"to": 5})
        done = client.wait(job.id)          # follows the job's SSE stream
        print(done.state, done.result)

Every call retries with exponential backoff on connection errors and 503s. Each submit carries
an `Idempotency-Key` (random unless you pass one), so a retried submit never makes two jobs.
Errors come back as the same `ConveyorError` subclasses the server raised (`JobNotFoundError`,
`InvalidInputError`, ...), carrying the problem+json fields in `.details`.

The method names match `conveyor.service.Service`, so code (such as the CLI) can use either.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from conveyor import errors
from conveyor.models import (
    Job,
    JobEvent,
    JobFilter,
    JobPage,
    KindInfo,
    NewJob,
    QueueStats,
    WorkerInfo,
)
from conveyor.storage.base import MissingFileError, TooLargeError

__all__ = ["ApiError", "AsyncClient", "Client"]

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


def _backoff(attempt: int, base: float) -> float:
    return float(min(5.0, base * 2**attempt) * (0.5 + random.random() / 2))


def _may_retry(method: str, kwargs: dict[str, Any], exc: httpx.TransportError) -> bool:
    """Resend only what is safe twice: reads, idempotent writes, or requests never sent."""
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return True
    headers = kwargs.get("headers") or {}
    return method in {"GET", "PUT", "DELETE"} or "Idempotency-Key" in headers


def _new_job(job: NewJob | str, input: Any, options: dict[str, Any]) -> NewJob:
    if isinstance(job, NewJob):
        return job.model_copy(update=options) if options else job
    return NewJob(kind=job, input={} if input is None else input, **options)


def _filter_params(filter: JobFilter, cursor: str | None, limit: int) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = [("limit", str(limit))]
    if cursor:
        params.append(("cursor", cursor))
    for state in filter.state or ():
        params.append(("state", state.value))
    for name in ("kind", "queue", "tag"):
        value = getattr(filter, name)
        if value is not None:
            params.append((name, value))
    for name in ("created_after", "created_before"):
        when: datetime | None = getattr(filter, name)
        if when is not None:
            params.append((name, when.isoformat()))
    return params


def _submit_body(jobs: Sequence[NewJob], staged: Sequence[dict[str, str]]) -> dict[str, Any]:
    bodies = []
    for job, files in zip(jobs, staged, strict=True):
        body = job.model_dump(mode="json", exclude_none=True)
        if files:
            body["files"] = files
        bodies.append(body)
    return bodies[0] if len(bodies) == 1 else {"jobs": bodies}


def _jobs(response: httpx.Response) -> list[Job]:
    body = response.json()
    items = body["jobs"] if isinstance(body, dict) and "jobs" in body else [body]
    return [Job.model_validate(item) for item in items]


def _chunks(source: str | Path | bytes) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _opener(source: str | Path | bytes) -> Callable[[], Iterator[bytes]]:
    return lambda: _chunks(source)


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


def _settings_url(url: str | None, token: str | None) -> tuple[str, str | None]:
    found = url or os.environ.get("CONVEYOR_URL")
    if not found:
        raise errors.ConfigurationError("no API URL: pass url= or set CONVEYOR_URL")
    return found.rstrip("/"), token if token is not None else os.environ.get("CONVEYOR_TOKEN")


def _headers(token: str | None) -> dict[str, str]:
    headers = {"User-Agent": "conveyor-client"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class Client:
    """A synchronous client. `url`/`token` default to `CONVEYOR_URL`/`CONVEYOR_TOKEN`."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, token = _settings_url(url, token)
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _request(
        self, method: str, path: str, *, body: Callable[[], Any] | None = None, **kwargs: Any
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                if body is not None:
                    kwargs["content"] = body()  # a fresh stream for every attempt
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _may_retry(method, kwargs, exc):
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise_for_problem(response)
                    return response
            time.sleep(_backoff(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    # -- jobs -----------------------------------------------------------------------------------

    def submit(
        self,
        job: NewJob | str,
        input: Any = None,
        *,
        files: FilesArg | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        """Submit one job: a `NewJob`, or a kind name with its input and `NewJob` options.

        `files` maps input file names to paths (or bytes); they are uploaded first and attached
        atomically, so the job never starts without them.
        """
        new = _new_job(job, input, options)
        return self.submit_many([new], files=[files or {}], idempotency_key=idempotency_key)[0]

    def submit_many(
        self,
        jobs: Sequence[NewJob],
        *,
        files: Sequence[FilesArg] | None = None,
        idempotency_key: str | None = None,
    ) -> builtins.list[Job]:
        """Submit up to 1,000 jobs atomically (all or none)."""
        staged = [self._stage(f) for f in (files or [{}] * len(jobs))]
        key = idempotency_key or str(uuid.uuid4())
        response = self._request(
            "POST", "/v1/jobs", json=_submit_body(jobs, staged), headers={"Idempotency-Key": key}
        )
        return _jobs(response)

    def _stage(self, files: FilesArg) -> dict[str, str]:
        staged = {}
        for name, source in files.items():
            response = self._request("PUT", f"/v1/uploads/{name}", body=_opener(source))
            staged[name] = str(response.json()["id"])
        return staged

    def get(self, job_id: str) -> Job:
        return Job.model_validate(self._request("GET", f"/v1/jobs/{job_id}").json())

    def list_jobs(
        self, filter: JobFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        params = _filter_params(filter or JobFilter(), cursor, limit)
        return JobPage.model_validate(self._request("GET", "/v1/jobs", params=params).json())

    def list(self, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters (`state=`, `kind=`, ...), following the cursor."""
        limit = int(filters.pop("limit", 200))
        flt, cursor = JobFilter(**filters), None
        while True:
            page = self.list_jobs(flt, cursor, limit)
            yield from page.jobs
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def retry(self, job_id: str) -> Job:
        return Job.model_validate(self._request("POST", f"/v1/jobs/{job_id}/retry").json())

    def delete(self, job_id: str) -> None:
        self._request("DELETE", f"/v1/jobs/{job_id}")

    # -- events -------------------------------------------------------------------------------

    def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        """The job's events so far (after seq `after`)."""
        return list(self._stream(job_id, after, follow=False))

    def watch(self, job_id: str, after: int = 0) -> Iterator[JobEvent]:
        """Live events until the job ends; reconnects with `Last-Event-ID` if cut off."""
        last = after
        for attempt in range(self.retries + 1):
            try:
                for event in self._stream(job_id, last, follow=True):
                    last = event.seq
                    yield event
                return
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
                time.sleep(_backoff(attempt, self.backoff_s))

    def _stream(
        self, job_id: str, after: int, follow: bool, read_timeout: float | None = None
    ) -> Iterator[JobEvent]:
        params = {"follow": "true" if follow else "false"}
        headers = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(self._http.timeout.connect, read=read_timeout) if follow else None
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if timeout is not None:
            kwargs["timeout"] = timeout
        with self._http.stream("GET", f"/v1/jobs/{job_id}/events", **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise_for_problem(response)
            parser = SSEParser()
            for line in response.iter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job ends (following SSE; polling if streaming fails); the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = 0
        while deadline is None or time.monotonic() < deadline:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                for event in self._stream(job_id, last, follow=True, read_timeout=remaining):
                    last = event.seq
                break  # the stream ends when the job does
            except httpx.ReadTimeout:
                continue  # quiet past the deadline: the loop condition decides
            except httpx.TransportError:
                break  # streaming does not work here: poll instead
        delay = 0.05
        while True:
            job = self.get(job_id)
            if job.state.is_final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state.value}")
            time.sleep(delay)
            delay = min(1.0, delay * 1.5)

    # -- files --------------------------------------------------------------------------------

    def files(self, job_id: str) -> builtins.list[dict[str, Any]]:
        body = self._request("GET", f"/v1/jobs/{job_id}/files").json()
        return list(body["files"])

    def upload(self, job_id: str, name: str, source: str | Path | bytes) -> dict[str, Any]:
        """Add an input file to a job that has not started (prefer `submit(files=...)`)."""
        response = self._request("PUT", f"/v1/jobs/{job_id}/files/{name}", body=_opener(source))
        return dict(response.json())

    def download(
        self, job_id: str, name: str, dest: str | Path | None = None, direction: str = "out"
    ) -> Path:
        """Stream a file to `dest` (default: `name` in the current directory); return the path."""
        target = Path(dest) if dest is not None else Path(name)
        if target.is_dir():
            target = target / name
        params = {"direction": direction}
        with self._http.stream("GET", f"/v1/jobs/{job_id}/files/{name}", params=params) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise_for_problem(resp)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as out:
                for chunk in resp.iter_bytes(CHUNK):
                    out.write(chunk)
            partial.replace(target)
        return target

    # -- catalog ------------------------------------------------------------------------------

    def kinds(self, refresh: bool = False) -> dict[str, KindInfo]:
        body = self._request("GET", "/v1/kinds").json()
        return {k["name"]: KindInfo.model_validate(k) for k in body}

    def queues(self) -> builtins.list[QueueStats]:
        return [QueueStats.model_validate(q) for q in self._request("GET", "/v1/queues").json()]

    def workers(self) -> builtins.list[WorkerInfo]:
        return [WorkerInfo.model_validate(w) for w in self._request("GET", "/v1/workers").json()]


class AsyncClient:
    """The asyncio twin of `Client` (same methods, awaitable)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff_s: float = 0.1,
        transport: httpx.AsyncBaseTransport | None = None,
        limits: httpx.Limits | None = None,
    ) -> None:
        self.url, token = _settings_url(url, token)
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=_headers(token), timeout=timeout, transport=transport,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )  # fmt: skip

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries or not _may_retry(method, kwargs, exc):
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise_for_problem(response)
                    return response
            await asyncio.sleep(_backoff(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    async def submit(
        self,
        job: NewJob | str,
        input: Any = None,
        *,
        files: FilesArg | None = None,
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Job:
        new = _new_job(job, input, options)
        jobs = await self.submit_many([new], files=[files or {}], idempotency_key=idempotency_key)
        return jobs[0]

    async def submit_many(
        self,
        jobs: Sequence[NewJob],
        *,
        files: Sequence[FilesArg] | None = None,
        idempotency_key: str | None = None,
    ) -> builtins.list[Job]:
        staged = [await self._stage(f) for f in (files or [{}] * len(jobs))]
        key = idempotency_key or str(uuid.uuid4())
        response = await self._request(
            "POST", "/v1/jobs", json=_submit_body(jobs, staged), headers={"Idempotency-Key": key}
        )
        return _jobs(response)

    async def _stage(self, files: FilesArg) -> dict[str, str]:
        staged = {}
        for name, source in files.items():
            content = source if isinstance(source, bytes) else Path(source).read_bytes()
            response = await self._request("PUT", f"/v1/uploads/{name}", content=content)
            staged[name] = str(response.json()["id"])
        return staged

    async def get(self, job_id: str) -> Job:
        response = await self._request("GET", f"/v1/jobs/{job_id}")
        return Job.model_validate(response.json())

    async def list_jobs(
        self, filter: JobFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        params = _filter_params(filter or JobFilter(), cursor, limit)
        response = await self._request("GET", "/v1/jobs", params=params)
        return JobPage.model_validate(response.json())

    async def list(self, **filters: Any) -> AsyncIterator[Job]:
        limit = int(filters.pop("limit", 200))
        flt, cursor = JobFilter(**filters), None
        while True:
            page = await self.list_jobs(flt, cursor, limit)
            for job in page.jobs:
                yield job
            if not page.next_cursor:
                return
            cursor = page.next_cursor

    async def cancel(self, job_id: str) -> Job:
        response = await self._request("POST", f"/v1/jobs/{job_id}/cancel")
        return Job.model_validate(response.json())

    async def retry(self, job_id: str) -> Job:
        response = await self._request("POST", f"/v1/jobs/{job_id}/retry")
        return Job.model_validate(response.json())

    async def delete(self, job_id: str) -> None:
        await self._request("DELETE", f"/v1/jobs/{job_id}")

    async def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        return [e async for e in self._stream(job_id, after, follow=False)]

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        last = after
        for attempt in range(self.retries + 1):
            try:
                async for event in self._stream(job_id, last, follow=True):
                    last = event.seq
                    yield event
                return
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
                await asyncio.sleep(_backoff(attempt, self.backoff_s))

    async def _stream(self, job_id: str, after: int, follow: bool) -> AsyncIterator[JobEvent]:
        params = {"follow": "true" if follow else "false"}
        headers = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if follow:
            kwargs["timeout"] = httpx.Timeout(self._http.timeout.connect, read=None)
        async with self._http.stream("GET", f"/v1/jobs/{job_id}/events", **kwargs) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_problem(response)
            parser = SSEParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event

    async def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Until the job ends (SSE, then polling as a fallback); the final job."""
        try:
            async with asyncio.timeout(timeout):
                try:
                    async for _ in self.watch(job_id):
                        pass
                except httpx.TransportError:
                    pass
                delay = 0.05
                while not (job := await self.get(job_id)).state.is_final:
                    await asyncio.sleep(delay)
                    delay = min(1.0, delay * 1.5)
                return job
        except TimeoutError:
            raise TimeoutError(f"job {job_id} did not finish within {timeout}s") from None

    async def files(self, job_id: str) -> builtins.list[dict[str, Any]]:
        response = await self._request("GET", f"/v1/jobs/{job_id}/files")
        return list(response.json()["files"])

    async def upload(self, job_id: str, name: str, source: str | Path | bytes) -> dict[str, Any]:
        content = source if isinstance(source, bytes) else Path(source).read_bytes()
        response = await self._request("PUT", f"/v1/jobs/{job_id}/files/{name}", content=content)
        return dict(response.json())

    async def download(
        self, job_id: str, name: str, dest: str | Path | None = None, direction: str = "out"
    ) -> Path:
        target = Path(dest) if dest is not None else Path(name)
        if target.is_dir():
            target = target / name
        params = {"direction": direction}
        path = f"/v1/jobs/{job_id}/files/{name}"
        async with self._http.stream("GET", path, params=params) as resp:
            if resp.status_code >= 400:
                await resp.aread()
                raise_for_problem(resp)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as out:
                async for chunk in resp.aiter_bytes(CHUNK):
                    out.write(chunk)
            partial.replace(target)
        return target

    async def kinds(self, refresh: bool = False) -> dict[str, KindInfo]:
        body = (await self._request("GET", "/v1/kinds")).json()
        return {k["name"]: KindInfo.model_validate(k) for k in body}

    async def queues(self) -> builtins.list[QueueStats]:
        body = (await self._request("GET", "/v1/queues")).json()
        return [QueueStats.model_validate(q) for q in body]

    async def workers(self) -> builtins.list[WorkerInfo]:
        body = (await self._request("GET", "/v1/workers")).json()
        return [WorkerInfo.model_validate(w) for w in body]
