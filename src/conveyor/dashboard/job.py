"""One job: timeline, live progress and logs (SSE), input, result, error, attempts, files,
webhook deliveries, actions and code snippets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from conveyor.api import sse
from conveyor.api.routes.events import hub
from conveyor.dashboard import deliveries, render, snippets
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.models import Job, JobEvent
from conveyor.service import Service
from conveyor.storage import check_name

router = APIRouter(route_class=DashboardRoute)

MAX_EVENT_PAGES = 20  # 20,000 events: a job with more shows the first ones and says so
LOG_LINES = 500
PREVIEW = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
}


@dataclass
class Attempt:
    number: int
    worker: str | None
    started: JobEvent
    ended: JobEvent | None = None

    @property
    def seconds(self) -> float | None:
        """How long it ran; None while it runs."""
        return None if self.ended is None else (self.ended.at - self.started.at).total_seconds()


def read_events(service: Service, job_id: str) -> tuple[list[JobEvent], bool]:
    """The job's events (state, progress and log), and whether there were more to read."""
    found: list[JobEvent] = []
    after = 0
    for _ in range(MAX_EVENT_PAGES):
        batch = service.events(job_id, after)
        found.extend(batch)
        if len(batch) < 1000:
            return found, False
        after = batch[-1].seq
    return found, True


def attempts(states: list[JobEvent]) -> list[Attempt]:
    """Each `running` event starts an attempt; the next state event ends it."""
    found: list[Attempt] = []
    for event in states:
        if event.data.get("state") == "running":
            # Numbered in order: a retried job starts its attempt count again at 1, and two
            # rows both numbered #1 read as one attempt shown twice.
            found.append(Attempt(len(found) + 1, event.data.get("worker"), event))
        elif found and found[-1].ended is None:
            found[-1].ended = event
    return found


def _preview(name: str) -> str | None:
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return PREVIEW.get(suffix)


def _context(service: Service, job_id: str, base: str) -> dict[str, Any]:
    job = service.serving.annotate([service.get(job_id)])[0]  # a warning if nobody serves it
    events, truncated = read_events(service, job_id)
    states = [e for e in events if e.type == "state"]
    files = service.files(job_id)
    for f in files:
        f["preview"] = _preview(f["name"])
    webhook = dict(job.webhook or {})
    return {
        "job": job,
        "states": states,
        "attempts": attempts(states),
        "logs": [e for e in events if e.type == "log"][-LOG_LINES:],
        "last_seq": events[-1].seq if events else 0,
        "truncated": truncated,
        "files": files,
        "webhook_url": deliveries.redact(webhook["url"]) if webhook.get("url") else None,
        "deliveries": deliveries.for_job(service.store, job_id),
        "curl": snippets.curl(job, base),
        "python": snippets.python(job, base),
    }


@router.get("/jobs/{job_id}", include_in_schema=False)
async def job_page(
    request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    context = await run_in_threadpool(_context, service, job_id, str(request.base_url))
    return render.page(request, "job.html", **context)


@router.get("/jobs/{job_id}/live", include_in_schema=False)
async def job_live(
    request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    """The part of the page that changes with the job's state (fetched on state events)."""
    context = await run_in_threadpool(_context, service, job_id, str(request.base_url))
    return render.page(request, "_job_live.html", **context)


@router.get("/jobs/{job_id}/stream", include_in_schema=False)
async def job_stream(
    request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep, after: int = 0
) -> StreamingResponse:
    """The job's events as SSE for the page's script (the /v1 stream wants a bearer key,
    which a browser's EventSource cannot send). A reconnect resumes after `Last-Event-ID`."""
    job: Job = await run_in_threadpool(service.get, job_id)
    start = max(0, after, sse.parse_last_event_id(request.headers.get("last-event-id")))
    return StreamingResponse(
        sse.stream(hub(request), job_id, start, job.state.is_final),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _act(
    request: Request, viewer: ViewerDep, service: Service, job_id: str, action: str
) -> Response:
    await posted(request, viewer, "admin" if action == "delete" else "submit")
    if action == "delete":
        await run_in_threadpool(service.delete, job_id)
        return see_other("/ui/jobs")
    await run_in_threadpool(service.cancel if action == "cancel" else service.retry, job_id)
    return see_other(f"/ui/jobs/{job_id}")


@router.post("/jobs/{job_id}/cancel", include_in_schema=False)
async def cancel(request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep) -> Response:
    return await _act(request, viewer, service, job_id, "cancel")


@router.post("/jobs/{job_id}/retry", include_in_schema=False)
async def retry(request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep) -> Response:
    return await _act(request, viewer, service, job_id, "retry")


@router.post("/jobs/{job_id}/delete", include_in_schema=False)
async def delete(request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep) -> Response:
    return await _act(request, viewer, service, job_id, "delete")


@router.get("/jobs/{job_id}/files/{direction}/{name}", include_in_schema=False)
async def download(
    request: Request,
    job_id: str,
    direction: str,
    name: str,
    viewer: ViewerDep,
    service: ServiceDep,
    inline: bool = False,
) -> StreamingResponse:
    """A job's file as an attachment; images and PDFs also inline, for previews."""
    check_name(name)
    info, chunks = await run_in_threadpool(
        service.download, job_id, name, "in" if direction == "in" else "out"
    )
    preview = _preview(name)
    show = inline and preview is not None
    return StreamingResponse(
        chunks,
        media_type=preview if show and preview else "application/octet-stream",
        headers={
            "Content-Disposition": f'{"inline" if show else "attachment"}; filename="{name}"',
            "Content-Length": str(info.size),
            "X-Content-Type-Options": "nosniff",
            # A PDF viewer cannot run in a sandboxed document; everything else is sandboxed.
            "Content-Security-Policy": "default-src 'none'"
            + ("" if show and preview == "application/pdf" else "; sandbox"),
            "Cache-Control": "private, no-store",
        },
    )
