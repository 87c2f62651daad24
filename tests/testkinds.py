"""Kinds used by the worker integration tests (imported by worker subprocesses).

They coordinate with the test through files in a directory named in their input, so tests can
wait for "started" and decide when a job may finish, without sleeping.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from pydantic import BaseModel

import conveyor
from conveyor import Context


class BlockIn(BaseModel):
    dir: str
    name: str = "job"


def _mark(directory: Path, name: str, ctx: Context) -> None:
    marker = directory / f"{name}.{ctx.attempt}.started"
    # Written whole or not at all: the test reads it as soon as it exists.
    partial = marker.with_suffix(".partial")
    partial.write_text(json.dumps({"pid": os.getpid(), "job": ctx.job_id, "attempt": ctx.attempt}))
    partial.replace(marker)


@conveyor.task("test.block", input=BlockIn, max_attempts=3, retry_backoff=0)
def block(inp: BlockIn, ctx: Context) -> dict[str, int]:
    """Mark started, then wait until the test creates `<dir>/release`."""
    directory = Path(inp.dir)
    _mark(directory, inp.name, ctx)
    deadline = time.monotonic() + 60
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("test never released the job")
        time.sleep(0.01)
    return {"attempt": ctx.attempt}


@conveyor.task("test.hang", input=BlockIn, max_attempts=1, retry_backoff=0)
def hang(inp: BlockIn, ctx: Context) -> None:
    """Mark started, then ignore everything (no progress calls) until killed."""
    _mark(Path(inp.dir), inp.name, ctx)
    while True:
        time.sleep(0.05)


class LedgerIn(BaseModel):
    ledger: str
    ms: float = 2.0


@conveyor.task("test.ledger", input=LedgerIn, max_attempts=10, retry_backoff=0)
def ledger(inp: LedgerIn, ctx: Context) -> dict[str, int]:
    """Append fsynced start and end records to a ledger (reliability-plan §2.3)."""
    _append(inp.ledger, {"ev": "start", "job": ctx.job_id, "attempt": ctx.attempt,
                         "pid": os.getpid(), "t": time.time()})  # fmt: skip
    time.sleep(inp.ms / 1000)
    _append(inp.ledger, {"ev": "end", "job": ctx.job_id, "attempt": ctx.attempt,
                         "pid": os.getpid(), "t": time.time()})  # fmt: skip
    return {"attempt": ctx.attempt}


def _append(path: str, record: dict[str, object]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
