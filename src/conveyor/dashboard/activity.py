"""The last hour of activity per queue, followed from the store's event feed.

One background task per API process reads `Store.feed` in batches (the same durable event log
the SSE streams and webhooks follow) and counts, per minute and queue, the attempts that ended:
`succeeded`, `failed` (final), `retried` (an attempt failed, another follows) and `cancelled`.
A job's queue comes from its first event (`store.routes`); only jobs created before the reader
started are looked up. Queue depths seen by the overview's polls (`record`) make the depth
chart.

On start it seeks the feed to one hour ago by binary search over `seq` (about 2·log2(n) tiny
reads), reading back at most `max_backfill` events so a busy store does not stall the overview.
The task stops after `idle_s` without anyone looking at the overview and resumes on the next
view, so an unwatched dashboard costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from conveyor.models import JobEvent, QueueStats
from conveyor.store import Store
from conveyor.store.routes import Routes

log = logging.getLogger("conveyor.dashboard")

WINDOW_MIN = 60
OUTCOMES = ("succeeded", "failed", "retried", "cancelled")


@dataclass
class Minute:
    """What happened in one queue during one minute."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    depth: int | None = None

    @property
    def finished(self) -> int:
        return self.counts["succeeded"] + self.counts["failed"] + self.counts["cancelled"]

    @property
    def failure_rate(self) -> float | None:
        failed = self.counts["failed"] + self.counts["retried"]
        attempts = failed + self.counts["succeeded"]
        return None if attempts == 0 else round(failed / attempts * 100, 1)


def outcome(event: JobEvent) -> str | None:
    """Which ended attempt a state event records, if any."""
    if event.type != "state":
        return None
    state = event.data.get("state")
    if state in ("succeeded", "failed", "cancelled"):
        return str(state)
    if state == "scheduled" and "error" in event.data:
        return "retried"
    return None


def _first_at(store: Store, after: int) -> float | None:
    found = store.feed(after, 1)
    return found[0].at.timestamp() if found else None


def seek(store: Store, since: float, max_backfill: int) -> int:
    """A feed cursor just before the first event at or after `since` (events are appended in
    time order), but no more than `max_backfill` events before the end."""
    hi = 1
    while _first_at(store, hi) is not None:
        hi *= 2
    lo_end, hi_end = hi // 2, hi  # the last event's seq is in [lo_end, hi_end)
    while lo_end + 1 < hi_end:
        mid = (lo_end + hi_end) // 2
        lo_end, hi_end = (mid, hi_end) if _first_at(store, mid) is not None else (lo_end, mid)
    last = lo_end + 1 if _first_at(store, lo_end) is not None else lo_end
    lo, hi = max(0, last - max_backfill), last
    while lo < hi:  # smallest cursor whose next event is at or after `since`
        mid = (lo + hi) // 2
        at = _first_at(store, mid)
        lo, hi = (mid + 1, hi) if at is not None and at < since else (lo, mid)
    return lo


class Activity:
    """Per-minute counters for the last hour; `touch()` on each overview view keeps it going."""

    def __init__(
        self,
        store: Store,
        *,
        interval: float = 1.0,
        batch: int = 2000,
        idle_s: float = 300.0,
        max_backfill: int = 100_000,
        stats_min_s: float = 1.5,
    ) -> None:
        self.store = store
        self.routes = Routes(store)
        self.interval, self.batch = interval, batch
        self.idle_s, self.max_backfill = idle_s, max_backfill
        self.minutes: dict[int, dict[str, Minute]] = defaultdict(dict)
        self.cursor: int | None = None
        self.last_view = 0.0
        self.stats_min_s = stats_min_s
        self._stats: list[QueueStats] | None = None
        self._stats_due = 0.0
        self._stats_lock = threading.Lock()
        self._refreshing = False
        self._task: asyncio.Task[None] | None = None

    def touch(self) -> None:
        """Note a view and make sure the follower runs."""
        self.last_view = time.monotonic()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            if self.cursor is None:
                since = time.time() - WINDOW_MIN * 60
                self.cursor = await run_in_threadpool(seek, self.store, since, self.max_backfill)
            while time.monotonic() - self.last_view < self.idle_s:
                count = await run_in_threadpool(self.step)
                if count < self.batch:
                    await asyncio.sleep(self.interval)
        except Exception:  # the overview must survive a store hiccup: log it, retry on view
            log.warning("following the event feed for the overview failed", exc_info=True)

    def step(self) -> int:
        """Read one batch of the feed; return how many events it had."""
        assert self.cursor is not None
        events = self.store.feed(self.cursor, self.batch)
        if not events:
            return 0
        self.cursor = events[-1].seq
        ended = [(e, kind) for e in events if (kind := outcome(e)) is not None]
        if ended:
            routes = self.routes.of(events, (e.job_id for e, _ in ended))
            for event, kind in ended:
                minute = int(event.at.timestamp() // 60)
                route = routes.get(event.job_id)
                queue = "(deleted)" if route is None else route.queue
                self.minutes[minute].setdefault(queue, Minute()).counts[kind] += 1
        self._forget()
        return len(events)

    def queue_stats(self) -> list[QueueStats]:
        """The store's queue stats, shared by every viewer of this process. They are asked
        again only after max(`stats_min_s`, 5 times the last query's time), so a store whose
        counts are slow (millions of jobs) is not kept busy by open overview pages, and in the
        background: a view gets the last answer at once (only the very first one waits)."""
        with self._stats_lock:
            cached = self._stats
            due = cached is not None and time.monotonic() >= self._stats_due
            if due and not self._refreshing:
                self._refreshing = True
                threading.Thread(target=self._refresh, name="conveyor-queue-stats").start()
        if cached is None:
            return self._refresh()
        return cached

    def _refresh(self) -> list[QueueStats]:
        began = time.monotonic()
        try:
            stats = self.store.queue_stats()
        except Exception:
            with self._stats_lock:
                self._refreshing = False
            if self._stats is None:
                raise
            log.warning("refreshing the queue stats failed; showing the last ones", exc_info=True)
            return self._stats
        with self._stats_lock:
            self._stats = stats
            self._stats_due = began + max(self.stats_min_s, 5 * (time.monotonic() - began))
            self._refreshing = False
        self.record(stats)
        return stats

    def record(self, queues: list[QueueStats]) -> None:
        """Note each queue's depth (queued + scheduled) in the current minute."""
        minute = int(time.time() // 60)
        for stats in queues:
            cell = self.minutes[minute].setdefault(stats.name, Minute())
            cell.depth = stats.queued + stats.scheduled

    def _forget(self) -> None:
        oldest = int(time.time() // 60) - WINDOW_MIN
        for minute in [m for m in self.minutes if m <= oldest]:
            del self.minutes[minute]

    def series(self, queue: str | None = None) -> list[Minute]:
        """The last hour, one `Minute` per minute (oldest first), for a queue or all of them."""
        now = int(time.time() // 60)
        result = []
        for minute in range(now - WINDOW_MIN + 1, now + 1):
            cells = self.minutes.get(minute, {})
            chosen = [c for q, c in cells.items() if queue is None or q == queue]
            total = Minute()
            for cell in chosen:
                for key, value in cell.counts.items():
                    total.counts[key] += value
                if cell.depth is not None:
                    total.depth = (total.depth or 0) + cell.depth
            result.append(total)
        return result

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
