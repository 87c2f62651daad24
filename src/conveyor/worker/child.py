"""A worker child process: runs jobs for its supervisor, one at a time or many at once.

It talks to the supervisor only, over a pipe of JSON messages, and never to the store: the
supervisor holds the leases, so a child that dies or hangs cannot settle a job twice.

    supervisor → child: run_many {jobs: [{id, seq, kind, input, attempt, timeout}]}
                        cancel {id, seq} · stop
    child → supervisor: progress {id, current, total, message} · log {id, line}
                        updates {progress: [progress...], logs: [log...]}
                        done {jobs: [{id, outcome, result | error, retry, took}]}

A kind runs one of three ways (`KindSpec.runs`). A `process` kind's job runs alone on the main
thread, the child's jobs one after another: a CPU-bound handler gets the process to itself.
`async` and `thread` kinds run concurrently: the child enters its event loop (uvloop when
installed), starts every such job it is sent as a task at once (a `thread` kind's handler on
that kind's thread pool), and leaves the loop only when a `process` job is next. The supervisor
never sends one child both at the same time, nor more concurrent jobs than it has room for, so
a job the child is sent starts as soon as it arrives.

Before starting a job the child writes its `seq` (and start time) into memory shared with the
supervisor (see slot.py). Jobs start in `seq` order, so that one number tells, after a crash,
exactly which jobs had started. Outcomes of very short jobs are sent in batches: one write per
few milliseconds instead of one per job, which is most of the cost of a no-op job; concurrent
jobs' outcomes go once per turn of the event loop, and their progress and log lines once per
UPDATES_S, before any outcome of the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from concurrent.futures import ThreadPoolExecutor
from ctypes import Array, c_double
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from conveyor import errors
from conveyor.kinds.registry import KindSpec, Registry, RunMode, import_kinds
from conveyor.storage import BlobStorage, open_storage
from conveyor.telemetry import logs, tracing
from conveyor.telemetry.worker import wrap_run
from conveyor.worker.context import Context, JobCancelled, PermanentError
from conveyor.worker.continuation import resume_entry, wait_outcome

log = logging.getLogger("conveyor.worker")
CANCEL_POLL_S = 0.02
SHORT_JOB_S = 0.005  # jobs shorter than this are pipelined to children and reported in batches
# Shared with the supervisor: [seq of the job last started, its start time, when the child was
# ready to start jobs] (monotonic clock, the same in every process).
SEQ, SINCE, BOOTED = 0, 1, 2
DONE_BATCH = 16  # outcomes held back at most...
DONE_HOLD_S = SHORT_JOB_S  # ...and for at most this long (a thread sends them if a job runs on)
Key = tuple[str, int]  # a job's id and dispatch seq: one dispatch of it (a retry is another)
UPDATES_S = 0.25  # concurrent jobs' progress and log lines are sent this often, in one message


def thread_pool_size(spec: KindSpec) -> int:
    """Threads per child for a `thread` kind: also how many of its jobs a child runs at once."""
    return spec.threads or 1


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # optional: not on Windows
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


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
        self.cancelled: set[Key] = set()
        self.stopping = False
        self.orphaned = False
        self.send_lock = threading.Lock()  # the pipe and `unsent`
        self.held = threading.Condition(self.send_lock)  # wakes the reporter thread
        self.read_lock = threading.Lock()
        self.last_poll = 0.0
        self.loop = new_event_loop()
        self.tmp = tempfile.gettempdir()
        self.modes: dict[str, RunMode] = {}
        # Concurrent mode (the event loop): running jobs, their outcomes and buffered updates.
        self.concurrent = False
        self.tasks: dict[Key, asyncio.Task[None]] = {}
        self.async_jobs: set[Key] = set()  # tasks that await an async handler (cancellable)
        self.timed_out: dict[Key, float] = {}  # job -> the timeout it overran
        self.finished: list[dict[str, Any]] = []
        self.progress: dict[str, dict[str, Any]] = {}  # job -> its latest progress message
        self.logs: list[dict[str, Any]] = []
        self.updates_lock = threading.Lock()  # thread kinds' handlers report from pool threads
        self.pools: dict[str, ThreadPoolExecutor] = {}
        self.wake: asyncio.Event | None = None
        self.report_due = False

    def send(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message, default=str)
        with self.send_lock:
            self.conn.send_bytes(data)

    def receive(self, block: bool) -> None:
        """Read what the supervisor sent: jobs to run, cancels, stop. No reader thread: the
        main thread reads between jobs, and handlers' `ctx` calls read while a job runs (in
        concurrent mode the event loop reads, as soon as something arrives)."""
        with self.read_lock:
            try:
                if block or self.conn.poll(0):
                    self.handle(orjson.loads(self.conn.recv_bytes()))
                while self.conn.poll(0):
                    self.handle(orjson.loads(self.conn.recv_bytes()))
            except (EOFError, OSError):
                self.stopping = self.orphaned = True  # the supervisor is gone

    def handle(self, message: dict[str, Any]) -> None:
        op = message["op"]
        if op == "run_many":
            self.pending.extend(message["jobs"])
        elif op == "cancel":
            key = (message["id"], message["seq"])
            self.cancelled.add(key)
            self.interrupt(key)
        elif op == "stop":
            self.stopping = True

    def is_cancelled(self, key: Key) -> bool:
        if self.concurrent:  # the event loop reads the pipe; pool threads only look
            return key in self.cancelled or key in self.timed_out
        now = time.monotonic()
        if now - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = now
            self.receive(block=False)
        return key in self.cancelled

    def mode(self, kind: str) -> RunMode:
        mode = self.modes.get(kind)
        if mode is None:
            mode = self.registry.get(kind).runs if kind in self.registry else "process"
            self.modes[kind] = mode
        return mode

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
            message = self.pending[0]
            if self.mode(message["kind"]) != "process":
                self.report()
                self.loop.run_until_complete(self.serve_concurrent())
                continue
            self.pending.popleft()
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

    # -- one job at a time ------------------------------------------------------------------------

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        job_id = message["id"]
        key = (job_id, message["seq"])
        if key in self.cancelled:
            self.cancelled.discard(key)
            return {"id": job_id, "outcome": "cancelled"}
        ctx: Context | None = None
        try:
            spec = self.registry.get(message["kind"])
            ctx = self.context(message, spec, self.send)
            arg = _parse(spec, message["input"])
            value = (resume_entry(spec, message) or spec.handler)(arg, ctx)
            if inspect.isawaitable(value):  # an async kind outside the concurrent mode (tests)
                value = self.loop.run_until_complete(value)
            waiting = wait_outcome(job_id, value, ctx.spawns)
            if waiting is not None:
                ctx.flush()
                return waiting
            result = _to_result(value, spec)
            ctx.flush()
            outputs = ctx.save_outputs()
            return {"id": job_id, "outcome": "succeeded", "result": result, "files": outputs}
        except Exception as exc:
            return self.outcome_of(key, exc)
        finally:
            self.cancelled.discard(key)
            if ctx is not None:
                ctx.remove_workdir()

    def context(self, message: dict[str, Any], spec: KindSpec, send: Any) -> Context:
        job_id = message["id"]
        key = (job_id, message["seq"])
        return Context(
            job_id=job_id,
            kind=spec.name,
            attempt=message["attempt"],
            storage=self.storage,
            workdir=Path(self.tmp, f"conveyor-{os.getpid()}-{job_id}"),
            send=send,
            is_cancelled=lambda: self.is_cancelled(key),
        )

    def outcome_of(self, key: Key, exc: BaseException) -> dict[str, Any]:
        """What a handler's exception means for its job."""
        job_id = key[0]
        if key in self.timed_out:
            return _timed_out(job_id, self.timed_out[key], exc)
        if isinstance(exc, JobCancelled | asyncio.CancelledError) and key in self.cancelled:
            return {"id": job_id, "outcome": "cancelled"}
        if isinstance(exc, InputError):
            return _failure(job_id, exc.__cause__ or exc, "invalid_input", retry=False)
        if isinstance(exc, OutputError):
            return _failure(job_id, exc.__cause__ or exc, "invalid_output", retry=False)
        if isinstance(exc, errors.KindNotFoundError):
            return _failure(job_id, exc, "unknown_kind", retry=False)
        if isinstance(exc, PermanentError):
            return _failure(job_id, exc, "error", retry=False)
        if key in self.cancelled:
            return {"id": job_id, "outcome": "cancelled"}
        return _failure(job_id, exc, "error", retry=True)

    # -- many at once: the event loop -----------------------------------------------------------

    async def serve_concurrent(self) -> None:
        """Run async and thread kinds' jobs as they arrive, until a `process` job is next (and
        every concurrent job has ended) or the supervisor says stop."""
        self.concurrent = True
        self.wake = wake = asyncio.Event()
        fd = self.conn.fileno()
        self.loop.add_reader(fd, self._readable)
        # uvloop makes the socket non-blocking, and it carries our writes too: a large message
        # would then be cut off mid-write (EAGAIN) and the pipe's framing lost.
        os.set_blocking(fd, True)
        flusher = self.loop.call_later(UPDATES_S, self._flush_updates_timer)
        try:
            while True:
                while self.pending and not self.stopping:
                    if self.mode(self.pending[0]["kind"]) == "process":
                        break
                    self._start(self.pending.popleft())
                if not self.tasks and (self.stopping or self.pending):
                    break
                wake.clear()
                await wake.wait()
        finally:
            self.loop.remove_reader(fd)
            flusher.cancel()
            self._report_concurrent()
            self.concurrent = False
            self.wake = None

    def _readable(self) -> None:
        self.receive(block=False)
        if self.orphaned:  # the supervisor is gone: nobody can settle these jobs any more
            self.loop.remove_reader(self.conn.fileno())
            for key in list(self.tasks):
                self.cancelled.add(key)
                self.interrupt(key)
        if self.wake is not None:
            self.wake.set()

    def _start(self, message: dict[str, Any]) -> None:
        # Started from here on: if the child dies now, the job ran (its attempt counts).
        self.shared[SINCE] = time.monotonic()
        self.shared[SEQ] = message["seq"]
        key = (message["id"], message["seq"])
        self.tasks[key] = self.loop.create_task(self._run_concurrent(message, key))

    def interrupt(self, key: Key) -> None:
        """Stop a concurrent job (cancelled or timed out): an async one's task is cancelled; a
        thread kind's handler sees it at its next `ctx.progress()`/`ctx.check_cancelled()`."""
        task = self.tasks.get(key)
        if task is not None and key in self.async_jobs:
            task.cancel()

    def _expire(self, key: Key, timeout: float) -> None:
        if key in self.tasks:
            self.timed_out[key] = timeout
            self.interrupt(key)

    async def _run_concurrent(self, message: dict[str, Any], key: Key) -> None:
        job_id = message["id"]
        started = time.monotonic()
        ctx: Context | None = None
        timer: asyncio.TimerHandle | None = None
        try:
            if key in self.cancelled:
                raise JobCancelled(job_id)
            spec = self.registry.get(message["kind"])
            ctx = self.context(message, spec, self.buffer_update)
            if message.get("timeout"):
                timeout = message["timeout"]
                timer = self.loop.call_later(timeout, self._expire, key, timeout)
            arg = _parse(spec, message["input"])
            entry = resume_entry(spec, message) or spec.handler
            if spec.is_async:
                self.async_jobs.add(key)
                value = entry(arg, ctx)
                if inspect.isawaitable(value):
                    value = await value
            else:
                value = await self.loop.run_in_executor(self.pool(spec), entry, arg, ctx)
            if key in self.timed_out:
                raise JobCancelled(job_id)  # it finished, but after its deadline
            outcome = wait_outcome(job_id, value, ctx.spawns) or await self._succeeded(
                job_id, spec, ctx, value
            )
        except (Exception, asyncio.CancelledError) as exc:
            outcome = self.outcome_of(key, exc)
        finally:
            if timer is not None:
                timer.cancel()
            if ctx is not None:
                ctx.remove_workdir()
            self.tasks.pop(key, None)
            self.async_jobs.discard(key)
            self.timed_out.pop(key, None)
            self.cancelled.discard(key)
        outcome["took"] = time.monotonic() - started
        self.finished.append(outcome)
        if not self.report_due:
            self.report_due = True
            self.loop.call_soon(self._report_concurrent)
        if self.wake is not None:
            self.wake.set()

    async def _succeeded(
        self, job_id: str, spec: KindSpec, ctx: Context, value: Any
    ) -> dict[str, Any]:
        result = _to_result(value, spec)
        ctx.flush()
        outputs = (
            await self.loop.run_in_executor(None, ctx.save_outputs) if ctx.wrote_outputs else []
        )
        return {"id": job_id, "outcome": "succeeded", "result": result, "files": outputs}

    def pool(self, spec: KindSpec) -> ThreadPoolExecutor:
        pool = self.pools.get(spec.name)
        if pool is None:
            size = thread_pool_size(spec)
            pool = ThreadPoolExecutor(size, thread_name_prefix=f"conveyor-{spec.name}")
            self.pools[spec.name] = pool
        return pool

    def buffer_update(self, message: dict[str, Any]) -> None:
        """A concurrent job's progress or log line: kept for the next updates message (only a
        job's latest progress is sent)."""
        with self.updates_lock:
            if message["op"] == "progress":
                self.progress[message["id"]] = message
            else:
                self.logs.append(message)

    def _flush_updates_timer(self) -> None:
        self._send_updates()
        if self.concurrent:
            self.loop.call_later(UPDATES_S, self._flush_updates_timer)

    def _send_updates(self) -> None:
        with self.updates_lock:
            if not self.progress and not self.logs:
                return
            message = {"op": "updates", "progress": list(self.progress.values()),
                       "logs": self.logs}  # fmt: skip
            self.progress, self.logs = {}, []
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the supervisor is gone
            self.send(message)

    def _report_concurrent(self) -> None:
        """Send finished concurrent jobs' outcomes, after any updates they made."""
        self.report_due = False
        self._send_updates()
        if self.finished:
            jobs, self.finished = self.finished, []
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send({"op": "done", "jobs": jobs})


