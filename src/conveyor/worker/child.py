"""A worker child process: runs one job at a time for its supervisor.

It talks to the supervisor only, over a pipe of JSON messages, and never to the store: the
supervisor holds the leases, so a child that dies or hangs cannot settle a job twice.

    supervisor → child: run_many {jobs: [{id, kind, input, attempt}]} · cancel {id} · stop
    child → supervisor: progress {id, current, total, message} · log {id, line}
                        done {id, outcome, result | error, retry}
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError

from conveyor import errors
from conveyor.kinds.registry import KindSpec, Registry, import_kinds
from conveyor.storage import BlobStorage, open_storage
from conveyor.worker.context import Context, JobCancelled, PermanentError

log = logging.getLogger("conveyor.worker")
CANCEL_POLL_S = 0.02


class Child:
    def __init__(self, conn: Connection, registry: Registry, storage: BlobStorage) -> None:
        self.conn = conn
        self.registry = registry
        self.storage = storage
        self.pending: deque[dict[str, Any]] = deque()
        self.cancelled: set[str] = set()
        self.stopping = False
        self.send_lock = threading.Lock()
        self.read_lock = threading.Lock()
        self.last_poll = 0.0
        self.loop = asyncio.new_event_loop()

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
            self.cancelled.add(message["id"])
        elif op == "stop":
            self.stopping = True

    def is_cancelled(self, job_id: str) -> bool:
        now = time.monotonic()
        if now - self.last_poll >= CANCEL_POLL_S:
            self.last_poll = now
            self.receive(block=False)
        return job_id in self.cancelled

    def serve(self) -> None:
        while not self.stopping:
            if not self.pending:
                self.receive(block=True)
                continue
            self.receive(block=False)  # a cancel or stop may have arrived behind the job
            if not self.stopping:
                self.send(self.run(self.pending.popleft()))
        # Anything still waiting was never started: hand it back.
        for message in self.pending:
            self.send({"op": "done", "id": message["id"], "outcome": "released"})

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        job_id = message["id"]
        if job_id in self.cancelled:
            return {"op": "done", "id": job_id, "outcome": "cancelled"}
        workdir = Path(tempfile.gettempdir()) / f"conveyor-{os.getpid()}-{job_id}"
        try:
            spec = self.registry.get(message["kind"])
            ctx = Context(
                job_id=job_id,
                kind=spec.name,
                attempt=message["attempt"],
                storage=self.storage,
                workdir=workdir,
                send=self.send,
                is_cancelled=lambda: self.is_cancelled(job_id),
            )
            result = self.call(spec, message["input"], ctx)
            ctx.flush()
            outputs = ctx.save_outputs()
            return {"op": "done", "id": job_id, "outcome": "succeeded", "result": result,
                    "files": outputs}  # fmt: skip
        except JobCancelled:
            return {"op": "done", "id": job_id, "outcome": "cancelled"}
        except InputError as exc:
            return _failure(job_id, exc.__cause__ or exc, "invalid_input", retry=False)
        except OutputError as exc:
            return _failure(job_id, exc.__cause__ or exc, "invalid_output", retry=False)
        except errors.KindNotFoundError as exc:
            return _failure(job_id, exc, "unknown_kind", retry=False)
        except PermanentError as exc:
            return _failure(job_id, exc, "error", retry=False)
        except Exception as exc:
            if job_id in self.cancelled:
                return {"op": "done", "id": job_id, "outcome": "cancelled"}
            return _failure(job_id, exc, "error", retry=True)
        finally:
            if workdir.exists():
                shutil.rmtree(workdir, ignore_errors=True)

    def call(self, spec: KindSpec, raw_input: Any, ctx: Context) -> Any:
        try:
            arg = (
                raw_input
                if spec.input_model is None
                else spec.input_model.model_validate(raw_input)
            )
        except ValidationError as exc:
            raise InputError() from exc
        if spec.is_async:
            value = self.loop.run_until_complete(spec.handler(arg, ctx))
        else:
            value = spec.handler(arg, ctx)
        try:
            return _to_json(value, spec.output_model)
        except (ValidationError, TypeError, ValueError) as exc:
            raise OutputError() from exc


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
        "op": "done",
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


def child_main(conn: Connection, imports: list[str], storage_url: str) -> None:
    """Entry point of a child process (spawned by the supervisor)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the supervisor, which drains
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    logging.basicConfig(level=logging.WARNING)
    child = Child(conn, import_kinds(imports), open_storage(storage_url))
    try:
        child.serve()
    finally:
        conn.close()
        os._exit(0)
