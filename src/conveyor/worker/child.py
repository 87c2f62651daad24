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
import queue
import shutil
import signal
import tempfile
import threading
import traceback
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from conveyor import errors
from conveyor.kinds.registry import KindSpec, Registry, import_kinds
from conveyor.storage import BlobStorage, open_storage
from conveyor.worker.context import Context, JobCancelled, PermanentError

log = logging.getLogger("conveyor.worker")


class Child:
    def __init__(self, conn: Connection, registry: Registry, storage: BlobStorage) -> None:
        self.conn = conn
        self.registry = registry
        self.storage = storage
        self.inbox: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        self.cancelled: set[str] = set()
        self.stopping = False
        self.send_lock = threading.Lock()
        self.loop = asyncio.new_event_loop()

    def send(self, message: dict[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":"), default=str).encode()
        with self.send_lock:
            self.conn.send_bytes(data)

    def read_pipe(self) -> None:
        """Reader thread: hand runs to the main thread, note cancels at once."""
        try:
            while True:
                message = json.loads(self.conn.recv_bytes())
                op = message["op"]
                if op == "run_many":
                    for job in message["jobs"]:
                        self.inbox.put(job)
                elif op == "cancel":
                    self.cancelled.add(message["id"])
                elif op == "stop":
                    self.stopping = True
                    self.inbox.put(None)
        except (EOFError, OSError):
            self.stopping = True  # the supervisor is gone: stop after this job
            self.inbox.put(None)

    def serve(self) -> None:
        threading.Thread(target=self.read_pipe, daemon=True, name="pipe-reader").start()
        while True:
            message = self.inbox.get()
            if message is None or self.stopping:
                break
            self.send(self.run(message))
        # Anything still waiting was never started: hand it back.
        while not self.inbox.empty():
            message = self.inbox.get()
            if message is not None:
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
                is_cancelled=lambda: job_id in self.cancelled,
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
