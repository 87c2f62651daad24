"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import ServiceDep

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The store answers")
async def readyz(service: ServiceDep) -> dict[str, str]:
    await run_in_threadpool(service.store.ping)
    return {"status": "ready"}
