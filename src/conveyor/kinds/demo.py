"""Demo kinds for the tour, the tests and the benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import time

from pydantic import BaseModel, Field

from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError
from conveyor.worker.continuation import Children, Continue


class Empty(BaseModel):
    pass


@task("noop", input=Empty, output=Empty, max_attempts=3, retry_backoff=0.1)
def noop(inp: Empty, ctx: Context) -> Empty:
    """Do nothing: measures the engine itself."""
    return Empty()


class SleepIn(BaseModel):
    seconds: float = Field(1.0, ge=0, le=86_400, description="How long to sleep.")


class SleepOut(BaseModel):
    slept: float


@task("demo.sleep", input=SleepIn, output=SleepOut, examples=[{"seconds": 2}])
async def sleep(inp: SleepIn, ctx: Context) -> SleepOut:
    """Sleep for a while (async: thousands at once per worker), reporting progress about ten
    times (every 0.1 to 1 s)."""
    start = time.monotonic()
    step = min(1.0, max(0.1, inp.seconds / 10))
    while (elapsed := time.monotonic() - start) < inp.seconds:
        ctx.progress(round(elapsed, 1), inp.seconds, "sleeping")
        await asyncio.sleep(min(step, inp.seconds - elapsed))
    return SleepOut(slept=round(time.monotonic() - start, 3))


class CountIn(BaseModel):
    to: int = Field(10, ge=1, le=1_000_000, description="Count up to this number.")
    delay: float = Field(0.2, ge=0, le=60, description="Seconds per step.")
    write_file: bool = Field(False, description="Also write the numbers to `numbers.txt`.")


class CountOut(BaseModel):
    total: int
    sum: int


@task("demo.count", input=CountIn, output=CountOut, examples=[{"to": 20, "delay": 0.1}])
def count(inp: CountIn, ctx: Context) -> CountOut:
    """Count to a number with progress and a log line per step; optionally write a file."""
    for i in range(1, inp.to + 1):
        time.sleep(inp.delay)
        ctx.progress(i, inp.to, f"counted {i}")
        if inp.to <= 100:
            ctx.log(f"step {i} of {inp.to}")
    if inp.write_file:
        ctx.output_file("numbers.txt").write_text("\n".join(map(str, range(1, inp.to + 1))))
    return CountOut(total=inp.to, sum=inp.to * (inp.to + 1) // 2)


class FailIn(BaseModel):
    message: str = "this job always fails"
    permanent: bool = Field(False, description="Fail without retries.")
    succeed_on_attempt: int | None = Field(None, ge=1, description="Succeed from this attempt.")


@task("demo.fail", input=FailIn, max_attempts=3, retry_backoff=0.5)
def fail(inp: FailIn, ctx: Context) -> dict[str, int]:
    """Raise an error (retried with backoff), or succeed from a given attempt on."""
    if inp.succeed_on_attempt is not None and ctx.attempt >= inp.succeed_on_attempt:
        return {"attempt": ctx.attempt}
    if inp.permanent:
        raise PermanentError(inp.message)
    raise RuntimeError(inp.message)


class CrashIn(BaseModel):
    hard: bool = Field(True, description="SIGKILL itself (else exit with status 3).")


@task("demo.crash", input=CrashIn, max_attempts=3, retry_backoff=0.0)
def crash(inp: CrashIn, ctx: Context) -> None:
    """A poison pill: kills its own worker process."""
    if inp.hard:
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(3)


class FanoutIn(BaseModel):
    n: int = Field(10, ge=0, le=1_000_000, description="How many noop children to spawn.")


class FanoutOut(BaseModel):
    children: int
    succeeded: int


@task("demo.fanout", input=FanoutIn, output=FanoutOut, examples=[{"n": 100}])
def fanout(inp: FanoutIn, ctx: Context) -> Continue:
    """Spawn `n` noop child jobs; once they have all ended, return how many succeeded."""
    for _ in range(inp.n):
        ctx.spawn("noop", {})
    return ctx.wait_for_children()


@fanout.continuation
def fanout_done(inp: FanoutIn, children: Children, ctx: Context) -> FanoutOut:
    return FanoutOut(children=len(children), succeeded=len(children.succeeded))
