"""Flow control over a store: schedules, limits and queue controls, with the views the API,
the CLI and the dashboard show. `Controls` is a `Service` with these operations on top, so
the CLI's local backend and the API's routes share one implementation."""

from __future__ import annotations

from collections import Counter
from datetime import datetime

from conveyor import errors, limits
from conveyor.limits import KeyUsage, LimitView
from conveyor.models import Job, JobFilter, JobState, Limit, QueueStats
from conveyor.schedules.model import NewSchedule, ScheduleView
from conveyor.schedules.service import Schedules
from conveyor.service import Service

#: Jobs counted behind a limit at most (the count says "this many or more" beyond it).
COUNT_CAP = 1000
TOP_KEYS = 10


class Controls:
    """Schedules, limits and queue controls over a `Service` (its store, and its kinds to
    validate a schedule's input)."""

    def __init__(self, service: Service) -> None:
        self.store = service.store
        self._service = service
        self._schedules = Schedules(service)

    # -- schedules -----------------------------------------------------------------------------

    def schedules(self) -> list[ScheduleView]:
        return self._schedules.all()

    def schedule(self, schedule_id: str) -> ScheduleView:
        return self._schedules.get(schedule_id)

    def create_schedule(self, new: NewSchedule) -> ScheduleView:
        return self._schedules.create(new)

    def put_schedule(self, new: NewSchedule) -> ScheduleView:
        return self._schedules.put(new)

    def delete_schedule(self, schedule_id: str) -> None:
        self._schedules.delete(schedule_id)

    def pause_schedule(self, schedule_id: str) -> ScheduleView:
        return self._schedules.pause(schedule_id, True)

    def resume_schedule(self, schedule_id: str) -> ScheduleView:
        return self._schedules.pause(schedule_id, False)

    def schedule_runs(self, schedule_id: str, n: int = 10) -> list[datetime]:
        return self._schedules.next_runs(schedule_id, n)

    # -- limits --------------------------------------------------------------------------------

    def limits(self) -> list[LimitView]:
        sources = dict(self.store.list_records(limits.SOURCES))
        stats = {q.name: q for q in self.store.queue_stats()}
        return [
            self._limit_view(lim, sources.get(lim.target), stats) for lim in self.store.limits()
        ]

    def limit(self, target: str) -> LimitView:
        found = next((v for v in self.limits() if v.target == target), None)
        if found is None:
            raise errors.LimitNotFoundError(f"no limit on {target!r}", target=target)
        return found

    def set_limit(self, limit: Limit, by: str = "local") -> LimitView:
        limits.set_by_admin(self.store, limit, by)
        return self.limit(limit.target)

    def delete_limit(self, target: str) -> None:
        if not limits.delete(self.store, target):
            raise errors.LimitNotFoundError(f"no limit on {target!r}", target=target)

    def _limit_view(
        self, limit: Limit, source: dict[str, object] | None, stats: dict[str, QueueStats]
    ) -> LimitView:
        source = source or {}
        origin = source.get("source")
        declared = source.get("declared")
        view = LimitView(
            **limit.model_dump(),
            source=origin if origin in ("code", "admin") else None,
            by=str(source["by"]) if source.get("by") else None,
            declared=Limit.model_validate(declared)
            if isinstance(declared, dict) and origin == "admin"
            else None,
        )
        if limit.scope == "queue":
            queue = stats.get(limit.name)
            if queue is not None:
                view.running, view.waiting = queue.running, queue.queued
            view.held = self._held(JobFilter(queue=limit.name, state=[JobState.QUEUED]))
            return view
        running = self._jobs(JobFilter(kind=limit.name, state=[JobState.RUNNING]))
        waiting = self._jobs(JobFilter(kind=limit.name, state=[JobState.QUEUED]))
        view.running, view.waiting = len(running), len(waiting)
        view.held = sum(1 for job in waiting if job.waiting_reason is not None)
        if limit.scope == "key":
            run = Counter(j.concurrency_key for j in running if j.concurrency_key is not None)
            wait = Counter(j.concurrency_key for j in waiting if j.concurrency_key is not None)
            busiest = sorted(set(run) | set(wait), key=lambda k: (-run[k] - wait[k], k))
            view.keys = [KeyUsage(key=k, running=run[k], waiting=wait[k]) for k in busiest][
                :TOP_KEYS
            ]
        return view

    def _jobs(self, flt: JobFilter) -> list[Job]:
        return self.store.list_jobs(flt, None, COUNT_CAP).jobs

    def _held(self, flt: JobFilter) -> int:
        return sum(1 for job in self._jobs(flt) if job.waiting_reason is not None)

    # -- queues --------------------------------------------------------------------------------

    def pause_queue(self, queue: str) -> QueueStats:
        """Claims skip the queue until resumed; submits still land in it."""
        self.store.pause_queue(queue, True)
        return self.queue(queue)

    def resume_queue(self, queue: str) -> QueueStats:
        self.store.pause_queue(queue, False)
        return self.queue(queue)

    def purge_queue(self, queue: str) -> int:
        """Cancel every waiting job of the queue (reason `purged`); how many."""
        return self.store.purge_queue(queue)

    def kind_names(self) -> list[str]:
        """The registered kinds' names, sorted."""
        return sorted(self._service.kinds())

    def queue(self, queue: str) -> QueueStats:
        found = next((q for q in self.store.queue_stats() if q.name == queue), None)
        return found if found is not None else QueueStats(name=queue)
