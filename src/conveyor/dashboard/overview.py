"""The overview: per-queue depth, running, oldest waiting, last-hour charts, workers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from conveyor.api.deps import per_app
from conveyor.dashboard import charts, render
from conveyor.dashboard.activity import Activity, Minute
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep
from conveyor.models import QueueStats
from conveyor.service import Service

router = APIRouter(route_class=DashboardRoute)


@dataclass
class QueueRow:
    stats: QueueStats
    finished_hour: int
    failure_rate: float | None
    throughput: Markup
    failures: Markup
    depth: Markup


def activity(request: Request) -> Activity:
    return per_app(request.app, "dashboard_activity", lambda service: Activity(service.store))


def _row(stats: QueueStats, series: list[Minute]) -> QueueRow:
    finished = sum(m.finished for m in series)
    failed = sum(m.counts["failed"] + m.counts["retried"] for m in series)
    attempts = failed + sum(m.counts["succeeded"] for m in series)
    name = stats.name
    return QueueRow(
        stats=stats,
        finished_hour=finished,
        failure_rate=round(failed / attempts * 100, 1) if attempts else None,
        throughput=charts.bars([m.finished for m in series], f"{name}: jobs finished per minute"),
        failures=charts.line(
            [m.failure_rate for m in series],
            f"{name}: failed attempts",
            top=100,
            unit="%",
            cls="line bad",
        ),
        depth=charts.line([m.depth for m in series], f"{name}: waiting jobs"),
    )


def _context(service: Service, tracker: Activity) -> dict[str, Any]:
    queues = tracker.queue_stats()
    rows = [_row(stats, tracker.series(stats.name)) for stats in queues]
    total = QueueStats(name="all queues")
    for stats in queues:
        for field in (
            "blocked",
            "queued",
            "scheduled",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "finished_last_minute",
        ):
            setattr(total, field, getattr(total, field) + getattr(stats, field))
    ages = [s.oldest_queued_age_s for s in queues if s.oldest_queued_age_s is not None]
    total.oldest_queued_age_s = max(ages, default=None)
    workers = service.store.workers()
    return {
        "rows": rows,
        "total": _row(total, tracker.series()),
        "workers": workers,
        "processes": sum(w.concurrency for w in workers),
        "busy": sum(max(w.busy, len(w.running)) for w in workers),
    }


async def _render(request: Request, service: Service, template: str) -> Response:
    tracker = activity(request)
    tracker.touch()
    context = await run_in_threadpool(_context, service, tracker)
    return render.page(request, template, **context)


@router.get("/", include_in_schema=False)
async def overview(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    return await _render(request, service, "overview.html")


@router.get("/overview/live", include_in_schema=False)
async def overview_live(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    """The part of the page that the page polls for."""
    return await _render(request, service, "_overview.html")
