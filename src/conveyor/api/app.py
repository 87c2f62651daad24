"""The FastAPI application: `create_app(settings)`.

Routers live in `api/routes/` (the /v1 API) and `api/compat/` (the seed systems' own APIs);
each module exposes `router` and is included here. All of them use the same `Service`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from conveyor.api import problems
from conveyor.api.bodies import JsonGuard
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import Store, open_store
from conveyor.telemetry import tracing

log = logging.getLogger("conveyor.api")


# The seed systems' APIs. Each may need an optional extra; without it, it is simply not served.
# linkage goes before taskqueue, whose discovery route `/api/{name}/{version}` would shadow
# `/api/v1/status`.
COMPAT_ROUTERS = (
    "conveyor.api.compat.linkage",
    "conveyor.api.compat.swissai",
    "conveyor.api.compat.taskqueue",
    "conveyor.api.compat.allocation",
    "conveyor.api.compat.kge",
)


def _include_compat(app: FastAPI) -> None:
    for name in COMPAT_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            log.info("%s is not served: %s (install its extra to serve it)", name, exc)
            continue
        app.include_router(module.router)


def create_app(settings: Settings | None = None, store: Store | None = None) -> FastAPI:
    """Build the app; it opens the store and storage named by `settings` unless given one."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        opened = store or open_store(settings.store_url)
        app.state.settings = settings
        app.state.service = Service(
            opened,
            open_storage(settings.storage_url),
            idempotency_window_s=settings.idempotency_window_s,
        )
        try:
            yield
        finally:
            if store is None:
                opened.close()

    app = FastAPI(
        title="conveyor",
        version="0.1.0",
        description="Submit jobs, watch their progress, cancel them, fetch results and files.",
        lifespan=lifespan,
        # Request spans come from conveyor's own middleware (the same on every FastAPI
        # version); FastAPI >= 0.165 would add a second server span per request.
        telemetry={"tracing": False},
    )
    problems.install(app)
    app.add_middleware(JsonGuard)  # before any route parses a body
    from conveyor.api.routes import health

    app.include_router(health.router)
    from conveyor.api import routes

    routes.install(app)
    from conveyor.api.routes import deliveries

    app.include_router(deliveries.router)
    _include_compat(app)
    from conveyor.dashboard.routes import router as dashboard

    app.include_router(dashboard)
    if tracing.configure():
        from conveyor.telemetry.asgi import TraceMiddleware

        app.add_middleware(TraceMiddleware)
    return app
