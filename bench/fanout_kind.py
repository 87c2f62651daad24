"""The kind bench/workflows.py fans out with (like demo.fanout): `n` noop children, then how
many succeeded. Imported by the bench's worker (its PYTHONPATH holds bench/)."""

from __future__ import annotations

from pydantic import BaseModel, Field

import conveyor


class FanoutIn(BaseModel):
    n: int = Field(ge=0, le=1_000_000)


@conveyor.task("bench.fanout", input=FanoutIn, max_attempts=1)
def fanout(inp: FanoutIn, ctx: conveyor.Context) -> conveyor.Continue:
    for _ in range(inp.n):
        ctx.spawn("noop")
    return ctx.wait_for_children()


@fanout.continuation
def fanout_done(
    inp: FanoutIn, children: conveyor.Children, ctx: conveyor.Context
) -> dict[str, int]:
    return {"children": len(children), "succeeded": len(children.succeeded)}
