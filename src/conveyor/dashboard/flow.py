"""Queues, limits and schedules: see what waits behind each limit and paused queue, pause,
resume and purge queues (purge behind a confirmation), change limits, and create, pause,
resume and delete schedules with their next runs. Changes need the admin scope."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.routes.schedules import controls
from conveyor.controls import Controls
from conveyor.dashboard import render
from conveyor.dashboard.web import DashboardRoute, ViewerDep, posted, see_other
from conveyor.models import JobFilter, Limit
from conveyor.schedules.model import NewSchedule
from conveyor.schedules.ticker import schedule_tag

router = APIRouter(route_class=DashboardRoute)


def _ops(request: Request) -> Controls:
    return controls(request)


def _text(form: Any, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _number(text: str) -> float | None:
    return float(text) if text else None


# -- queues and limits ---------------------------------------------------------------------------


def _queues_page(
    request: Request, ops: Controls, problems: list[str] | None = None, status: int = 200
) -> Response:
    return render.page(
        request, "queues.html", status, queues=ops.store.queue_stats(), limits=ops.limits(),
        problems=problems or [], kinds=ops.kind_names(),
    )  # fmt: skip


@router.get("/queues", include_in_schema=False)
async def queues_page(request: Request, viewer: ViewerDep) -> Response:
    ops = _ops(request)
    return await run_in_threadpool(_queues_page, request, ops)


@router.post("/queues/{queue}/{action}", include_in_schema=False)
async def queue_action(request: Request, queue: str, action: str, viewer: ViewerDep) -> Response:
    form = await posted(request, viewer, "admin")
    ops = _ops(request)
    if action == "pause":
        await run_in_threadpool(ops.pause_queue, queue)
    elif action == "resume":
        await run_in_threadpool(ops.resume_queue, queue)
    elif action == "purge" and _text(form, "confirm") == queue:
        await run_in_threadpool(ops.purge_queue, queue)
    elif action == "purge":
        message = f"type the queue's name ({queue}) to confirm the purge"
        return await run_in_threadpool(_queues_page, request, ops, [message], 422)
    else:
        return render.page(request, "error.html", 404, status=404, message="No such action.")
    return see_other("/ui/queues")


@router.post("/limits", include_in_schema=False)
async def set_limit(request: Request, viewer: ViewerDep) -> Response:
    form = await posted(request, viewer, "admin")
    ops = _ops(request)
    try:
        limit = Limit.model_validate(
            {"target": _text(form, "target"), "max_running": _number(_text(form, "max_running")),
             "rate": _number(_text(form, "rate")), "per_s": _number(_text(form, "per_s")) or 1.0,
             "strategy": _text(form, "strategy") or "queue"}
        )  # fmt: skip
    except (ValidationError, ValueError) as exc:
        return await run_in_threadpool(_queues_page, request, ops, _messages(exc), 422)
    await run_in_threadpool(ops.set_limit, limit, viewer.principal.name)
    return see_other("/ui/queues#limits")


@router.post("/limits/{target}/delete", include_in_schema=False)
async def delete_limit(request: Request, target: str, viewer: ViewerDep) -> Response:
    await posted(request, viewer, "admin")
    await run_in_threadpool(_ops(request).delete_limit, target)
    return see_other("/ui/queues#limits")


def _messages(exc: Exception) -> list[str]:
    if isinstance(exc, ValidationError):
        return [f"{'.'.join(map(str, e['loc'])) or 'limit'}: {e['msg']}" for e in exc.errors()]
    return [str(exc)]


# -- schedules -----------------------------------------------------------------------------------


def _schedules_page(
    request: Request,
    ops: Controls,
    problems: list[str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    return render.page(
        request, "schedules.html", status, schedules=ops.schedules(), problems=problems or [],
        values=values or {"timezone": "UTC", "input": "{}"}, kinds=ops.kind_names(),
    )  # fmt: skip


@router.get("/schedules", include_in_schema=False)
async def schedules_page(request: Request, viewer: ViewerDep) -> Response:
    return await run_in_threadpool(_schedules_page, request, _ops(request))


@router.post("/schedules", include_in_schema=False)
async def create_schedule(request: Request, viewer: ViewerDep) -> Response:
    form = await posted(request, viewer, "admin")
    ops = _ops(request)
    names = ("id", "kind", "cron", "timezone", "every_s", "input", "misfire", "overlap")
    values = {name: _text(form, name) for name in names}
    try:
        new = NewSchedule.model_validate(
            {"id": values["id"], "kind": values["kind"], "cron": values["cron"] or None,
             "timezone": values["timezone"] or "UTC", "every_s": values["every_s"] or None,
             "input": json.loads(values["input"] or "{}"),
             "misfire": values["misfire"] or "run_once", "overlap": values["overlap"] or "allow"}
        )  # fmt: skip
        made = await run_in_threadpool(ops.create_schedule, new)
    except json.JSONDecodeError as exc:
        problems = [f"input: not valid JSON ({exc.msg})"]
    except ValidationError as exc:
        problems = _messages(exc)
    except errors.ConveyorError as exc:
        problems = [exc.message]
    else:
        return see_other(f"/ui/schedules/{made.id}")
    return await run_in_threadpool(_schedules_page, request, ops, problems, values, 422)


def _schedule_page(request: Request, ops: Controls, schedule_id: str) -> Response:
    schedule = ops.schedule(schedule_id)
    jobs = ops.store.list_jobs(JobFilter(tag=schedule_tag(schedule_id)), None, 20).jobs
    return render.page(
        request, "schedule.html", schedule=schedule, jobs=jobs,
        upcoming=ops.schedule_runs(schedule_id, 10), zone=schedule.timezone,
    )  # fmt: skip


@router.get("/schedules/{schedule_id}", include_in_schema=False)
async def schedule_page(request: Request, schedule_id: str, viewer: ViewerDep) -> Response:
    return await run_in_threadpool(_schedule_page, request, _ops(request), schedule_id)


@router.post("/schedules/{schedule_id}/{action}", include_in_schema=False)
async def schedule_action(
    request: Request, schedule_id: str, action: str, viewer: ViewerDep
) -> Response:
    await posted(request, viewer, "admin")
    ops = _ops(request)
    if action == "pause":
        await run_in_threadpool(ops.pause_schedule, schedule_id)
    elif action == "resume":
        await run_in_threadpool(ops.resume_schedule, schedule_id)
    elif action == "delete":
        await run_in_threadpool(ops.delete_schedule, schedule_id)
        return see_other("/ui/schedules")
    else:
        return render.page(request, "error.html", 404, status=404, message="No such action.")
    return see_other(f"/ui/schedules/{schedule_id}")
