"""GET /v1/jobs/{id}/events: a job's event log as Server-Sent Events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api import sse
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep, per_app
from conveyor.api.schemas import problems

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def hub(request: Request) -> sse.FeedHub:
    """The app's one feed follower, made on first use."""
    return per_app(request.app, "feed_hub", lambda service: sse.FeedHub(service.store))


@router.get(
    "/{job_id}/events",
    summary="Follow a job's events (SSE)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: one message per event, `id` = event seq; the"
            " stream ends after the job's final state.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(401, 403, 404),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    service: ServiceDep,
    principal: Annotated[Principal, Depends(require_scope("read"))],
    after: Annotated[
        int, Query(ge=0, le=sse.MAX_SEQ, description="Only events after this seq.")
    ] = 0,
    follow: Annotated[bool, Query(description="false: send the events so far and close.")] = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    """State changes, progress and log lines as they happen, from the start (or after
    `Last-Event-ID` / `?after=` when resuming); the stream closes when the job ends."""
    job = await run_in_threadpool(service.get, job_id)
    start = max(after, sse.parse_last_event_id(last_event_id))
    return StreamingResponse(
        sse.stream(hub(request), job_id, start, job.state.is_final or not follow),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
