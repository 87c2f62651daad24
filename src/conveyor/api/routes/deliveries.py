"""/v1/jobs/{id}/deliveries: the webhook delivery log of a job (attempts, status codes)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.webhooks.dispatcher import deliveries_of

router = APIRouter(prefix="/v1/jobs", tags=["webhooks"])

Reader = Annotated[Principal, Depends(require_scope("read"))]


@router.get("/{job_id}/deliveries", summary="A job's webhook deliveries and their attempts")
async def list_deliveries(job_id: str, service: ServiceDep, principal: Reader) -> dict[str, Any]:
    """Every webhook message of the job: `webhook-id`, event, URL, status (`pending`,
    `delivered`, `failed`, `disabled`) and each attempt's time, status code or error.
    Bodies are left out; they are what the receiver got."""
    await run_in_threadpool(service.get, job_id)  # 404 for an unknown job
    found = await run_in_threadpool(deliveries_of, service.store, job_id)
    return {"deliveries": [{k: v for k, v in d.items() if k != "body"} for d in found]}
