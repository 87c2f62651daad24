"""The /v1 API, one router per resource; `install(app)` mounts it all."""

from __future__ import annotations

from fastapi import FastAPI

from conveyor.api import openapi
from conveyor.api.metrics import Metrics, MetricsMiddleware
from conveyor.models import KindInfo


def install(app: FastAPI) -> None:
    """Add the /v1 routers, /metrics with its middleware, and the per-kind OpenAPI."""
    from conveyor.api.routes import (
        catalog,
        events,
        files,
        jobs,
        lease,
        limits,
        metrics,
        schedules,
        uploads,
    )
    from conveyor.api.routes import workflows as flows

    routers = (jobs, events, files, uploads, catalog, schedules, limits, lease, metrics, flows)
    for module in routers:
        app.include_router(module.router)
    app.state.metrics = Metrics()
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)

    def kinds() -> list[KindInfo]:
        service = getattr(app.state, "service", None)
        return list(service.kinds().values()) if service is not None else []

    openapi.install(app, kinds)
