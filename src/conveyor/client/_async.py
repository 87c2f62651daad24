"""`AsyncClient`: the one hand-written client; `_sync.py` (`Client`) is generated from it."""

from __future__ import annotations

import asyncio
import builtins
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from conveyor.client._core import (
    CHUNK,
    RETRY_STATUSES,
    FilesArg,
    SSEParser,
    backoff_delay,
    default_headers,
    filter_params,
    may_retry,
    new_job,
    parse_jobs,
    raise_for_problem,
    resolve_url,
    submit_body,
    workflow_body,
)
from conveyor.limits import LimitView
from conveyor.models import (
    Job,
    JobEvent,
    JobFilter,
    JobPage,
    KindInfo,
    Limit,
    NewJob,
    QueueStats,
    WorkerInfo,
)
from conveyor.schedules.model import NewSchedule, ScheduleView
from conveyor.workflows import Flow, Workflow, WorkflowPage, WorkflowSubmit
from conveyor.workflows.status import FINAL_WORKFLOW_STATES


async def _read_chunks(source: str | Path | bytes) -> AsyncIterator[bytes]:
    if isinstance(source, bytes):
        yield source
        return
    with open(source, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _opener(source: str | Path | bytes) -> Callable[[], AsyncIterator[bytes]]:
    return lambda: _read_chunks(source)


class AsyncClient:
    """An asyncio client. `url`/`token` default to `CONVEYOR_URL`/`CONVEYOR_TOKEN`."""

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
        self.url, token = resolve_url(url, token)
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=default_headers(token), timeout=timeout, transport=transport,
            limits=limits or httpx.Limits(max_connections=100, max_keepalive_connections=100),
        )  # fmt: skip

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        body: Callable[[], AsyncIterator[bytes]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        for attempt in range(self.retries + 1):
            try:
                if body is not None:
                    kwargs["content"] = body()  # a fresh stream for every attempt
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt >= self.retries or not may_retry(method, kwargs, exc):
                    raise
            else:
                if response.status_code not in RETRY_STATUSES or attempt >= self.retries:
                    raise_for_problem(response)
                    return response
            await asyncio.sleep(backoff_delay(attempt, self.backoff_s))
        raise AssertionError("unreachable")

    # -- jobs -----------------------------------------------------------------------------------

    async def submit(
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
        new = new_job(job, input, options)
        jobs = await self.submit_many([new], files=[files or {}], idempotency_key=idempotency_key)
        return jobs[0]

    async def submit_many(
        self,
        jobs: Sequence[NewJob],
        *,
        files: Sequence[FilesArg] | None = None,
        idempotency_key: str | None = None,
    ) -> builtins.list[Job]:
        """Submit up to 1,000 jobs atomically (all or none)."""
        staged = [await self._stage(f) for f in (files or [{}] * len(jobs))]
        key = idempotency_key or str(uuid.uuid4())
        response = await self._request(
            "POST", "/v1/jobs", json=submit_body(jobs, staged), headers={"Idempotency-Key": key}
        )
        return parse_jobs(response)

    async def _stage(self, files: FilesArg) -> dict[str, str]:
        staged = {}
        for name, source in files.items():
            response = await self._request("PUT", f"/v1/uploads/{name}", body=_opener(source))
            staged[name] = str(response.json()["id"])
        return staged

    async def get(self, job_id: str) -> Job:
        response = await self._request("GET", f"/v1/jobs/{job_id}")
        return Job.model_validate(response.json())

    async def list_jobs(
        self, filter: JobFilter | None = None, cursor: str | None = None, limit: int = 50
    ) -> JobPage:
        params = filter_params(filter or JobFilter(), cursor, limit)
        response = await self._request("GET", "/v1/jobs", params=params)
        return JobPage.model_validate(response.json())

    async def list(self, **filters: Any) -> AsyncIterator[Job]:
        """Every job matching the filters (`state=`, `kind=`, ...), following the cursor."""
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

    # -- events -------------------------------------------------------------------------------

    async def events(self, job_id: str, after: int = 0) -> builtins.list[JobEvent]:
        """The job's events so far (after seq `after`)."""
        return [event async for event in self._stream(job_id, after, follow=False)]

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[JobEvent]:
        """Live events until the job ends; reconnects with `Last-Event-ID` if cut off."""
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
                await asyncio.sleep(backoff_delay(attempt, self.backoff_s))

    async def _stream(
        self, job_id: str, after: int, follow: bool, read_timeout: float | None = None
    ) -> AsyncIterator[JobEvent]:
        params = {"follow": "true" if follow else "false"}
        headers = {"Last-Event-ID": str(after), "Accept": "text/event-stream"}
        kwargs: dict[str, Any] = {"params": params, "headers": headers}
        if follow:
            kwargs["timeout"] = httpx.Timeout(self._http.timeout.connect, read=read_timeout)
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
        """Block until the job ends (following SSE; polling if streaming fails); the final job."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last = 0
        while deadline is None or time.monotonic() < deadline:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                async for event in self._stream(job_id, last, follow=True, read_timeout=remaining):
                    last = event.seq
                break  # the stream ends when the job does
            except httpx.ReadTimeout:
                continue  # quiet past the deadline: the loop condition decides
            except httpx.TransportError:
                break  # streaming does not work here: poll instead
        delay = 0.05
        while True:
            job = await self.get(job_id)
            if job.state.is_final:
                return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state.value}")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 1.5)

    async def deliveries(self, job_id: str) -> builtins.list[dict[str, Any]]:
        """The job's webhook delivery log: each message, its status and attempts."""
        response = await self._request("GET", f"/v1/jobs/{job_id}/deliveries")
        return list(response.json()["deliveries"])

    # -- workflows ----------------------------------------------------------------------------

    async def submit_workflow(self, document: WorkflowSubmit | Flow | dict[str, Any]) -> Workflow:
        """Submit a workflow document (or a `Flow`); its steps are enqueued at once."""
        body = workflow_body(document)
        response = await self._request("POST", "/v1/workflows", json=body)
        return Workflow.model_validate(response.json())

    async def workflow(self, workflow_id: str) -> Workflow:
        """The workflow with its steps, state and progress."""
        response = await self._request("GET", f"/v1/workflows/{workflow_id}")
        return Workflow.model_validate(response.json())

    async def list_workflows(
        self, state: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> WorkflowPage:
        params: dict[str, Any] = {"limit": limit}
        if state is not None:
            params["state"] = state
        if cursor is not None:
            params["cursor"] = cursor
        response = await self._request("GET", "/v1/workflows", params=params)
        return WorkflowPage.model_validate(response.json())

    async def cancel_workflow(self, workflow_id: str) -> Workflow:
        response = await self._request("POST", f"/v1/workflows/{workflow_id}/cancel")
        return Workflow.model_validate(response.json())

    async def retry_workflow(self, workflow_id: str) -> Workflow:
        response = await self._request("POST", f"/v1/workflows/{workflow_id}/retry")
        return Workflow.model_validate(response.json())

    async def wait_workflow(self, workflow_id: str, timeout: float | None = None) -> Workflow:
        """Block until the workflow ends; the final workflow."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.05
        while True:
            found = await self.workflow(workflow_id)
            if found.state in FINAL_WORKFLOW_STATES:
                return found
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"workflow {workflow_id} is still {found.state}")
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 1.5)

    # -- files --------------------------------------------------------------------------------

    async def files(self, job_id: str) -> builtins.list[dict[str, Any]]:
        response = await self._request("GET", f"/v1/jobs/{job_id}/files")
        return list(response.json()["files"])

    async def upload(self, job_id: str, name: str, source: str | Path | bytes) -> dict[str, Any]:
        """Add an input file to a job that has not started (prefer `submit(files=...)`)."""
        path = f"/v1/jobs/{job_id}/files/{name}"
        response = await self._request("PUT", path, body=_opener(source))
        return dict(response.json())

    async def download(
        self, job_id: str, name: str, dest: str | Path | None = None, direction: str = "out"
    ) -> Path:
        """Stream a file to `dest` (default: `name` in the current directory); return the path."""
        target = Path(dest) if dest is not None else Path(name)
        if target.is_dir():
            target = target / name
        params = {"direction": direction}
        path = f"/v1/jobs/{job_id}/files/{name}"
        async with self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                await response.aread()
                raise_for_problem(response)
            partial = target.with_name(target.name + ".part")
            with open(partial, "wb") as out:
                async for chunk in response.aiter_bytes(CHUNK):
                    out.write(chunk)
            partial.replace(target)
        return target

    # -- catalog ------------------------------------------------------------------------------

    async def kinds(self, refresh: bool = False) -> dict[str, KindInfo]:
        response = await self._request("GET", "/v1/kinds")
        return {k["name"]: KindInfo.model_validate(k) for k in response.json()}

    async def queues(self) -> builtins.list[QueueStats]:
        response = await self._request("GET", "/v1/queues")
        return [QueueStats.model_validate(q) for q in response.json()]

    async def workers(self) -> builtins.list[WorkerInfo]:
        response = await self._request("GET", "/v1/workers")
        return [WorkerInfo.model_validate(w) for w in response.json()]

    # -- flow control: schedules, limits, queues ------------------------------------------------

    async def schedules(self) -> builtins.list[ScheduleView]:
        response = await self._request("GET", "/v1/schedules")
        return [ScheduleView.model_validate(s) for s in response.json()]

    async def schedule(self, schedule_id: str) -> ScheduleView:
        response = await self._request("GET", f"/v1/schedules/{schedule_id}")
        return ScheduleView.model_validate(response.json())

    async def create_schedule(self, new: NewSchedule) -> ScheduleView:
        """Create a schedule (admin); `AlreadyExistsError` if its id is taken."""
        body = new.model_dump(mode="json", exclude_none=True)
        response = await self._request("POST", "/v1/schedules", json=body)
        return ScheduleView.model_validate(response.json())

    async def put_schedule(self, new: NewSchedule) -> ScheduleView:
        """Create or replace a schedule (admin)."""
        body = new.model_dump(mode="json", exclude_none=True, exclude={"id"})
        response = await self._request("PUT", f"/v1/schedules/{new.id}", json=body)
        return ScheduleView.model_validate(response.json())

    async def delete_schedule(self, schedule_id: str) -> None:
        await self._request("DELETE", f"/v1/schedules/{schedule_id}")

    async def pause_schedule(self, schedule_id: str) -> ScheduleView:
        response = await self._request("POST", f"/v1/schedules/{schedule_id}/pause")
        return ScheduleView.model_validate(response.json())

    async def resume_schedule(self, schedule_id: str) -> ScheduleView:
        response = await self._request("POST", f"/v1/schedules/{schedule_id}/resume")
        return ScheduleView.model_validate(response.json())

    async def schedule_runs(self, schedule_id: str, n: int = 10) -> builtins.list[datetime]:
        """The next `n` times the schedule runs."""
        path = f"/v1/schedules/{schedule_id}/next"
        response = await self._request("GET", path, params={"n": n})
        return [datetime.fromisoformat(t) for t in response.json()["next_runs"]]

    async def limits(self) -> builtins.list[LimitView]:
        response = await self._request("GET", "/v1/limits")
        return [LimitView.model_validate(v) for v in response.json()]

    async def limit(self, target: str) -> LimitView:
        response = await self._request("GET", f"/v1/limits/{target}")
        return LimitView.model_validate(response.json())

    async def set_limit(self, limit: Limit) -> LimitView:
        """Create or replace the limit on `limit.target` (admin); obeyed at the next claim."""
        body = limit.model_dump(mode="json", exclude={"target", "updated_at"})
        response = await self._request("PUT", f"/v1/limits/{limit.target}", json=body)
        return LimitView.model_validate(response.json())

    async def delete_limit(self, target: str) -> None:
        await self._request("DELETE", f"/v1/limits/{target}")

    async def pause_queue(self, queue: str) -> QueueStats:
        response = await self._request("POST", f"/v1/queues/{queue}/pause")
        return QueueStats.model_validate(response.json())

    async def resume_queue(self, queue: str) -> QueueStats:
        response = await self._request("POST", f"/v1/queues/{queue}/resume")
        return QueueStats.model_validate(response.json())

    async def purge_queue(self, queue: str) -> int:
        """Cancel the queue's waiting jobs (admin); how many."""
        response = await self._request("POST", f"/v1/queues/{queue}/purge")
        return int(response.json()["purged"])
