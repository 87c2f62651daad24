"""The ticker: the loop that turns schedule ticks into jobs, in every worker process.

Each pass reads the schedules, works out which ticks are due, and enqueues one job per tick
with the idempotency key `schedule:<id>:<tick>`. The store makes a key exactly-once, so any
number of tickers (every `conveyor worker` and `conveyor up` runs one) make one job per tick
between them, and a ticker killed at any point loses nothing the others will not do.

A tick later than the schedule's `misfire_grace_s` (nothing ran the ticker meanwhile) is a
misfire: `skip` drops it, `run_once` makes one job for the latest missed tick, `catch_up` one
per missed tick (the latest `catch_up_max`). With `overlap` `forbid` a tick whose previous
run has not finished makes no job; `replace` cancels the previous run first.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ValidationError

from conveyor import errors
from conveyor.kinds.registry import registry
from conveyor.models import FINAL_STATES, Job, JobFilter, JobState, NewJob
from conveyor.schedules.model import SCHEDULES, STATES, Schedule
from conveyor.schedules.service import Schedules, read
from conveyor.schedules.timing import HORIZON_S
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import JobSpec, Store

log = logging.getLogger("conveyor.schedules")

#: At most this many ticks of one schedule per pass; the rest go in the next pass.
MAX_PER_PASS = 1000
#: A pass at least this often, so new and changed schedules start within it.
POLL_S = 1.0
#: After a failed pass, wait this long (doubling up to BACKOFF_MAX_S) before the next.
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
#: How many waiting or running jobs of a schedule an overlap check looks at.
ACTIVE_LOOKUP = 100
ACTIVE_STATES = [state for state in JobState if state not in FINAL_STATES]


def schedule_tag(schedule_id: str) -> str:
    """The tag every job of a schedule carries (`GET /v1/jobs?tag=schedule:<id>`)."""
    return f"schedule:{schedule_id}"


def tick_key(schedule_id: str, tick: float) -> str:
    """The idempotency key of a tick's job: the same in every process."""
    return f"schedule:{schedule_id}:{int(tick) if tick == int(tick) else tick!r}"


@dataclass
class PassReport:
    """What one pass did, per schedule id: jobs created, ticks another ticker had already
    made a job for, ticks skipped (misfire or overlap)."""

    created: dict[str, list[str]] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    next_tick: float | None = None


@dataclass
class Plan:
    """The ticks to make jobs for (oldest first), how many were skipped, and the latest tick
    dealt with either way (None: nothing to do)."""

    due: list[float]
    skipped: int
    handled: float | None


