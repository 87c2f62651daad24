"""FastAPI dependencies: the service and settings of the running app, and the objects it makes
once and keeps (`per_app`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar, cast

from fastapi import Depends, Request
from starlette.applications import Starlette

from conveyor.service import Service
from conveyor.settings import Settings


async def get_service(request: Request) -> Service:
    # async: FastAPI runs plain `def` dependencies in a worker thread, a hop per request.
    service: Service = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


T = TypeVar("T")


def per_app(app: Starlette, name: str, make: Callable[[Service], T]) -> T:
    """`app.state.<name>`: made by `make(service)` on first use, shared by every request, and
    made again once the app has a new service (an app restarted on a fresh store, as tests do)."""
    state = app.state
    service: Service = state.service
    found = getattr(state, name, None)
    if found is None or getattr(state, f"{name}_service", None) is not service:
        found = make(service)
        setattr(state, name, found)
        setattr(state, f"{name}_service", service)
    return cast(T, found)


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
