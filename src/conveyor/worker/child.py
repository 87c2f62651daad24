"""A worker child process: runs one job at a time for its supervisor.

It talks to the supervisor only, over a pipe of JSON messages, and never to the store: the
supervisor holds the leases, so a child that dies or hangs cannot settle a job twice.

    supervisor → child: run_many {jobs: [{id, seq, kind, input, attempt}]} · cancel {id, seq} · stop
    child → supervisor: progress {id, current, total, message} · log {id, line}
                        done {jobs: [{id, outcome, result | error, retry, took}]}

Before each job it writes the job's `seq` and start time into memory shared with the
supervisor (see slot.py). Outcomes of very short jobs are sent in batches: one write per few
milliseconds instead of one per job, which is most of the cost of a no-op job.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from ctypes import Array, c_double
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from conveyor import errors
from conveyor.kinds.registry import KindSpec, Registry, import_kinds
from conveyor.storage import BlobStorage, open_storage
from conveyor.telemetry import logs, tracing
from conveyor.telemetry.worker import wrap_run
from conveyor.worker.context import Context, JobCancelled, PermanentError
from conveyor.worker.continuation import resume_entry, wait_outcome

log = logging.getLogger("conveyor.worker")
CANCEL_POLL_S = 0.02
SHORT_JOB_S = 0.005  # jobs shorter than this are pipelined to children and reported in batches
SEQ, SINCE = 0, 1  # shared with the supervisor: [seq of the job last started, its start time]
DONE_BATCH = 16  # outcomes held back at most...
DONE_HOLD_S = SHORT_JOB_S  # ...and for at most this long (a thread sends them if a job runs on)


class Child:
    def __init__(
        self,
        conn: Connection,
        registry: Registry,
        storage: BlobStorage,
        shared: Array[c_double],
    ) -> None:
        self.conn = conn
        self.registry = registry
        self.storage = storage
        self.shared = shared
        self.pending: deque[dict[str, Any]] = deque()
        self.unsent: list[dict[str, Any]] = []  # outcomes not yet reported
        self.unsent_since = 0.0
        self.runtime: dict[str, float] = {}  # kind -> EWMA seconds
        # (job id, dispatch seq): a cancel is for one dispatch of a job, not for its id, or a
        # job retried (or a workflow rerun) after a cancel would be skipped by this child again.
        self.cancelled: set[tuple[str, int]] = set()
        self.stopping = False
        self.send_lock = threading.Lock()  # the pipe and `unsent`
        self.held = threading.Condition(self.send_lock)  # wakes the reporter thread
        self.read_lock = threading.Lock()
        self.last_poll = 0.0
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.gettempdir()

    def send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message, default=str)
        with self.send_lock:
            self.conn.send_bytes(data)

    def receive(self, block: bool) -> None:
        """Read what the supervisor sent: jobs to run, cancels, stop. No reader thread: the
        main thread reads between jobs, and handlers' `ctx` calls read while a job runs."""
        with self.read_lock:
            try:
                if block or self.conn.poll(0):
                    self.handle(orjson.loads(self.conn.recv_bytes()))
                while self.conn.poll(0):
                    self.handle(orjson.loads(self.conn.recv_bytes()))
            except (EOFError, OSError):
                self.stopping = True  # the supervisor is gone: stop after this job

    def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "run_many":
            self.pending.extend(message["jobs"])
        elif op == "cancel":
            self.cancelled.add((message["id"], message["seq"]))
        elif op == "stop":
            self.stopping = True

    def is_cancelled(self, key: tuple[str, int]) -> bool:
        now = time.monotonic()
        if now - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = now
            self.receive(block=False)
        return key in self.cancelled

    def serve(self) -> None:
        threading.Thread(target=self._report_late, daemon=True, name="reporter").start()
        while not self.stopping:
            if not self.pending:
                self.report()
                self.receive(block=True)
                continue
            self.receive(block=False)  # a cancel or stop may have arrived behind the job
            if self.stopping:
                break
            message = self.pending.popleft()
            if self.unsent and not self.is_short(message["kind"]):
                self.report()  # don't hold outcomes back behind a job that may take long
            self.shared[SINCE] = started = time.monotonic()
            self.shared[SEQ] = message["seq"]
            outcome = self.run(message)
            now = time.monotonic()
            outcome["took"] = took = now - started
            kind = message["kind"]
            self.runtime[kind] = 0.8 * self.runtime.get(kind, took) + 0.2 * took
            self.hold(outcome, now)
        # Anything still waiting was never started: hand it back.
        for message in self.pending:
            self.hold({"id": message["id"], "outcome": "released"}, time.monotonic())
        self.report()

    def is_short(self, kind: str) -> bool:
        return self.runtime.get(kind, SHORT_JOB_S) < SHORT_JOB_S

    def hold(self, outcome: dict[str, Any], now: float) -> None:
        """Keep a finished job's outcome to send with the next ones; send them all once there
        are DONE_BATCH or the oldest has waited DONE_HOLD_S."""
        with self.held:
            if not self.unsent:
                self.unsent_since = now
                self.held.notify()
            self.unsent.append(outcome)
            if len(self.unsent) >= DONE_BATCH or now - self.unsent_since >= DONE_HOLD_S:
                self._send_unsent()

    def report(self) -> None:
        """Send the outcomes held back, in one message."""
        with self.send_lock:
            self._send_unsent()

    def _send_unsent(self) -> None:  # with send_lock held
        if self.unsent:
            self.conn.send_bytes(orjson.dumps({"op": "done", "jobs": self.unsent}))
            self.unsent = []

    def _report_late(self) -> None:
        """Reporter thread: outcomes held back behind a job that turned out long (a kind that is
        usually short) are sent DONE_HOLD_S after the first of them, not when that job ends."""
        with self.held:
            while True:
                if not self.unsent:
                    self.held.wait()
                    continue
                due = self.unsent_since + DONE_HOLD_S - time.monotonic()
                if due > 0:
                    self.held.wait(due)
                    continue
                try:
                    self._send_unsent()
                except OSError:
                    return  # the supervisor is gone; the main thread notices too

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        job_id = message["id"]
        key = (job_id, message["seq"])
        if key in self.cancelled:
            self.cancelled.discard(key)
            return {"id": job_id, "outcome": "cancelled"}
        ctx: Context | None = None
        try:
            spec = self.registry.get(message["kind"])
            ctx = Context(
                job_id=job_id,
                kind=spec.name,
                attempt=message["attempt"],
                storage=self.storage,
                workdir=Path(self.tmp, f"conveyor-{os.getpid()}-{job_id}"),
                send=self.send,
                is_cancelled=lambda: self.is_cancelled(key),
            )
            value = self.call(spec, message, ctx)
            waiting = wait_outcome(job_id, value, ctx.spawns)
            if waiting is not None:
                ctx.flush()
                return waiting
            try:
                result = _to_json(value, spec.output_model)
            except (ValidationError, TypeError, ValueError) as exc:
                raise OutputError() from exc
            ctx.flush()
            outputs = ctx.save_outputs()
            return {"id": job_id, "outcome": "succeeded", "result": result, "files": outputs}
        except JobCancelled:
            return {"id": job_id, "outcome": "cancelled"}
        except InputError as exc:
            return _failure(job_id, exc.__cause__ or exc, "invalid_input", retry=False)
        except OutputError as exc:
            return _failure(job_id, exc.__cause__ or exc, "invalid_output", retry=False)
        except errors.KindNotFoundError as exc:
            return _failure(job_id, exc, "unknown_kind", retry=False)
        except PermanentError as exc:
            return _failure(job_id, exc, "error", retry=False)
        except Exception as exc:
            if key in self.cancelled:
                return {"id": job_id, "outcome": "cancelled"}
            return _failure(job_id, exc, "error", retry=True)
        finally:
            self.cancelled.discard(key)
            if ctx is not None:
                ctx.remove_workdir()

    def call(self, spec: KindSpec, message: dict[str, Any], ctx: Context) -> Any:
        """What the kind's handler returns for the job, or its continuation's for a job that
        resumes after its children."""
        raw_input = message["input"]
        try:
            arg = (
                raw_input
                if spec.input_model is None
                else spec.input_model.model_validate(raw_input)
            )
        except ValidationError as exc:
            raise InputError() from exc
        value = (resume_entry(spec, message) or spec.handler)(arg, ctx)
        if inspect.isawaitable(value):
            value = self.loop.run_until_complete(value)
        return value


