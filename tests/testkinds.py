"""Kinds used by the worker integration tests (imported by worker subprocesses).

They coordinate with the test through files in a directory named in their input, so tests can
wait for "started" and decide when a job may finish, without sleeping.
"""

from __future__ import annotations

import asyncio
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


class FanIn(BaseModel):
    n: int
    rounds: int = 1
    fail: list[int] = []
    spawn_only: bool = False  # spawn but forget to wait (a mistake the job must fail on)


@conveyor.task("test.fanout", input=FanIn, max_attempts=2, retry_backoff=0)
def fanout(inp: FanIn, ctx: Context) -> conveyor.Continue | int:
    """Spawn `n` test.child jobs and resume when they have ended (`rounds` times)."""
    for i in range(inp.n):
        ctx.spawn("test.child", {"i": i, "fail": i in inp.fail}, tags=["fan"])
    if inp.spawn_only:
        return 0
    return ctx.wait_for_children({"round": 1})


@fanout.continuation
def fanout_done(inp: FanIn, children: conveyor.Children, ctx: Context) -> object:
    round_ = children.state["round"]
    if round_ < inp.rounds:
        for i in range(inp.n):
            ctx.spawn("test.child", {"i": 100 * round_ + i, "fail": False})
        return ctx.wait_for_children({"round": round_ + 1})
    return {
        "round": round_,
        "attempt": ctx.attempt,
        "succeeded": len(children.succeeded),
        "failed": [c.error.type if c.error else None for c in children.failed],
        "results": [c.result for c in children],
    }


@conveyor.task("test.child", max_attempts=1)
def child(inp: dict[str, object], ctx: Context) -> object:
    if inp.get("fail"):
        raise conveyor.PermanentError(f"child {inp['i']} fails")
    return inp["i"]


class FetchIn(BaseModel):
    url: str


@conveyor.task("test.fetch", input=FetchIn, max_attempts=1)
def fetch(inp: FetchIn, ctx: Context) -> dict[str, int]:
    """GET a URL with httpx (a handler's own outgoing call: tracing must follow it)."""
    import httpx

    return {"status": httpx.get(inp.url, timeout=30).status_code}


class SayIn(BaseModel):
    message: str


@conveyor.task("test.say", input=SayIn, max_attempts=1)
def say(inp: SayIn, ctx: Context) -> None:
    """Log a warning through Python logging from inside the handler."""
    import logging

    logging.getLogger("tests.say").warning(inp.message)


class GateIn(BaseModel):
    dir: str


@conveyor.task("test.step_gate", input=GateIn, max_attempts=1, retry_backoff=0)
def gate(inp: GateIn, ctx: Context) -> dict[str, int]:
    """Fail unless the test has created `<dir>/open` (a step that fails until fixed)."""
    if not (Path(inp.dir) / "open").exists():
        raise RuntimeError("the gate is closed")


class WaitIn(BaseModel):
    ledger: str
    release: str  # the job ends once this file exists
    ignore_cancel: bool = False  # swallow cancellation (and timeouts) and go on waiting
    steps: int = 0  # progress and log lines to report first


@conveyor.task("test.async_wait", input=WaitIn, max_attempts=5, retry_backoff=0)
async def async_wait(inp: WaitIn, ctx: Context) -> dict[str, int]:
    """Async: record the start in the ledger, report `steps`, wait for the release file."""
    _append(inp.ledger, {"ev": "start", "job": ctx.job_id, "attempt": ctx.attempt,
                         "pid": os.getpid(), "t": time.time()})  # fmt: skip
    for step in range(1, inp.steps + 1):
        ctx.log(f"step {step}")
        ctx.progress(step, inp.steps)
        await asyncio.sleep(0)
    while not os.path.exists(inp.release):
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if not inp.ignore_cancel:
                raise
    _append(inp.ledger, {"ev": "end", "job": ctx.job_id, "attempt": ctx.attempt,
                         "pid": os.getpid(), "t": time.time()})  # fmt: skip
    return {"attempt": ctx.attempt}


@conveyor.task("test.thread_wait", input=WaitIn, max_attempts=5, retry_backoff=0,
               threads=4)  # fmt: skip
def thread_wait(inp: WaitIn, ctx: Context) -> dict[str, int]:
    """Threaded: record the start, then wait for the release file, checking for cancellation
    (unless told to ignore it)."""
    _append(inp.ledger, {"ev": "start", "job": ctx.job_id, "attempt": ctx.attempt,
                         "pid": os.getpid(), "t": time.time()})  # fmt: skip
    while not os.path.exists(inp.release):
        if not inp.ignore_cancel:
            ctx.check_cancelled()
        time.sleep(0.01)
    return {"attempt": ctx.attempt}
