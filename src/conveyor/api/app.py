"""The FastAPI application: `create_app(settings)`.

Routers live in `api/routes/` (the /v1 API) and `api/compat/` (the seed systems' own APIs);
each module exposes `router` and is included here. All of them use the same `Service`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from conveyor.api import problems
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import Store, open_store


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
    )
    problems.install(app)
    from conveyor.api.routes import health

    app.include_router(health.router)
    from conveyor.api import routes

    routes.install(app)
    # The entity-service API (optional `linkage` extra, anonlink) goes before taskqueue, whose
    # discovery route `/api/{name}/{version}` would shadow `/api/v1/status`.
    try:
        from conveyor.api.compat import linkage
    except ImportError:
        linkage = None  # type: ignore[assignment]
    if linkage is not None:
        app.include_router(linkage.router)
    from conveyor.api.routes import deliveries

    app.include_router(deliveries.router)
    from conveyor.api.compat import swissai

    app.include_router(swissai.router)
    from conveyor.api.compat import taskqueue

    app.include_router(taskqueue.router)
    from conveyor.api.compat import allocation

    app.include_router(allocation.router)
    try:  # the kge-server API needs numpy (part of the optional `kge` extra)
        from conveyor.api.compat import kge
    except ImportError:
        kge = None  # type: ignore[assignment]
    if kge is not None:
        app.include_router(kge.router)
    from conveyor.dashboard.routes import router as dashboard

    app.include_router(dashboard)
    return app
