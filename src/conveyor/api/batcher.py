"""Group commit for submits: concurrent requests share one store transaction.

Each durable commit costs an fsync, so enqueueing requests one by one caps throughput at the
disk's sync rate. Requests that arrive while a commit is in flight wait for the next one and go
in together: one `submit_many` (one transaction, one fsync) for all of them, still committed
before any of them is answered. Under no load a request is committed alone, at once.

If the combined commit is refused because of what one request asked (bad input, an unknown
kind, an idempotency conflict, the same key twice), each request is committed on its own so it
gets its own answer and nobody else's error; if the store itself fails, all get that error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.models import Job, NewJob
from conveyor.service import MAX_BATCH, Service

log = logging.getLogger("conveyor.api")


@dataclass
class _Pending:
    jobs: list[NewJob]
    future: asyncio.Future[tuple[list[Job], bool]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class SubmitBatcher:
    """One per app; `await submit(jobs)` -> (jobs, every job already existed)."""

    def __init__(self, service: Service, max_jobs: int = MAX_BATCH) -> None:
        self.service = service
        self.max_jobs = max_jobs
        self._pending: list[_Pending] = []
        self._running = False

    async def submit(self, jobs: list[NewJob]) -> tuple[list[Job], bool]:
        item = _Pending(jobs)
        self._pending.append(item)
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await item.future

    async def _drain(self) -> None:
        try:
            while self._pending:
                group: list[_Pending] = []
                size = 0
                while self._pending and (
                    not group or size + len(self._pending[0].jobs) <= self.max_jobs
                ):
                    item = self._pending.pop(0)
                    group.append(item)
                    size += len(item.jobs)
                await self._commit(group)
        finally:
            self._running = False

    async def _commit(self, group: list[_Pending]) -> None:
        if len(group) > 1:
            try:
                created, before = await run_in_threadpool(
                    self._enqueue, [j for item in group for j in item.jobs]
                )
            except Exception as exc:
                if not _request_error(exc):  # the store is down: no point asking again per item
                    for item in group:
                        _answer(item, exc)
                    return
                log.debug("combined submit refused; committing requests one by one", exc_info=True)
            else:
                offset = 0
                for item in group:
                    mine = created[offset : offset + len(item.jobs)]
                    offset += len(item.jobs)
                    _answer(item, (mine, _replayed(mine, before)))
                return
        for item in group:
            try:
                created, before = await run_in_threadpool(self._enqueue, item.jobs)
            except Exception as exc:
                _answer(item, exc)
            else:
                _answer(item, (created, _replayed(created, before)))

    def _enqueue(self, jobs: list[NewJob]) -> tuple[list[Job], float]:
        before = self.service.store.now()
        return self.service.submit_many(jobs), before


def _replayed(jobs: list[Job], before: float) -> bool:
    """True when every job existed before this commit (an idempotent replay)."""
    return all(j.idempotency_key is not None and j.created_at.timestamp() < before for j in jobs)


def _request_error(exc: Exception) -> bool:
    """An error caused by what one request asked (bad input, unknown kind, reused key)."""
    return isinstance(exc, errors.ConveyorError) and 400 <= exc.status < 500


def _answer(item: _Pending, outcome: tuple[list[Job], bool] | Exception) -> None:
    if item.future.done():  # the client went away; its jobs are committed all the same
        return
    if isinstance(outcome, Exception):
        item.future.set_exception(outcome)
    else:
        item.future.set_result(outcome)
