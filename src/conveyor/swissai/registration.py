"""Announcing services to Swiss AI Center core engines, as the service template does.

`POST {engine}/services`; on 409 (slug taken, e.g. after a restart) `GET
{engine}/services/slug/{slug}` and `PATCH {engine}/services/{id}`; then `POST
{engine}/services/{slug}/ping` at once and every `ping_s` after (announcing again if the engine
forgot us). Every call is retried `announce_retries` times.

Where this follows the engine (core-engine 9dbf648) rather than the template: the engine's
availability check, every 30 s, marks a service without a heartbeat `sleeping`, so the template's
first ping, one interval after announcing, leaves a new service `sleeping` meanwhile: the first
ping goes right after the announcement. At shutdown the template PATCHes `{"status":
"sleeping"}`, which the engine turns into `unavailable` (its `disable_service`: route removed,
the service's pipelines disabled); conveyor clears its heartbeat instead (`PATCH {"latest_ping":
null}`), so the engine's next check marks it `sleeping`, keeping its route and pipelines, and
wakes it with `GET /status` when the next task comes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx

from conveyor.swissai.settings import SwissAISettings

log = logging.getLogger("conveyor.swissai")

# What shutdown sends: no heartbeat, so the engine's next availability check says `sleeping`.
GONE_QUIET: dict[str, Any] = {"latest_ping": None}


@contextlib.asynccontextmanager
async def announcing(
    settings: SwissAISettings, bodies: list[dict[str, Any]]
) -> AsyncIterator[None]:
    """Keep `bodies` registered with every engine while the block runs; on leaving, tell the
    engines they sleep. With no bodies, nothing is announced."""
    if not bodies:
        yield
        return
    announcer = Announcer(settings, bodies)
    announcer.start()
    try:
        yield
    finally:
        await announcer.stop()


class Announcer:
    """Keeps a set of services registered with every engine."""

    def __init__(self, settings: SwissAISettings, bodies: list[dict[str, Any]]) -> None:
        self.settings = settings
        self.bodies = bodies
        self.ids: dict[tuple[str, str], str] = {}  # (engine, slug) → engine's service id
        self.client = httpx.AsyncClient(timeout=settings.timeout_s, trust_env=False)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for (engine, slug), service_id in self.ids.items():
            try:
                await self.client.patch(f"{engine}/services/{service_id}", json=GONE_QUIET)
            except httpx.HTTPError as exc:
                log.warning("could not tell %s that %s sleeps: %s", engine, slug, exc)
        await self.client.aclose()

    async def run(self) -> None:
        for engine in self.settings.engines:
            for body in self.bodies:
                if await self.announce(engine, body):
                    await self.ping(engine, body)  # no heartbeat yet reads as `sleeping`
        while True:
            await asyncio.sleep(self.settings.ping_s)
            for engine in self.settings.engines:
                for body in self.bodies:
                    await self.ping(engine, body)

    async def announce(self, engine: str, body: dict[str, Any]) -> bool:
        slug = body["slug"]
        for attempt in range(1, self.settings.announce_retries + 1):
            try:
                answer = await self.client.post(f"{engine}/services", json=body)
                if answer.status_code == 409:
                    found = await self.client.get(f"{engine}/services/slug/{slug}")
                    found.raise_for_status()
                    service_id = found.json()["id"]
                    patched = await self.client.patch(f"{engine}/services/{service_id}", json=body)
                    patched.raise_for_status()
                else:
                    answer.raise_for_status()
                    service_id = answer.json()["id"]
                self.ids[(engine, slug)] = str(service_id)
                log.info("announced %s to %s", slug, engine)
                return True
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                log.warning("announcing %s to %s failed (attempt %d/%d): %s", slug, engine,
                            attempt, self.settings.announce_retries, exc)  # fmt: skip
                await asyncio.sleep(self.settings.retry_delay_s)
        return False

    async def ping(self, engine: str, body: dict[str, Any]) -> None:
        slug = body["slug"]
        try:
            answer = await self.client.post(f"{engine}/services/{slug}/ping")
            if answer.status_code == 404 or (engine, slug) not in self.ids:
                await self.announce(engine, body)  # the engine lost or never had us
            else:
                answer.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("ping of %s to %s failed: %s", slug, engine, exc)
