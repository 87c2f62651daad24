"""Where jobs go, learned from the store's event feed.

Every job's first event carries its queue and whether it has a webhook of its own
(`base.created_event`), so a reader following the feed (the webhook dispatcher, the dashboard's
activity chart) knows where each job's later events belong without reading the job back. Only
jobs created before the reader started, or forgotten since, are looked up.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from conveyor.models import JobEvent
from conveyor.store.base import Store, jobs_by_id


@dataclass(frozen=True, slots=True)
class Route:
    queue: str
    webhook: bool
    """The job carries a webhook of its own."""


class Routes:
    """Job id → `Route`, for the `size` jobs seen most recently."""

    def __init__(self, store: Store, size: int = 50_000) -> None:
        self.store = store
        self.size = size
        self._known: dict[str, Route] = {}

    def of(self, events: Sequence[JobEvent], ids: Iterable[str]) -> dict[str, Route]:
        """The routes of `ids` (deleted jobs have none), learning first from `events`."""
        for event in events:
            queue = event.data.get("queue") if event.type == "state" else None
            if isinstance(queue, str) and event.job_id not in self._known:
                self._remember(event.job_id, Route(queue, bool(event.data.get("webhook"))))
        wanted = list(dict.fromkeys(ids))
        unknown = (job_id for job_id in wanted if job_id not in self._known)
        for job in jobs_by_id(self.store, unknown).values():
            self._remember(job.id, Route(job.queue, job.webhook is not None))
        return {job_id: route for job_id in wanted if (route := self._known.get(job_id))}

    def _remember(self, job_id: str, route: Route) -> None:
        self._known[job_id] = route
        while len(self._known) > self.size:
            del self._known[next(iter(self._known))]  # the oldest