class InputError(Exception):
    pass


class OutputError(Exception):
    pass


def _parse(spec: KindSpec, raw_input: Any) -> Any:
    """The handler's argument: the input model, or the raw JSON when the kind has none."""
    if spec.input_model is None:
        return raw_input
    try:
        return spec.input_model.model_validate(raw_input)
    except ValidationError as exc:
        raise InputError() from exc


def _to_result(value: Any, spec: KindSpec) -> Any:
    try:
        return _to_json(value, spec.output_model)
    except (ValidationError, TypeError, ValueError) as exc:
        raise OutputError() from exc


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


def _timed_out(job_id: str, timeout: float, exc: BaseException) -> dict[str, Any]:
    return {
        "id": job_id,
        "outcome": "failed",
        "retry": True,
        "error": {
            "type": "Timeout",
            "message": f"the job ran longer than its timeout of {timeout}s and was cancelled",
            "traceback": "".join(traceback.format_exception(exc))[-20_000:],
            "reason": "timeout",
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
    shared[BOOTED] = time.monotonic()
    try:
        child.serve()
    except BaseException:
        log.exception("worker child failed")  # os._exit below would hide it
        raise
    finally:
        conn.close()
        tracing.flush()  # os._exit skips the exporters' exit hooks
        os._exit(0)
