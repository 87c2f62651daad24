"""Workflows: the list, and one workflow's page with the graph of its steps (live, over SSE),
progress, and cancel / retry."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import per_app
from conveyor.dashboard import render
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.service import Service
from conveyor.workflows.service import Workflows
from conveyor.workflows.status import FINAL_WORKFLOW_STATES
from conveyor.workflows.stream import follow
from conveyor.workflows.views import Workflow

router = APIRouter(route_class=DashboardRoute)

PAGE_SIZE = 50
NODE_W, NODE_H, GAP_X, GAP_Y, PAD = 170, 46, 70, 18, 10


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    state: str
    job_id: str | None
    x: int
    y: int


@dataclass(frozen=True)
class Edge:
    path: str  # an SVG path from the dependency's right side to the step's left side
    source: str
    target: str


@dataclass(frozen=True)
class Layout:
    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layout(workflow: Workflow) -> Layout:
    """Steps in columns by depth (longest chain of dependencies before them), edges as curves."""
    deps = {step.name: step.depends_on for step in workflow.steps}
    depth: dict[str, int] = {}
    for name in _topological(deps):
        depth[name] = 1 + max((depth[d] for d in deps[name] if d in depth), default=-1)
    rows: dict[int, int] = {}
    nodes: dict[str, Node] = {}
    for step in workflow.steps:
        column = depth.get(step.name, 0)
        row = rows.get(column, 0)
        rows[column] = row + 1
        x, y = PAD + column * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)
        nodes[step.name] = Node(step.name, step.kind, step.state, step.job_id, x, y)
    edges = []
    for step in workflow.steps:
        for dep in step.depends_on:
            a, b = nodes.get(dep), nodes.get(step.name)
            if a is None or b is None:
                continue
            x1, y1, x2, y2 = a.x + NODE_W, a.y + NODE_H // 2, b.x, b.y + NODE_H // 2
            mid = (x1 + x2) // 2
            edges.append(Edge(f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}", dep, step.name))
    width = PAD * 2 + (max(depth.values(), default=0) + 1) * (NODE_W + GAP_X) - GAP_X
    height = PAD * 2 + max(rows.values(), default=1) * (NODE_H + GAP_Y) - GAP_Y
    return Layout(list(nodes.values()), edges, width, height)


def _topological(deps: dict[str, list[str]]) -> list[str]:
    """Steps with every dependency first (the graph was checked acyclic at submit)."""
    order: list[str] = []
    placed: set[str] = set()
    pending = list(deps)
    while pending:
        later = [n for n in pending if not all(d in placed or d not in deps for d in deps[n])]
        if len(later) == len(pending):  # cannot happen for a checked document; do not spin
            order.extend(pending)
            break
        for name in pending:
            if name not in later:
                order.append(name)
                placed.add(name)
        pending = later
    return order


def _flows(request: Request, service: Service) -> Workflows:
    return per_app(request.app, "workflows", Workflows)


@router.get("/workflows", include_in_schema=False)
async def workflows_page(
    request: Request,
    viewer: ViewerDep,
    service: ServiceDep,
    cursor: Annotated[str | None, Query(max_length=100)] = None,
) -> Response:
    page = await run_in_threadpool(_flows(request, service).list, cursor, PAGE_SIZE)
    template = "_workflow_rows.html" if request.headers.get("hx-request") else "workflows.html"
    return render.page(request, template, page=page, cursor=cursor)


def _context(workflow: Workflow) -> dict[str, Any]:
    return {
        "workflow": workflow,
        "graph": layout(workflow),
        "node_w": NODE_W,
        "node_h": NODE_H,
        "final": workflow.state in FINAL_WORKFLOW_STATES,
    }


@router.get("/workflows/{workflow_id}", include_in_schema=False)
async def workflow_page(
    request: Request, workflow_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    found = await run_in_threadpool(_flows(request, service).get, workflow_id)
    return render.page(request, "workflow.html", **_context(found))


@router.get("/workflows/{workflow_id}/live", include_in_schema=False)
async def workflow_live(
    request: Request, workflow_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    """The summary (state, progress, actions), refetched when the workflow's state changes."""
    found = await run_in_threadpool(_flows(request, service).get, workflow_id)
    return render.page(request, "_workflow_summary.html", **_context(found))


@router.get("/workflows/{workflow_id}/stream", include_in_schema=False)
async def workflow_stream(
    request: Request, workflow_id: str, viewer: ViewerDep, service: ServiceDep
) -> StreamingResponse:
    """The workflow's and its steps' transitions as SSE, for the page's script."""
    flows = _flows(request, service)
    first = await run_in_threadpool(flows.get, workflow_id, with_document=False)
    return StreamingResponse(
        follow(flows, first, 0.25),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("/workflows/{workflow_id}/{action}", include_in_schema=False)
async def workflow_action(
    request: Request, workflow_id: str, action: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    await posted(request, viewer, "submit")
    flows = _flows(request, service)
    if action not in ("cancel", "retry"):
        return render.page(request, "error.html", 404, status=404, message="no such action")
    await run_in_threadpool(flows.cancel if action == "cancel" else flows.retry, workflow_id)
    return see_other(f"/ui/workflows/{workflow_id}")
