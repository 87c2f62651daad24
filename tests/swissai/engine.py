"""A fake Swiss AI Center core engine: just the routes services talk to, recording every call.

It behaves as the real engine (core-engine 9dbf648) does where services can tell: a task update
must carry `data_out` as a list (`TaskUpdate`; anything else is a 422), a `PATCH` of a service
to any status but `available` or `disabled` makes it `unavailable` (`disable_service`), and the
periodic availability check (`check_availability`, every 30 s in the engine) marks a service
without a recent heartbeat `sleeping`.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

CHECK_INTERVAL_S = 30  # the engine's check_services_availability_interval


class TaskUpdate(BaseModel):
    """The engine's own `TaskUpdate` (backend/src/tasks/models.py)."""

    data_out: list[str]
    status: str | None
    error_message: str | None = None


@dataclass
class Engine:
    services: dict[str, dict[str, Any]] = field(default_factory=dict)  # id → service
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    callbacks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rejected: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # answered 422
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, path: str, body: Any = None) -> None:
        with self.lock:
            self.calls.append((method, path, body))

    def by_slug(self, slug: str) -> dict[str, Any] | None:
        with self.lock:
            return next((s for s in self.services.values() if s["slug"] == slug), None)

    def service_response(self, slug: str) -> JSONResponse:
        found = self.by_slug(slug)
        return JSONResponse(found) if found else JSONResponse({"detail": "nope"}, 404)

    def count(self, method: str, path: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.calls if m == method and p == path)

    def check_availability(self) -> None:
        """One round of the engine's availability check (`check_service_last_heartbeat`)."""
        now = time.monotonic()
        with self.lock:
            for service in self.services.values():
                if service.get("status") == "disabled":
                    continue
                ping = service.get("latest_ping")
                fresh = ping is not None and now - ping <= CHECK_INTERVAL_S + 20
                service["status"] = "available" if fresh else "sleeping"

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/services")
        async def create(request: Request) -> JSONResponse:
            body = await request.json()
            self.record("POST", "/services", body)
            try:  # the real engine checks that the service answers first
                async with httpx.AsyncClient(timeout=5) as client:
                    answer = await client.get(f"{body['url']}/status")
            except httpx.HTTPError:
                return JSONResponse({"detail": "Service unreachable"}, 503)
            if answer.status_code != 200:
                return JSONResponse({"detail": "Service unavailable"}, 500)
            if self.by_slug(body["slug"]) is not None:
                return JSONResponse({"detail": "Service already exists"}, 409)
            service = {**body, "id": str(uuid.uuid4())}
            with self.lock:
                self.services[service["id"]] = service
            return JSONResponse(service)

        @app.get("/services/slug/{slug}")
        async def get_by_slug(slug: str) -> JSONResponse:
            self.record("GET", f"/services/slug/{slug}")
            return self.service_response(slug)

        @app.patch("/services/{service_id}")
        async def update(service_id: str, request: Request) -> JSONResponse:
            body = await request.json()
            self.record("PATCH", f"/services/{service_id}", body)
            with self.lock:
                if service_id not in self.services:
                    return JSONResponse({"detail": "nope"}, 404)
                service = self.services[service_id]
                service.update(body)
                if service.get("status") not in ("available", "disabled"):
                    service["status"] = "unavailable"  # the engine's disable_service
                return JSONResponse({k: v for k, v in service.items() if k != "latest_ping"})

        @app.post("/services/{slug}/ping")
        async def ping(slug: str) -> JSONResponse:
            self.record("POST", f"/services/{slug}/ping")
            with self.lock:
                found = next((s for s in self.services.values() if s["slug"] == slug), None)
                if found is None:
                    return JSONResponse({"detail": "Service Not Found"}, 404)
                found["latest_ping"] = time.monotonic()
            return JSONResponse(None)

        @app.patch("/tasks/{task_id}")
        async def callback(task_id: str, request: Request) -> JSONResponse:
            body = await request.json()
            self.record("PATCH", f"/tasks/{task_id}", body)
            try:
                TaskUpdate.model_validate(body)
            except ValidationError as exc:
                with self.lock:
                    self.rejected.setdefault(task_id, []).append(body)
                return JSONResponse({"detail": exc.errors(include_url=False)}, 422)
            with self.lock:
                self.callbacks.setdefault(task_id, []).append(body)
            return JSONResponse({"id": task_id, **body})

        return app
