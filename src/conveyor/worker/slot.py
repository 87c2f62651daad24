"""One child process of a supervisor and the jobs it has been handed.

A child holds either `process` jobs (a FIFO it runs one after another) or concurrent jobs
(async and thread kinds, all running at once), never both: the supervisor sends one kind of
work only to a child that holds none of the other.

The child publishes the last job it started in two shared-memory doubles (the job's dispatch
sequence number and its start time on the system-wide monotonic clock): no message and no
syscall per job. It starts jobs in dispatch order, so after a crash that one number tells the
supervisor exactly which jobs had started: every job up to it, concurrent ones included.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

import orjson

from conveyor.models import Job, Progress
from conveyor.telemetry import tracing
from conveyor.worker.child import BOOTED, SEQ, SINCE, child_main

KillReason = Literal["timeout", "cancel", "drain", "lost"]
SPAWN = multiprocessing.get_context("spawn")
KILL_WAIT_S = 2.0


@dataclass(eq=False)
class InFlight:
    """A leased job this supervisor is responsible for."""

    job: Job
    token: str
    renewed_at: float  # monotonic time the last store call that set its lease was sent
    seq: int = 0  # dispatch order within its slot, set by Slot.dispatch
    cancel: bool = False
    lost: bool = False  # the lease went to someone else: stop it, never settle it
    progress: Progress | None = None
    logs: list[str] = field(default_factory=list)
    concurrent: bool = False  # an async or thread kind's job: runs beside others in its child
    dispatched_at: float = 0.0  # monotonic; a concurrent job starts when its child receives it
    done: bool = False  # reported finished or given up (deadlines for it no longer apply)
    slot: int = -1  # index of the child it was sent to

    @property
    def id(self) -> str:
        return self.job.id

    def run_message(self) -> dict[str, Any]:
        job = self.job
        message = {"op": "run", "id": job.id, "seq": self.seq, "kind": job.kind,
                   "input": job.input, "attempt": job.attempt,
                   "timeout": job.timeout_s}  # fmt: skip
        if job.continuation is not None:  # resumed after its children (continuation.py)
            message["resume"] = job.continuation
        if tracing.ENABLED:
            from conveyor.telemetry import spans

            if (fields := spans.run_fields(job)) is not None:
                message["trace"] = fields
        return message


class Slot:
    """A child process plus the jobs sent to it: a FIFO of `process` jobs, or concurrent ones."""

    def __init__(self, index: int, imports: list[str], storage_url: str) -> None:
        self.index = index
        self.imports = imports
        self.storage_url = storage_url
        self.jobs: deque[InFlight] = deque()  # process jobs, in the order the child runs them
        self.concurrent: dict[str, InFlight] = {}  # concurrent jobs by id, in dispatch order
        self.kind_counts: dict[str, int] = {}  # concurrent jobs per kind
        self.next_seq = 1
        self.kill_reason: KillReason | None = None
        self.kill_item: InFlight | None = None
        self.kill_at: float | None = None
        self.sigkill_at: float | None = None
        self.crashes: deque[float] = deque(maxlen=5)
        self.restart_at = 0.0
        self.sentinel_ready = False
        self.outbox: list[dict[str, Any]] = []
        self.process: BaseProcess | None = None
        self.conn: Connection | None = None
        self.fenced = False  # killed by the fence watchdog (another thread): see fence()
        self._process_lock = threading.Lock()  # fence() vs reap() closing the process
        self.shared = SPAWN.RawArray(ctypes.c_double, 3)

    def start(self) -> None:
        parent, child = SPAWN.Pipe()
        self.shared = SPAWN.RawArray(ctypes.c_double, 3)
        process = SPAWN.Process(
            target=child_main,
            args=(child, self.imports, self.storage_url, self.shared),
            name=f"conveyor-child-{self.index}",
            daemon=True,
        )
        process.start()
        child.close()
        self.process, self.conn = process, parent
        self.sentinel_ready = False
        self.fenced = False
        self.kill_reason = self.kill_at = self.sigkill_at = self.kill_item = None

    @property
    def alive(self) -> bool:
        """Started and not yet reaped (a death shows on the sentinel; see Supervisor._reap)."""
        return self.process is not None

    @property
    def started_seq(self) -> int:
        """Sequence number of the last job the child started (0: none yet)."""
        return int(self.shared[SEQ])

    @property
    def busy(self) -> int:
        """Jobs sent to the child and not yet reported finished."""
        return len(self.jobs) + len(self.concurrent)

    def items(self) -> list[InFlight]:
        """Every job this child holds (safe to call from another thread: C-level copies)."""
        return [*tuple(self.jobs), *tuple(self.concurrent.values())]

    def room(self, kind: str, cap: int) -> int:
        """How many more jobs of a concurrent kind this child may take (0 while it holds
        `process` jobs)."""
        return 0 if self.jobs else cap - self.kind_counts.get(kind, 0)

    def running(self) -> InFlight | None:
        """The `process` job the child is running now, if it has not reported it finished."""
        seq = self.started_seq
        for item in self.jobs:
            if item.seq >= seq:
                return item if item.seq == seq else None
        return None

    @property
    def running_since(self) -> float:
        """When the running job started, on the monotonic clock."""
        return self.shared[SINCE]

    def send(self, data: bytes) -> bool:
        if self.conn is None:
            return False
        try:
            self.conn.send_bytes(data)
            return True
        except (BrokenPipeError, OSError):
            return False

    def dispatch(self, item: InFlight) -> None:
        """Hand a job to this child (sent by `flush`, several in one write)."""
        item.seq, self.next_seq = self.next_seq, self.next_seq + 1
        if item.concurrent:
            self.concurrent[item.id] = item
            kind = item.job.kind
            self.kind_counts[kind] = self.kind_counts.get(kind, 0) + 1
        else:
            self.jobs.append(item)
        self.outbox.append(item.run_message())

    def flush(self) -> None:
        if self.outbox:
            batch = {"op": "run_many", "jobs": self.outbox}
            self.outbox = []
            self.send(orjson.dumps(batch))

    def control(self, op: str, **fields: Any) -> None:
        self.send(orjson.dumps({"op": op, **fields}))

    def started_at(self, item: InFlight) -> float | None:
        """When a concurrent job started (None: not yet): the child starts a job as soon as it
        receives it, or once it has booted if it was sent earlier."""
        booted = self.shared[BOOTED]
        if not booted or not self.started(item):
            return None
        return max(item.dispatched_at, booted)

    def started(self, item: InFlight) -> bool:
        """Whether the child has started this job (it starts jobs in dispatch order)."""
        return item.seq <= self.started_seq

    def pop(self, job_id: str) -> InFlight | None:
        item = self.concurrent.pop(job_id, None)
        if item is not None:
            kind = item.job.kind
            self.kind_counts[kind] -= 1
            item.done = True
            self._spare(item)
            return item
        for item in self.jobs:
            if item.id == job_id:
                self.jobs.remove(item)
                item.done = True
                self._spare(item)
                return item
        return None

    def _spare(self, item: InFlight) -> None:
        spare = self.kill_reason in ("timeout", "cancel", "lost") and self.kill_at is not None
        if item is self.kill_item and spare:
            # It finished before the kill was due: spare the child (and its other jobs).
            self.kill_reason = self.kill_at = self.kill_item = None

    def kill(
        self, reason: KillReason, now: float, delay: float = 0.0, item: InFlight | None = None
    ) -> None:
        """Schedule the child's end: SIGTERM after `delay`, SIGKILL if it lingers. `item` is the
        job the kill is for, when it is for one job only (a timeout or a cancel)."""
        if self.kill_reason is None or delay == 0:
            self.kill_reason = reason
            self.kill_at = now + delay
            self.kill_item = item

    def fence(self) -> bool:
        """SIGKILL the child now: its job's lease may have passed to another worker, so there
        is no grace to give. Called from the fence watchdog's thread; True if it killed."""
        with self._process_lock:
            if self.process is None or self.fenced:
                return False
            self.fenced = True
            self.kill_reason = "lost"
            self.kill_at = self.sigkill_at = None
            self.process.kill()
            return True

    def enforce(self, now: float) -> None:
        """Deliver a scheduled SIGTERM / SIGKILL when due."""
        if self.process is None or not self.process.is_alive():
            return
        if self.kill_at is not None and now >= self.kill_at:
            self.process.terminate()
            self.kill_at = None
            self.sigkill_at = now + KILL_WAIT_S
        elif self.sigkill_at is not None and now >= self.sigkill_at:
            self.process.kill()
            self.sigkill_at = None

    def reap(self) -> list[InFlight]:
        """After the process died: forget it and return the jobs it held (`started_seq` still
        tells which of them it had started)."""
        with self._process_lock:
            if self.process is not None:
                self.process.join(timeout=1)
                self.process.close()
            self.process = None
        if self.conn is not None:
            self.conn.close()
        self.conn = None
        self.crashes.append(time.monotonic())
        held = [*self.jobs, *self.concurrent.values()]
        self.jobs.clear()
        self.concurrent.clear()
        self.kind_counts.clear()
        self.outbox = []
        return held

    def restart_delay(self) -> float:
        """Back off when a child keeps dying: 0 s normally, up to 5 s in a crash loop."""
        recent = [t for t in self.crashes if time.monotonic() - t < 10]
        return 0.0 if len(recent) < 3 else min(5.0, 0.5 * len(recent))
