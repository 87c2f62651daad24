"""Allocation: upload the preference and project CSVs (+ config), watch the solve live, and
see or download the allocation with its rank histogram.

The upload goes through the same parser and submit path as `POST /allocation/allocate_file/`;
the result page reads the `allocate` job's output as the checker computed it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from markupsafe import Markup, escape
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.compat import allocation as compat
from conveyor.dashboard import render
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.models import Job, JobFilter
from conveyor.service import Service

router = APIRouter(route_class=DashboardRoute)

ROWS_SHOWN = 200
RECENT = 20
CHART_W, CHART_H, LABEL_H = 480, 160, 18


def histogram_svg(histogram: dict[str, int]) -> Markup:
    """A labelled bar chart of students per rank obtained (and unallocated)."""
    if not histogram:
        return Markup("")
    top = max(histogram.values()) or 1
    step = CHART_W / len(histogram)
    parts = []
    for i, (label, count) in enumerate(histogram.items()):
        h = count / top * (CHART_H - 2 * LABEL_H)
        x = i * step
        name = "none" if label == "unallocated" else escape(label)
        fill = "#c0392b" if label in ("unallocated", "unranked") else "#2e86c1"
        parts.append(
            f"<g><title>rank {escape(label)}: {count} students</title>"
            f'<rect x="{x + 2:.1f}" y="{CHART_H - LABEL_H - h:.1f}" width="{step - 4:.1f}"'
            f' height="{h:.1f}" fill="{fill}"></rect>'
            f'<text x="{x + step / 2:.1f}" y="{CHART_H - LABEL_H - h - 4:.1f}"'
            f' text-anchor="middle" font-size="11" fill="currentColor">{count}</text>'
            f'<text x="{x + step / 2:.1f}" y="{CHART_H - 4:.1f}" text-anchor="middle"'
            f' font-size="11" fill="currentColor">{name}</text></g>'
        )
    summary = ", ".join(f"rank {k}: {v}" for k, v in histogram.items())
    # Every interpolated value is a number or escaped above.
    return Markup(  # noqa: S704
        f'<svg id="rank-histogram" viewBox="0 0 {CHART_W} {CHART_H}" width="100%"'
        f' height="{CHART_H}" role="img" aria-label="Students per rank obtained: '
        f'{escape(summary)}">{"".join(parts)}</svg>'
    )


def _recent(service: Service) -> list[Job]:
    return service.list_jobs(JobFilter(kind=compat.KIND), limit=RECENT).jobs


def _job(service: Service, job_id: str) -> Job:
    job = compat.find(service, job_id)
    if job is None:
        raise errors.JobNotFoundError(f"no allocation job with id {job_id!r}", job_id=job_id)
    return job


def _context(service: Service, job_id: str) -> dict[str, Any]:
    job = _job(service, job_id)
    result = job.result if isinstance(job.result, dict) else None
    context: dict[str, Any] = {"job": job, "result": result, "percent": compat.percent(job)}
    if result is not None:
        allocation = result.get("allocation", {})
        ranks = result.get("ranks", {})
        staff = (job.input or {}).get("staff", {})
        rows = [
            (s, p, staff.get(p, "") if p else "", ranks.get(s))
            for s, p in list(allocation.items())[:ROWS_SHOWN]
        ]
        context.update(
            chart=histogram_svg(result.get("rank_histogram", {})),
            rows=rows,
            more=max(0, len(allocation) - ROWS_SHOWN),
            loads=sorted(result.get("loads", {}).items()),
            has_csv=any(f["name"] == "allocation.csv" for f in service.files(job.id)),
        )
    return context


@router.get("/allocation", include_in_schema=False)
async def allocation_page(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    jobs = await run_in_threadpool(_recent, service)
    return render.page(request, "allocation.html", jobs=jobs, error=None)


def _options(form: Any) -> dict[str, Any]:
    """The form's method and time limit (they override the config file's)."""
    config: dict[str, Any] = {}
    method = str(form.get("method") or "")
    if method in ("exact", "local_search"):
        config["method"] = method
    limit = str(form.get("timeLimit") or "").strip()
    if limit:
        try:
            config["timeLimit"] = float(limit)
        except ValueError:
            raise compat.BadRequest(f"time limit: {limit!r} is not a number") from None
    return config


@router.post("/allocation", include_in_schema=False)
async def allocation_submit(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    form = await posted(request, viewer, "submit")
    try:
        data = await compat.from_files(request)
        data["config"] = {**data["config"], **_options(form)}
        job_id = await run_in_threadpool(compat.submit, service, data, False)
    except compat.BadRequest as exc:
        jobs = await run_in_threadpool(_recent, service)
        return render.page(request, "allocation.html", 400, jobs=jobs, error=str(exc))
    return see_other(f"/ui/allocation/{job_id}")


@router.get("/allocation/{job_id}", include_in_schema=False)
async def allocation_job(
    request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    context = await run_in_threadpool(_context, service, job_id)
    return render.page(request, "allocation_job.html", **context)


@router.get("/allocation/{job_id}/live", include_in_schema=False)
async def allocation_live(
    request: Request, job_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    context = await run_in_threadpool(_context, service, job_id)
    return render.page(request, "_allocation_live.html", **context)
