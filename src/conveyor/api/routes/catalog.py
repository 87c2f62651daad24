"""/v1/kinds, /v1/queues, /v1/workers: what can run, what waits, who works."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.api.schemas import problems
from conveyor.models import KindInfo, QueueStats, WorkerInfo

router = APIRouter(prefix="/v1", tags=["catalog"])

Reader = Annotated[Principal, Depends(require_scope("read"))]


@router.get("/kinds", summary="Registered kinds", responses=problems(401, 403))
async def list_kinds(service: ServiceDep, principal: Reader) -> list[KindInfo]:
    """Every kind workers have registered, with input/output JSON Schemas and examples."""
    found = await run_in_threadpool(service.kinds, True)
    return list(found.values())


@router.get("/kinds/{name}", summary="One kind", responses=problems(401, 403, 404))
async def get_kind(name: str, service: ServiceDep, principal: Reader) -> KindInfo:
    return await run_in_threadpool(service.kind, name)


@router.get("/queues", summary="Queue depths and ages", responses=problems(401, 403))
async def list_queues(service: ServiceDep, principal: Reader) -> list[QueueStats]:
    """Per queue: jobs by state, age of the oldest waiting job, jobs finished last minute."""
    return await run_in_threadpool(service.queues)


@router.get("/workers", summary="Live worker processes", responses=problems(401, 403))
async def list_workers(service: ServiceDep, principal: Reader) -> list[WorkerInfo]:
    """Host, pid, queues, running jobs and last heartbeat of each worker supervisor."""
    return await run_in_threadpool(service.store.workers)