class Ticker:
    """Makes the jobs of every schedule in `service`'s store."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store: Store = service.store
        self._errors: dict[str, str] = {}  # last logged error per schedule, to log changes only
        # Parsed schedules by id, with the stored value they came from: parsed again only
        # when it changes. And per schedule, the first tick after the floor it was computed
        # for: a schedule with nothing due costs a comparison, not a cron walk.
        self._parsed: dict[str, tuple[dict[str, Any], Schedule]] = {}
        self._due: dict[str, tuple[Schedule, float, float | None]] = {}

    # -- one pass --------------------------------------------------------------------------

    def run_once(self) -> PassReport:
        """One pass over all schedules; safe to run in any number of processes at once."""
        report = PassReport()
        states = dict(self.store.list_records(STATES))
        now = self.store.now()
        seen = set()
        for key, value in self.store.list_records(SCHEDULES):
            seen.add(key)
            schedule = self._parse(key, value)
            if schedule is None or schedule.paused:
                continue
            state = states.get(key) or {}
            floor = _floor(schedule, state)
            due = self._first_after(schedule, floor)
            if due is not None and due <= now:
                try:
                    self._serve(schedule, state, floor, now, report)
                except errors.StoreUnavailableError:
                    raise  # the whole pass waits and retries
                except Exception as exc:  # one broken schedule must not hold up the others
                    self._log_error(schedule.id, f"{type(exc).__name__}: {exc}")
                    continue
                due = self._first_after(schedule, max(now, floor))
            if due is not None and (report.next_tick is None or due < report.next_tick):
                report.next_tick = due
        for gone in set(self._parsed) - seen:
            self._parsed.pop(gone, None)
            self._due.pop(gone, None)
        return report

    def _parse(self, key: str, value: dict[str, Any]) -> Schedule | None:
        cached = self._parsed.get(key)
        if cached is not None and cached[0] == value:
            return cached[1]
        schedule = read(key, value)
        if schedule is None:
            log.warning("schedule %r does not validate; ignored", key)
            return None
        self._parsed[key] = (value, schedule)
        return schedule

    def _first_after(self, schedule: Schedule, floor: float) -> float | None:
        """The first tick after `floor` (cached per schedule and floor)."""
        cached = self._due.get(schedule.id)
        if cached is not None and cached[0] is schedule and cached[1] == floor:
            return cached[2]
        found = schedule.timing().after(floor, floor + HORIZON_S, 1)
        first = found[0] if found else None
        self._due[schedule.id] = (schedule, floor, first)
        return first

    def _serve(
        self,
        schedule: Schedule,
        state: dict[str, Any],
        floor: float,
        now: float,
        report: PassReport,
    ) -> None:
        plan = plan_ticks(schedule, float(floor), now)
        if plan.handled is None:
            return
        update: dict[str, Any] = {"last_tick": plan.handled}
        skipped = plan.skipped
        for tick in plan.due:
            job, created, error = self._fire(schedule, tick, now)
            if job is None:
                skipped += 1
                if error is not None:
                    update["last_error"] = error
            elif created:
                report.created.setdefault(schedule.id, []).append(job.id)
                update.update(last_job_id=job.id, last_error=None)
            else:
                report.existing[schedule.id] = report.existing.get(schedule.id, 0) + 1
                update.update(last_job_id=job.id, last_error=None)
        if skipped:
            report.skipped[schedule.id] = skipped
            update["skipped"] = int(state.get("skipped", 0)) + skipped
        self.store.put_record(STATES, schedule.id, {**state, **update})

    def _fire(
        self, schedule: Schedule, tick: float, now: float
    ) -> tuple[Job | None, bool, str | None]:
        """Enqueue the tick's job, or find the one another ticker made: (job, created by this
        call, why no job). No job when the overlap policy forbids one, or on an error."""
        key = tick_key(schedule.id, tick)
        if schedule.overlap != "allow":
            active = self._active(schedule, key)
            if active and schedule.overlap == "forbid":
                return None, False, None
            for job in active:
                with contextlib.suppress(errors.InvalidStateError, errors.JobNotFoundError):
                    self.store.cancel(job.id)
        try:
            spec = self._spec(schedule, tick, key, now)
        except (errors.KindNotFoundError, errors.InvalidInputError, ValidationError) as exc:
            self._log_error(schedule.id, str(exc))
            return None, False, str(exc)
        self._errors.pop(schedule.id, None)
        job = self.store.enqueue([spec])[0]
        return job, job.id == spec.id, None

    def _active(self, schedule: Schedule, key: str) -> list[Job]:
        page = self.store.list_jobs(
            JobFilter(state=ACTIVE_STATES, tag=schedule_tag(schedule.id)), None, ACTIVE_LOOKUP
        )
        return [job for job in page.jobs if job.idempotency_key != key]

    def _spec(self, schedule: Schedule, tick: float, key: str, now: float) -> JobSpec:
        new = NewJob(
            kind=schedule.kind,
            input=schedule.input,
            queue=schedule.queue,
            priority=schedule.priority,
            tags=[*schedule.tags, schedule_tag(schedule.id)],
        )
        spec = self.service.prepare([new])[0]
        return replace(
            spec,
            idempotency_key=key,
            # Every ticker asks the same for a tick: a fixed fingerprint, never a conflict.
            request_hash=hashlib.sha256(key.encode()).hexdigest(),
            idempotency_window_s=self._window(schedule, tick, now),
            schedule_id=schedule.id,
            schedule_tick=tick,
        )

    def _window(self, schedule: Schedule, tick: float, now: float) -> float:
        """How long the tick's key must be kept: the settings' window, plus as long as a ticker
        planning from an older state may still choose this tick. That is until the K-th tick
        after it is missed too (K = the ticks the misfire policy keeps: 0, 1 or catch_up_max),
        so a catch-up of ticks days old can never make one of them twice."""
        keep = kept(schedule)
        later = schedule.timing().after(tick, tick + HORIZON_S, keep) if keep else []
        last_chance = (later[-1] if later else tick) + schedule.misfire_grace_s
        return self.service.idempotency_window_s + max(0.0, last_chance - now)

    def _log_error(self, schedule_id: str, message: str) -> None:
        if self._errors.get(schedule_id) != message:
            self._errors[schedule_id] = message
            log.warning("schedule %r made no job: %s", schedule_id, message)

    # -- the loop --------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set: at each tick, and at least every POLL_S.
        A failing pass (the store is down) is logged and retried with backoff; the loop only
        ends when told to."""
        backoff = BACKOFF_S
        while not stop.is_set():
            try:
                report = self.run_once()
            except Exception as exc:
                log.warning("schedule ticker pass failed (%s); retrying in %.1fs", exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_S
            wait = POLL_S
            if report.next_tick is not None:
                wait = min(wait, max(0.0, report.next_tick - self.store.now()))
            stop.wait(wait + 0.001)  # a hair after the tick, so it is due when we look


def _floor(schedule: Schedule, state: dict[str, Any]) -> float:
    """The latest tick handled (ticks after it are due), or the schedule's creation."""
    floor = state.get("last_tick")
    return float(floor) if isinstance(floor, int | float) else schedule.created_at.timestamp()


def kept(schedule: Schedule) -> int:
    """How many missed ticks the misfire policy makes jobs for."""
    return {"skip": 0, "run_once": 1, "catch_up": schedule.catch_up_max}[schedule.misfire]


def plan_ticks(schedule: Schedule, floor: float, now: float) -> Plan:
    """Which ticks after `floor` (the latest handled) get a job now, by the misfire and
    overlap policies."""
    timing = schedule.timing()
    edge = now - schedule.misfire_grace_s
    on_time = timing.after(max(floor, edge), now, MAX_PER_PASS)
    missed: list[float] = []
    skipped = 0
    newest_missed: float | None = None
    if floor < edge:
        keep = kept(schedule)
        if schedule.misfire == "run_once" and on_time:
            keep = 0  # the tick on time is the one run
        latest = timing.before(edge, floor, keep + MAX_PER_PASS)  # newest first
        newest_missed = latest[0] if latest else None
        missed = latest[:keep][::-1]
        skipped = len(latest) - len(missed)
    due = missed + on_time
    handled = max([*due[-1:], *([] if newest_missed is None else [newest_missed])], default=None)
    if schedule.overlap != "allow" and len(due) > 1:
        skipped += len(due) - 1  # one run at a time: only the latest tick matters
        due = due[-1:]
    return Plan(due, skipped, handled)


@contextlib.contextmanager
def background(
    settings: Settings, store: Store, *, enabled: bool = True
) -> Iterator[Ticker | None]:
    """Register the schedules declared in code, then run a ticker in a thread for the duration
    of the block (`conveyor worker` / `up`; off with `enabled=False` or CONVEYOR_SCHEDULER=0).

    The ticker has a store connection of its own, so a slow pass never holds up the worker's
    claims and heartbeats (an in-memory store cannot be opened twice: then it shares it).
    """
    storage = open_storage(settings.storage_url)
    window = settings.idempotency_window_s
    Schedules(Service(store, storage, idempotency_window_s=window)).register(registry.schedules())
    if not enabled or not settings.scheduler:
        yield None
        return
    own = store if settings.store_url.startswith("memory") else open_store(settings.store_url)
    ticker = Ticker(Service(own, storage, idempotency_window_s=window))
    stop = threading.Event()
    thread = threading.Thread(target=ticker.run, args=(stop,), daemon=True, name="schedule-ticker")
    thread.start()
    try:
        yield ticker
    finally:
        stop.set()
        thread.join(timeout=10)
        if own is not store:
            own.close()


__all__: Sequence[str] = (
    "PassReport",
    "Plan",
    "Ticker",
    "background",
    "plan_ticks",
    "schedule_tag",
    "tick_key",
)
