"""FastAPI dependencies: the service, settings, store and storage of the running app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from conveyor.service import Service
from conveyor.settings import Settings


async def get_service(request: Request) -> Service:
    # async: FastAPI runs plain `def` dependencies in a worker thread, a hop per request.
    service: Service = request.app.state.service
    return service


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


ServiceDep = Annotated[Service, Depends(get_service)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
