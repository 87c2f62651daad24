"""Server-Sent Events for job event logs, fanned out from one follower of the store's feed.

However many clients watch jobs, the API process runs one task that reads the store-wide event
feed (`Store.feed`) every `interval` seconds while anyone watches, and hands each event to the
watchers of its job. A watcher first catches up from `Store.events(job, after)` (its
`Last-Event-ID`), so nothing is missed between the catch-up and the live feed; events are
deduplicated by `seq`. No watcher holds a database connection or polls on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool

from conveyor.models import JobEvent, JobState
from conveyor.store import Store

log = logging.getLogger("conveyor.api.sse")

FINAL = {s.value for s in JobState if s.is_final}
KEEPALIVE_S = 15.0
MAX_SEQ = (1 << 63) - 1  # event seqs are 64-bit integers in every store


def encode(event: JobEvent) -> bytes:
    """One SSE message: `id` is the event seq, `event` its type, `data` the JSON event."""
    data = event.model_dump_json()
    return f"id: {event.seq}\nevent: {event.type}\ndata: {data}\n\n".encode()


def comment(text: str) -> bytes:
    return f": {text}\n\n".encode()


def is_final(event: JobEvent) -> bool:
    return event.type == "state" and event.data.get("state") in FINAL


class FeedHub:
    """Follows the store's feed while there are watchers; delivers events per job."""

    def __init__(self, store: Store, interval: float = 0.002, batch: int = 1000) -> None:
        self.store = store
        self.interval = interval
        self.batch = batch
        self._watchers: dict[str, set[asyncio.Queue[JobEvent]]] = defaultdict(set)
        self._cursor: int | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def watching(self) -> int:
        return sum(len(queues) for queues in self._watchers.values())

    def subscribe(self, job_id: str) -> asyncio.Queue[JobEvent]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._watchers[job_id].add(queue)
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[JobEvent]) -> None:
        queues = self._watchers.get(job_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._watchers[job_id]

    def start(self, after: int) -> None:
        """Make sure the follower runs, reading from no later than `after`."""
        if self._cursor is None or after < self._cursor:
            self._cursor = after
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        idle = 0
        while idle < 250:  # stop after ~0.5 s without watchers; the next watcher restarts it
            if not self._watchers:
                idle += 1
                await asyncio.sleep(self.interval)
                continue
            idle = 0
            assert self._cursor is not None
            try:
                events = await run_in_threadpool(self.store.feed, self._cursor, self.batch)
            except Exception:  # a store hiccup must not kill every stream; retry shortly
                log.warning("reading the event feed failed; retrying", exc_info=True)
                await asyncio.sleep(0.5)
                continue
            for event in events:
                self._cursor = max(self._cursor, event.seq)
                for queue in self._watchers.get(event.job_id, ()):
                    queue.put_nowait(event)
            if len(events) < self.batch:
                await asyncio.sleep(self.interval)
        self._cursor = None

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def stream(hub: FeedHub, job_id: str, after: int, final: bool) -> AsyncIterator[bytes]:
    """SSE bytes for one job from `after` until the job ends (`final`: it already has)."""
    queue = hub.subscribe(job_id)
    try:
        last = after
        backlog = await run_in_threadpool(hub.store.events, job_id, after)
        while backlog:
            for event in backlog:
                last = event.seq
                yield encode(event)
                if is_final(event):
                    return
            if len(backlog) < 1000:
                break
            backlog = await run_in_threadpool(hub.store.events, job_id, last)
        if final:
            return  # ended, and every event after `after` has been sent
        hub.start(last)
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
            except TimeoutError:
                yield comment("keepalive")
                continue
            if event.seq <= last:
                continue
            last = event.seq
            yield encode(event)
            if is_final(event):
                return
    finally:
        hub.unsubscribe(job_id, queue)


def parse_last_event_id(value: str | None) -> int:
    """`Last-Event-ID` as a seq; anything unreadable means from the start, a number no store
    can hold (beyond 64 bits) is refused (422)."""
    try:
        seq = max(0, int(value)) if value else 0
    except ValueError:
        return 0
    if seq > MAX_SEQ:
        raise RequestValidationError(
            [{"loc": ["header", "Last-Event-ID"], "msg": f"must be at most {MAX_SEQ}",
              "type": "less_than_equal"}]
        )  # fmt: skip
    return seq
