"""What a handler gets besides its input: progress, logs, files, storage, cancellation."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.models import JSON
from conveyor.storage.base import BlobStorage, check_name, job_key
from conveyor.worker.continuation import Continue, Spawns

PROGRESS_INTERVAL_S = 0.05


class JobCancelled(Exception):
    """The job was cancelled; raised from `ctx.progress()` / `ctx.check_cancelled()`."""


class PermanentError(Exception):
    """Raise this from a handler to fail the job without further retries."""


class Context:
    """Passed to every handler as `ctx`.

    `progress()` and `check_cancelled()` raise `JobCancelled` once the job is cancelled, so a
    handler that reports progress stops cooperatively; one that never does is killed after the
    cancel grace period.
    """

    def __init__(
        self,
        *,
        job_id: str,
        kind: str,
        attempt: int,
        storage: BlobStorage,
        workdir: Path,
        send: Callable[[dict[str, Any]], None],
        is_cancelled: Callable[[], bool],
    ) -> None:
        self.job_id = job_id
        self.kind = kind
        self.attempt = attempt
        self.storage = storage
        """The worker's blob storage, where this job's files live: for what a handler reads or
        writes beyond `input_file`/`output_file` (another job's outputs, shared uploads)."""
        self._workdir = workdir
        self._used_workdir = False  # input_file/output_file put something there
        self._send = send
        self._is_cancelled = is_cancelled
        self._pending: dict[str, Any] | None = None
        self._last_sent = 0.0
        self._outputs: dict[str, Path] = {}
        self.spawns: Spawns | None = None

    @property
    def cancelled(self) -> bool:
        """True once a cancel was requested for this job."""
        return self._is_cancelled()

    def check_cancelled(self) -> None:
        """Raise `JobCancelled` if a cancel was requested."""
        if self._is_cancelled():
            raise JobCancelled(self.job_id)

    def progress(
        self, current: float, total: float | None = None, message: str | None = None
    ) -> None:
        """Report progress; cheap to call often (updates are coalesced, ~20 per second)."""
        self._pending = {"current": current, "total": total, "message": message}
        now = time.monotonic()
        if now - self._last_sent >= PROGRESS_INTERVAL_S:
            self.flush()
            self._last_sent = now
        self.check_cancelled()

    def log(self, message: str) -> None:
        """Append a line to the job's event log (visible in the API, CLI and dashboard)."""
        self._send({"op": "log", "id": self.job_id, "line": str(message)[:10_000]})

    def flush(self) -> None:
        if self._pending is not None:
            self._send({"op": "progress", "id": self.job_id, **self._pending})
            self._pending = None

    def spawn(
        self,
        kind: str,
        input: JSON = None,
        *,
        queue: str | None = None,
        priority: int = 0,
        delay_s: float | None = None,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        backoff_s: float | None = None,
        tags: list[str] | tuple[str, ...] = (),
        idempotency_key: str | None = None,
    ) -> str:
        """Spawn a child job (defaults from its kind, as for a submit; no input is `{}`);
        returns its id.

        Call it any number of times (100,000 is fine), then return
        `ctx.wait_for_children(...)`: the children are inserted when this job settles, and it
        resumes in its kind's continuation once they have all ended. Spawning and returning
        anything else fails the job.
        """
        if self.spawns is None:
            self.spawns = Spawns()
        options: dict[str, object] = {"queue": queue, "priority": priority, "delay_s": delay_s,
                                      "max_attempts": max_attempts, "timeout_s": timeout_s,
                                      "backoff_s": backoff_s, "tags": list(tags),
                                      "idempotency_key": idempotency_key}  # fmt: skip
        return self.spawns.add(kind, input, {k: v for k, v in options.items() if v})

    def wait_for_children(self, state: JSON = None) -> Continue:
        """Return this from a handler (or a continuation) to end its run now and resume, in
        the kind's continuation, when the jobs it spawned have all ended. `state` (JSON) is
        handed to the continuation as `children.state`. With no child spawned the job
        resumes at once."""
        return Continue(state)

    def input_file(self, name: str) -> Path:
        """A local copy of the job's input file `name` (uploaded with the job)."""
        path = self._workdir / "in" / check_name(name)
        self._used_workdir = True
        if not path.exists():
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.storage.download(job_key(self.job_id, "in", name), path)
        return path

    def output_file(self, name: str) -> Path:
        """A local path to write output `name` to; stored when the handler succeeds."""
        path = self._workdir / "out" / check_name(name)
        self._used_workdir = True
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._outputs[name] = path
        return path

    @property
    def wrote_outputs(self) -> bool:
        """True if the handler asked for an output file (so `save_outputs` has work to do)."""
        return bool(self._outputs)

    def remove_workdir(self) -> None:
        """Delete the job's local working directory (the child does, after the job)."""
        if self._used_workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)

    def save_outputs(self) -> list[str]:
        """Upload the output files the handler wrote; return their names."""
        saved: list[str] = []
        for name, path in self._outputs.items():
            if path.exists():
                self.storage.upload(job_key(self.job_id, "out", name), path)
                saved.append(name)
        return saved
