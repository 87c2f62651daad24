"""Whether any live worker serves a kind in a queue: a job nobody can run gets a warning
(submit response, CLI, dashboard) instead of waiting silently.

A worker serves a job when it is running (not draining), beat recently, listens on the job's
queue and imported the job's kind (it claims no other kinds). Records of workers from before
workers listed their kinds (`kinds == []`) count as serving every kind of their queues.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from conveyor.models import Job, WorkerInfo, utcnow
from conveyor.states import WAITING_STATES

#: A worker that has not beat for this long is gone (they beat every heartbeat, ~2 s).
LIVE_S = 30.0
#: How long one read of the worker records answers for (submits are a hot path).
CACHE_S = 1.0


def serves(worker: WorkerInfo, kind: str, queue: str, now: datetime) -> bool:
    return (
        worker.state == "running"
        and now - worker.last_seen <= timedelta(seconds=LIVE_S)
        and queue in worker.queues
        and (not worker.kinds or kind in worker.kinds)
    )


def warning(workers: Iterable[WorkerInfo], kind: str, queue: str) -> str | None:
    """Why a job of `kind` in `queue` will wait forever as things stand, or None."""
    now = utcnow()
    if any(serves(worker, kind, queue, now) for worker in workers):
        return None
    return (
        f"no live worker serves kind {kind!r} in queue {queue!r}: the job waits until one"
        f" starts (conveyor worker --import <the module declaring {kind}> --queues {queue})"
    )


class Watch:
    """`warning()` over the store's worker records, read at most once a second."""

    def __init__(self, read: Callable[[], Sequence[WorkerInfo]]) -> None:
        self._read = read
        self._workers: Sequence[WorkerInfo] = ()
        self._at = -CACHE_S

    @property
    def fresh(self) -> bool:
        """Whether `annotate` answers without reading the store (no need for a thread)."""
        return time.monotonic() - self._at < CACHE_S

    def workers(self, refresh: bool = True) -> Sequence[WorkerInfo]:
        if refresh and time.monotonic() - self._at >= CACHE_S:
            self._workers = self._read()
            self._at = time.monotonic()
        return self._workers

    def annotate(self, jobs: Sequence[Job], refresh: bool = True) -> list[Job]:
        """`jobs` with `warning` set on those still waiting that no live worker serves
        (`refresh=False`: from the records read last, never blocking on the store)."""
        out = []
        for job in jobs:
            text = None
            if job.state in WAITING_STATES:
                text = warning(self.workers(refresh), job.kind, job.queue)
            out.append(job.model_copy(update={"warning": text}) if text else job)
        return out
