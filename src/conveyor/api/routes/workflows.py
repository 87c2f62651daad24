"""/v1/workflows: submit a workflow document, list, get, cancel, retry, follow (SSE)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import per_app
from conveyor.api.schemas import problems
from conveyor.workflows.document import WorkflowSubmit
from conveyor.workflows.service import Workflows
from conveyor.workflows.status import WorkflowState
from conveyor.workflows.stream import follow
from conveyor.workflows.views import Workflow, WorkflowPage

router = APIRouter(prefix="/v1/workflows", tags=["workflows"])

Reader = Annotated[Principal, Depends(require_scope("read"))]
Submitter = Annotated[Principal, Depends(require_scope("submit"))]

PIPELINE: dict[str, Any] = {
    "name": "count-then-double",
    "steps": {
        "count": {"kind": "demo.count", "input": {"to": 3, "delay": 0}},
        "double": {
            "kind": "demo.count",
            "input": {"to": {"$ref": "steps.count.result.sum"}, "delay": 0},
            "when": {"ref": "steps.count.result.total", "op": "ge", "value": 3},
        },
        "cleanup": {"kind": "noop", "depends_on": ["double"], "on_failure": "continue"},
    },
}
EXAMPLES = {
    "pipeline": {"summary": "A reference and a condition", "value": PIPELINE},
    "fan-in": {
        "summary": "Two branches joined",
        "value": {
            "steps": {
                "a": {"kind": "noop"},
                "b": {"kind": "noop"},
                "join": {"kind": "noop", "depends_on": ["a", "b"]},
            }
        },
    },
}


def workflows(request: Request) -> Workflows:
    return per_app(request.app, "workflows", Workflows)


@router.post(
    "",
    status_code=201,
    summary="Submit a workflow",
    responses=problems(401, 403, 413, 422),
)
async def submit_workflow(
    request: Request,
    response: Response,
    principal: Submitter,
    body: Annotated[WorkflowSubmit, Body(openapi_examples=EXAMPLES)],
) -> Workflow:
    """Check the document (cycles, unknown steps and kinds, bad references, inputs that do not
    match their kind) and enqueue every step at once; a problem answers 422 naming the step.
    Steps start as `blocked` until their dependencies end."""
    created = await run_in_threadpool(workflows(request).submit, body)
    response.headers["Location"] = f"/v1/workflows/{created.id}"
    return created


@router.get("", summary="List workflows, newest first", responses=problems(401, 403, 422))
async def list_workflows(
    request: Request,
    principal: Reader,
    state: Annotated[WorkflowState | None, Query(description="Only workflows in this state.")] = (
        None
    ),
    cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> WorkflowPage:
    """Each with its state and progress (derived from its steps when read)."""
    return await run_in_threadpool(workflows(request).list, cursor, limit, state)


@router.get("/{workflow_id}", summary="Get a workflow", responses=problems(401, 403, 404))
async def get_workflow(workflow_id: str, request: Request, principal: Reader) -> Workflow:
    """Its state, progress, every step (job id, state, result or error) and its document."""
    return await run_in_threadpool(workflows(request).get, workflow_id)


@router.post(
    "/{workflow_id}/cancel",
    summary="Cancel a workflow",
    responses=problems(401, 403, 404, 409),
)
async def cancel_workflow(workflow_id: str, request: Request, principal: Submitter) -> Workflow:
    """Cancel every step that has not ended (waiting and blocked ones at once, running ones via
    their workers). A workflow that has ended answers 409."""
    return await run_in_threadpool(workflows(request).cancel, workflow_id)


@router.post(
    "/{workflow_id}/retry",
    summary="Retry a failed or cancelled workflow",
    responses=problems(401, 403, 404, 409),
)
async def retry_workflow(workflow_id: str, request: Request, principal: Submitter) -> Workflow:
    """Run again the steps that failed, were cancelled or did not run, and what depends on
    them; steps that succeeded keep their results. Other states answer 409."""
    return await run_in_threadpool(workflows(request).retry, workflow_id)


@router.get(
    "/{workflow_id}/events",
    summary="Follow a workflow (SSE)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "`text/event-stream`: a `workflow` message (state and progress) and a"
            " `step` message per step first, then one on every change; the stream ends when the"
            " workflow does.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        **problems(401, 403, 404),
    },
)
async def workflow_events(
    workflow_id: str,
    request: Request,
    principal: Reader,
    interval: Annotated[float, Query(ge=0.05, le=10, description="Seconds between looks.")] = 0.25,
) -> StreamingResponse:
    """The workflow's own transitions and its steps' states as they change."""
    service = workflows(request)
    first = await run_in_threadpool(service.get, workflow_id, with_document=False)
    return StreamingResponse(
        follow(service, first, interval),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
