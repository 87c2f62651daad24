"""A workflow's transitions as Server-Sent Events, for the API and the dashboard.

A workflow's state is derived from its steps, so the stream looks at the steps every
`interval` seconds and sends what changed: a `workflow` message (state, progress) when the
state or progress moves, a `step` message per step whose state moved. The first messages are a
full snapshot, so a client that reconnects is up to date at once; the stream ends after the
workflow's final state.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.concurrency import run_in_threadpool

from conveyor.workflows.service import Workflows
from conveyor.workflows.status import FINAL_WORKFLOW_STATES
from conveyor.workflows.views import Workflow

KEEPALIVE_S = 15.0


def message(seq: int, event: str, data: dict[str, Any]) -> bytes:
    return f"id: {seq}\nevent: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


def changes(before: Workflow | None, after: Workflow) -> list[tuple[str, dict[str, Any]]]:
    """The messages that take a watcher from `before` (None: nothing seen) to `after`."""
    out: list[tuple[str, dict[str, Any]]] = []
    seen = {s.name: s for s in before.steps} if before else {}
    for step in after.steps:
        old = seen.get(step.name)
        if old is None or (old.state, old.attempt) != (step.state, step.attempt):
            out.append(("step", {
                "workflow_id": after.id, "step": step.name, "job_id": step.job_id,
                "state": step.state, "attempt": step.attempt,
                "error": step.error.model_dump() if step.error else None,
            }))  # fmt: skip
    if before is None or (before.state, before.progress) != (after.state, after.progress):
        out.append(("workflow", {
            "workflow_id": after.id, "state": after.state,
            "progress": after.progress.model_dump(),
        }))  # fmt: skip
    return out


async def follow(service: Workflows, first: Workflow, interval: float) -> AsyncIterator[bytes]:
    """SSE bytes from a snapshot of `first` until the workflow ends."""
    seq, current, quiet = 0, None, 0.0
    view = first
    while True:
        for event, data in changes(current, view):
            seq += 1
            yield message(seq, event, data)
            quiet = 0.0
        current = view
        if view.state in FINAL_WORKFLOW_STATES:
            return
        await asyncio.sleep(interval)
        quiet += interval
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield b": keepalive\n\n"
        view = await run_in_threadpool(service.get, view.id, with_document=False)