class InputError(Exception):
    pass


class OutputError(Exception):
    pass


def _to_json(value: Any, model: type[BaseModel] | None) -> Any:
    if model is not None:
        if not isinstance(value, model):
            value = model.model_validate(value)
        return value.model_dump(mode="json")
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    json.dumps(value)  # raises TypeError for values JSON cannot carry
    return value


def _failure(job_id: str, exc: BaseException, reason: str, *, retry: bool) -> dict[str, Any]:
    return {
        "id": job_id,
        "outcome": "failed",
        "retry": retry,
        "error": {
            "type": type(exc).__name__,
            "message": str(exc)[:10_000],
            "traceback": "".join(traceback.format_exception(exc))[-20_000:],
            "reason": reason,
        },
    }


def child_main(
    conn: Connection, imports: list[str], storage_url: str, shared: Array[c_double]
) -> None:
    """Entry point of a child process (spawned by the supervisor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which drains
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    logs.setup_child()
    tracing.configure()
    child = Child(conn, import_kinds(imports), open_storage(storage_url), shared)
    child.run = wrap_run(child.run)  # type: ignore[method-assign,assignment]  # as is unless traced/JSON
    try:
        child.serve()
    finally:
        conn.close()
        tracing.flush()  # os._exit skips the exporters' exit hooks
        os._exit(0)
