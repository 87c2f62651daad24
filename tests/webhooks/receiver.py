"""A real webhook receiver for tests: verifies Standard Webhooks signatures, can be down/held."""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from conveyor.webhooks.signing import WebhookVerificationError, verify


@dataclass
class Hit:
    id: str
    method: str
    path: str
    body: bytes
    answered: int
    verified: bool

    @property
    def payload(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers `status` (503 = down) after `delay_s`; `hold_next` makes the next request wait
    until released."""

    secrets: list[str]
    status: int = 200
    delay_s: float = 0.0
    hits: list[Hit] = field(default_factory=list)
    hold_next: bool = False
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            try:
                verify(self.secrets, dict(request.headers), body)
                verified = True
            except WebhookVerificationError:
                verified = False
            with self.lock:
                hold, self.hold_next = self.hold_next, False
            if hold:
                self.held.set()
                while not self.release.is_set():
                    await asyncio.sleep(0.01)
            if self.delay_s:
                await asyncio.sleep(self.delay_s)  # a slow receiver
            answered = self.status if verified else 401
            with self.lock:
                self.hits.append(Hit(request.headers.get("webhook-id", ""), request.method,
                                     request.url.path, body, answered, verified))  # fmt: skip
            return Response(status_code=answered, content=b"x" * 100_000)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST", "PATCH"])])

    def delivered(self) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if 200 <= h.answered < 300]

    def by_id(self) -> dict[str, list[Hit]]:
        grouped: dict[str, list[Hit]] = {}
        with self.lock:
            for hit in self.hits:
                grouped.setdefault(hit.id, []).append(hit)
        return grouped
