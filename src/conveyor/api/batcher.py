"""Group commit for submits: concurrent requests share one store transaction.

Each durable commit costs an fsync, so enqueueing requests one by one caps throughput at the
disk's sync rate. A dedicated writer thread takes every request waiting when it is free and
commits them together: one `submit_many` (one transaction, one fsync) for all of them, each
answered only after that commit. Under no load a request is committed alone, at once. The
thread runs commits back to back without waiting for the event loop in between, which stays
free to parse the next requests meanwhile.

If the combined commit is refused because of what one request asked (bad input, an unknown
kind, an idempotency conflict, the same key twice), each request is committed on its own so it
gets its own answer and nobody else's error; if the store itself fails, all get that error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sys
import threading
from dataclasses import dataclass

from conveyor import errors
from conveyor.models import Job, NewJob
from conveyor.service import MAX_BATCH, Service
from conveyor.telemetry import tracing

log = logging.getLogger("conveyor.api")

SWITCH_INTERVAL_S = 0.001

Outcome = tuple[list[Job], bool] | BaseException


@dataclass
class _Pending:
    jobs: list[NewJob]
    future: asyncio.Future[tuple[list[Job], bool]]
    loop: asyncio.AbstractEventLoop


class SubmitBatcher:
    """One per app; `await submit(jobs)` -> (jobs, every job already existed)."""

    def __init__(self, service: Service, max_jobs: int = MAX_BATCH) -> None:
        self.service = service
        self.max_jobs = max_jobs
        self._queue: queue.SimpleQueue[_Pending] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def submit(self, jobs: list[NewJob]) -> tuple[list[Job], bool]:
        loop = asyncio.get_running_loop()
        if tracing.ENABLED:  # the commit runs on another thread: the jobs carry the request's trace
            from conveyor.telemetry import spans

            jobs = spans.stamp(jobs)
        item = _Pending(jobs, loop.create_future(), loop)
        self._queue.put(item)
        self._ensure_thread()
        return await item.future

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    # The writer thread and the event loop share the GIL; Python's default
                    # 5 ms switch interval makes every handoff between them (several per
                    # commit) cost up to 5 ms. 1 ms roughly doubles submits/s under load.
                    sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
                    self._thread = threading.Thread(
                        target=self._run, name="conveyor-submit", daemon=True
                    )
                    self._thread.start()

    def _run(self) -> None:
        while True:
            group = [self._queue.get()]
            size = len(group[0].jobs)
            while size < self.max_jobs:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                group.append(item)
                size += len(item.jobs)
            try:
                self._commit(group)
            except Exception as exc:  # never let the writer thread die with requests waiting
                log.exception("submit commit failed")
                for item in group:
                    _answer(item, exc)

    def _commit(self, group: list[_Pending]) -> None:
        if len(group) > 1:
            try:
                created, before = self._enqueue([j for item in group for j in item.jobs])
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
                created, before = self._enqueue(item.jobs)
            except Exception as exc:
                _answer(item, exc)
            else:
                _answer(item, (created, _replayed(created, before)))

    def _enqueue(self, jobs: list[NewJob]) -> tuple[list[Job], float]:
        before = self.service.store.now()
        return self.service.submit_many(jobs), before


def _replayed(jobs: list[Job], before: float) -> bool:
    """True when every job existed before this commit (an idempotent replay, or the job a
    unique key already had)."""
    return all(
        (j.idempotency_key is not None or j.unique_key is not None)
        and j.created_at.timestamp() < before
        for j in jobs
    )


def _request_error(exc: Exception) -> bool:
    """An error caused by what one request asked (bad input, unknown kind, reused key)."""
    return isinstance(exc, errors.ConveyorError) and 400 <= exc.status < 500


def _answer(item: _Pending, outcome: Outcome) -> None:
    """Hand the outcome to the request's event loop (this runs on the writer thread)."""

    def settle() -> None:
        if item.future.done():  # the client went away; its jobs are committed all the same
            return
        if isinstance(outcome, BaseException):
            item.future.set_exception(outcome)
        else:
            item.future.set_result(outcome)

    with contextlib.suppress(RuntimeError):  # that loop has closed: nobody is waiting
        item.loop.call_soon_threadsafe(settle)
