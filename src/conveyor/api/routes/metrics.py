"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.api.metrics import Metrics
from conveyor.api.schemas import problems

router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **problems(401, 403),
    },
)
async def metrics(
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require_scope("read"))],
) -> Response:
    """Jobs per queue and state, oldest queued age, job transitions by kind and state, job
    duration and wait histograms, HTTP request counts and latency."""
    found: Metrics = request.app.state.metrics
    text = await run_in_threadpool(found.render, service.store)
    return Response(text, media_type=CONTENT_TYPE_LATEST)
