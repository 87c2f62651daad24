"""The Python builder: the same kind of document as pipeline.json, written in code."""

from __future__ import annotations

from conveyor.workflows import Flow, ref


def count_and_double(to: int = 5) -> Flow:
    """Count to `to`, then count to the sum of the first count, only if that sum is even."""
    flow = Flow("count-and-double", tags=["docs"])
    first = flow.step("first", "demo.count", {"to": to, "delay": 0})
    flow.step(
        "second",
        "demo.count",
        {"to": ref(first, "sum"), "delay": 0},
        when={"ref": "steps.first.result.sum", "op": "in", "value": [6, 10, 28]},
        max_attempts=1,
    )
    flow.step("cleanup", "noop", depends_on=["second"], on_failure="continue")
    return flow
