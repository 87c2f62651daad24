"""/v1/schedules: create, change, pause, resume, delete and preview schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import per_app
from conveyor.api.schemas import Body as BodyModel
from conveyor.api.schemas import build, problems
from conveyor.controls import Controls
from conveyor.schedules.model import NewSchedule, ScheduleFields, ScheduleView

router = APIRouter(prefix="/v1/schedules", tags=["schedules"])

Reader = Annotated[Principal, Depends(require_scope("read"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]

EXAMPLES: dict[str, Any] = {
    "cron": {
        "summary": "Daily at 02:30 Zurich time",
        "value": {
            "id": "nightly-report",
            "kind": "demo.count",
            "input": {"to": 5},
            "cron": "30 2 * * *",
            "timezone": "Europe/Zurich",
            "overlap": "forbid",
        },
    },
    "interval": {
        "summary": "Every 10 minutes, catching up at most 3 missed runs",
        "value": {
            "id": "sync",
            "kind": "noop",
            "every_s": 600,
            "misfire": "catch_up",
            "catch_up_max": 3,
        },
    },
}


PUT_EXAMPLES: dict[str, Any] = {
    "weekdays": {
        "summary": "Every weekday at 07:00 New York time",
        "value": {"kind": "noop", "cron": "0 7 * * 1-5", "timezone": "America/New_York"},
    }
}


def controls(request: Request) -> Controls:
    return per_app(request.app, "controls", Controls)


ControlsDep = Annotated[Controls, Depends(controls)]


class NextRuns(BodyModel):
    next_runs: list[datetime]


@router.get("", summary="Every schedule", responses=problems(401, 403))
async def list_schedules(ops: ControlsDep, principal: Reader) -> list[ScheduleView]:
    """Each schedule with what its tickers did last and its next runs."""
    return await run_in_threadpool(ops.schedules)


@router.post(
    "",
    status_code=201,
    summary="Create a schedule",
    responses=problems(401, 403, 404, 409, 422),
)
async def create_schedule(
    ops: ControlsDep,
    principal: Admin,
    new: Annotated[NewSchedule, Body(openapi_examples=EXAMPLES)],
) -> ScheduleView:
    """A cron expression in a time zone (`cron`, `timezone`) or an interval (`every_s`); its
    input is checked against the kind's schema now. Every worker's ticker makes one job per
    tick (idempotency key `schedule:<id>:<tick>`), from the first tick after now. 409 if the
    id is taken (PUT replaces)."""
    return await run_in_threadpool(ops.create_schedule, new)


@router.get("/{schedule_id}", summary="Get a schedule", responses=problems(401, 403, 404))
async def get_schedule(schedule_id: str, ops: ControlsDep, principal: Reader) -> ScheduleView:
    return await run_in_threadpool(ops.schedule, schedule_id)


@router.put(
    "/{schedule_id}",
    summary="Create or replace a schedule",
    responses=problems(401, 403, 404, 422),
)
async def put_schedule(
    schedule_id: str,
    ops: ControlsDep,
    principal: Admin,
    fields: Annotated[ScheduleFields, Body(openapi_examples=PUT_EXAMPLES)],
) -> ScheduleView:
    """Takes effect at every ticker's next pass (within a second); no restart. A new timing
    starts from the first tick after now."""
    new = build(NewSchedule, "path", id=schedule_id, **fields.model_dump())
    return await run_in_threadpool(ops.put_schedule, new)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule",
    responses=problems(401, 403, 404),
)
async def delete_schedule(schedule_id: str, ops: ControlsDep, principal: Admin) -> Response:
    """Its jobs stay. A schedule declared in code comes back when a worker declaring it starts:
    pause it instead."""
    await run_in_threadpool(ops.delete_schedule, schedule_id)
    return Response(status_code=204)


@router.post("/{schedule_id}/pause", summary="Pause a schedule", responses=problems(401, 403, 404))
async def pause_schedule(schedule_id: str, ops: ControlsDep, principal: Admin) -> ScheduleView:
    """No jobs until resumed."""
    return await run_in_threadpool(ops.pause_schedule, schedule_id)


@router.post(
    "/{schedule_id}/resume", summary="Resume a schedule", responses=problems(401, 403, 404)
)
async def resume_schedule(schedule_id: str, ops: ControlsDep, principal: Admin) -> ScheduleView:
    """Runs again from the next tick; the ticks passed while paused are not made up for."""
    return await run_in_threadpool(ops.resume_schedule, schedule_id)


@router.get(
    "/{schedule_id}/next", summary="When a schedule runs next", responses=problems(401, 403, 404)
)
async def next_runs(
    schedule_id: str,
    ops: ControlsDep,
    principal: Reader,
    n: Annotated[int, Query(ge=1, le=100, description="How many.")] = 10,
) -> NextRuns:
    """The next `n` ticks (UTC), DST transitions of its time zone included."""
    return NextRuns(next_runs=await run_in_threadpool(ops.schedule_runs, schedule_id, n))
