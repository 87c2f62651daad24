"""The dashboard's router, mounted at `/ui` by `api/app.py`: server-rendered pages over the
same `Service` as the API, enhanced by htmx where JavaScript runs."""

from __future__ import annotations

from fastapi import APIRouter

from conveyor.dashboard import (
    allocation,
    flow,
    job,
    jobs,
    kinds,
    login,
    overview,
    static,
    workers,
    workflows,
)
from conveyor.dashboard.web import DashboardRoute

router = APIRouter(prefix="/ui", route_class=DashboardRoute, include_in_schema=False)
for module in (static, login, overview, jobs, job, workflows, kinds, flow, workers, allocation):
    router.include_router(module.router)
