"""/v1/limits (concurrency and rate limits) and /v1/queues/{queue}/pause|resume|purge."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.routes.schedules import ControlsDep
from conveyor.api.schemas import Body as BodyModel
from conveyor.api.schemas import build, problems
from conveyor.limits import LimitView
from conveyor.models import LIMIT_TARGET, Limit, LimitStrategy, QueueName, QueueStats

router = APIRouter(prefix="/v1", tags=["flow control"])

Reader = Annotated[Principal, Depends(require_scope("read"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
Target = Annotated[
    str,
    Path(
        pattern=LIMIT_TARGET,
        description="`queue:<name>`, `kind:<name>`, or `key:<kind>` (per concurrency key).",
        examples=["kind:send-email"],
    ),
]
Queue = Annotated[QueueName, Path(description="The queue.")]


class LimitBody(BodyModel):
    """A limit's settings: running at once, starts per period, or both."""

    max_running: int | None = Field(None, ge=1, le=1_000_000)
    rate: int | None = Field(None, ge=1, le=1_000_000)
    per_s: float = Field(1.0, gt=0, le=7 * 86_400)
    strategy: LimitStrategy = "queue"


class Purged(BodyModel):
    queue: str
    purged: int = Field(description="Waiting jobs cancelled (reason `purged`).")


LIMIT_EXAMPLES: dict[str, Any] = {
    "concurrency": {"summary": "At most 2 running per key", "value": {"max_running": 2}},
    "rate": {"summary": "100 starts a minute", "value": {"rate": 100, "per_s": 60}},
}


@router.get(
    "/limits", summary="Every limit, with what waits behind it", responses=problems(401, 403)
)
async def list_limits(ops: ControlsDep, principal: Reader) -> list[LimitView]:
    """Each limit, whether the code or an admin set it, and its jobs running and waiting (for
    per-key limits, the busiest keys)."""
    return await run_in_threadpool(ops.limits)


@router.get("/limits/{target}", summary="One limit", responses=problems(401, 403, 404, 422))
async def get_limit(target: Target, ops: ControlsDep, principal: Reader) -> LimitView:
    return await run_in_threadpool(ops.limit, target)


@router.put("/limits/{target}", summary="Set a limit", responses=problems(401, 403, 422))
async def put_limit(
    target: Target,
    ops: ControlsDep,
    principal: Admin,
    body: Annotated[LimitBody, Body(openapi_examples=LIMIT_EXAMPLES)],
) -> LimitView:
    """Create or replace the limit on `target`. The next claim on every host obeys it, no
    restart; it wins over a limit the kind declares in code until deleted."""
    limit = build(Limit, "body", target=target, **body.model_dump())
    return await run_in_threadpool(ops.set_limit, limit, principal.name)


@router.delete(
    "/limits/{target}", status_code=204, summary="Remove a limit", responses=problems(401, 403, 404)
)
async def delete_limit(target: Target, ops: ControlsDep, principal: Admin) -> Response:
    """A limit declared in code comes back when a worker declaring it starts."""
    await run_in_threadpool(ops.delete_limit, target)
    return Response(status_code=204)


@router.post("/queues/{queue}/pause", summary="Pause a queue", responses=problems(401, 403, 422))
async def pause_queue(queue: Queue, ops: ControlsDep, principal: Admin) -> QueueStats:
    """Workers claim nothing from it until resumed; submits still land; running jobs go on."""
    return await run_in_threadpool(ops.pause_queue, queue)


@router.post("/queues/{queue}/resume", summary="Resume a queue", responses=problems(401, 403, 422))
async def resume_queue(queue: Queue, ops: ControlsDep, principal: Admin) -> QueueStats:
    return await run_in_threadpool(ops.resume_queue, queue)


@router.post("/queues/{queue}/purge", summary="Purge a queue", responses=problems(401, 403, 422))
async def purge_queue(queue: Queue, ops: ControlsDep, principal: Admin) -> Purged:
    """Cancel every waiting (queued or scheduled) job of the queue, reason `purged`; running
    jobs are left alone."""
    return Purged(queue=queue, purged=await run_in_threadpool(ops.purge_queue, queue))
