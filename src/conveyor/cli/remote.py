"""The CLI's one code path over a local store or a remote API.

`backend(settings)` is a `Client` when a URL is configured (`--url` / `CONVEYOR_URL`) and a
`LocalService` otherwise; both offer the same methods (`submit`, `get`, `list_jobs`, `events`,
`cancel`, `retry`, `delete`, `kinds`, `queues`, `workers`, `files`, `download`), so each
command is written once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from conveyor import errors
from conveyor.api import staging
from conveyor.client import Client
from conveyor.client._core import workflow_body
from conveyor.controls import Controls
from conveyor.models import Job, JobEvent, JobState, NewJob, Progress, WorkerInfo
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import BlobStorage, job_key, open_storage
from conveyor.store import Store, open_store
from conveyor.workflows import Workflow, WorkflowPage, WorkflowSubmit
from conveyor.workflows.service import Workflows


class LocalService(Service, Controls):
    """`Service` with the few extra calls the CLI shares with `Client`, and the flow controls
    (schedules, limits, queues) under the same names as `Client`'s."""

    def __init__(self, store: Store, storage: BlobStorage, *, idempotency_window_s: float) -> None:
        Service.__init__(self, store, storage, idempotency_window_s=idempotency_window_s)
        Controls.__init__(self, self)

    def submit(self, job: NewJob, *, files: Mapping[str, str | Path] | None = None) -> Job:
        """Submit; input `files` are in place before any worker can claim the job. The job
        carries a `warning` if no live worker serves it (as the API's answer does)."""
        if not files:
            return self.serving.annotate([super().submit(job)])[0]
        staged = {
            name: staging.stage(self, name, _read(Path(path)), None) for name, path in files.items()
        }
        return self.serving.annotate(staging.submit_with_files(self, [job], [staged])[0])[0]

    def workers(self) -> list[WorkerInfo]:
        return self.store.workers()

    # The workflow calls of `Client`, over the local store.

    def submit_workflow(self, document: WorkflowSubmit | dict[str, Any]) -> Workflow:
        try:
            doc = WorkflowSubmit.model_validate(workflow_body(document))
        except ValidationError as exc:  # what the API answers 422 for, said the same way
            where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            raise errors.InvalidInputError(f"the workflow document is invalid: {where}") from None
        return Workflows(self).submit(doc)

    def workflow(self, workflow_id: str) -> Workflow:
        return Workflows(self).get(workflow_id)

    def list_workflows(
        self, state: str | None = None, cursor: str | None = None, limit: int = 50
    ) -> WorkflowPage:
        return Workflows(self).list(cursor, limit, state)

    def cancel_workflow(self, workflow_id: str) -> Workflow:
        return Workflows(self).cancel(workflow_id)

    def retry_workflow(self, workflow_id: str) -> Workflow:
        return Workflows(self).retry(workflow_id)

    def save(self, job_id: str, name: str, dest: Path, direction: str = "out") -> Path:
        """Copy a job's file to `dest` (a file or a directory)."""
        self.store.get(job_id)
        target = dest / name if dest.is_dir() else dest
        self.storage.download(job_key(job_id, "in" if direction == "in" else "out", name), target)
        return target


Backend = Client | LocalService


def _read(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            yield chunk


def backend(settings: Settings) -> Backend:
    """A `Client` for `settings.url`, else the local store and files."""
    if settings.url:
        return Client(settings.url, settings.token)
    return LocalService(
        open_store(settings.store_url),
        open_storage(settings.storage_url),
        idempotency_window_s=settings.idempotency_window_s,
    )


def save(source: Backend, job_id: str, name: str, dest: Path) -> Path:
    """Download one output file of a job to `dest`."""
    if isinstance(source, Client):
        return source.download(job_id, name, dest)
    return source.save(job_id, name, dest)


def parse_files(values: list[str] | None) -> dict[str, Path]:
    """`name=path` pairs (or just `path`, named after the file); `ValueError` if unusable."""
    found: dict[str, Path] = {}
    for value in values or ():
        name, sep, path = value.partition("=")
        file = Path(path if sep else name)
        if not sep:
            name = file.name
        if not file.is_file():
            raise ValueError(f"--file {value}: {file} is not a readable file")
        found[name] = file
    return found


class StreamPoller:
    """A `poll(after)` for `output.follow` fed by the job's SSE stream instead of polling.

    A thread reads the stream into a queue; each poll drains what arrived. If the stream
    breaks, polls fall back to GETs.
    """

    def __init__(self, client: Client, job_id: str, wait_s: float = 0.5) -> None:
        self.client, self.job_id, self.wait_s = client, job_id, wait_s
        self.job = client.get(job_id)
        self._queue: queue.Queue[JobEvent | None] = queue.Queue()
        self._ended = False
        self._failed = False
        threading.Thread(target=self._read, daemon=True, name="conveyor-sse").start()

    def _read(self) -> None:
        try:
            for event in self.client.watch(self.job_id):
                self._queue.put(event)
        except (errors.ConveyorError, OSError, Exception):  # any break: fall back to polling
            self._failed = True
        finally:
            self._queue.put(None)

    def __call__(self, after: int) -> tuple[Job, list[JobEvent]]:
        events: list[JobEvent] = []
        if not self._ended:
            with contextlib.suppress(queue.Empty):
                item = self._queue.get(timeout=self.wait_s)
                while True:
                    if item is None:
                        self._ended = True
                        break
                    events.append(item)
                    item = self._queue.get_nowait()
        for event in events:
            self._apply(event)
        if self._ended:
            self.job = self.client.get(self.job_id)
            if self._failed:
                events += self.client.events(self.job_id, max([after, *(e.seq for e in events)]))
        return self.job, events

    def _apply(self, event: JobEvent) -> None:
        if event.type == "progress":
            with contextlib.suppress(ValueError):
                progress = Progress.model_validate(event.data)
                self.job = self.job.model_copy(update={"progress": progress})
        elif event.type == "state" and "state" in event.data:
            self.job = self.job.model_copy(update={"state": JobState(event.data["state"])})
            if self.job.state.is_final:
                self.job = self.client.get(self.job_id)
