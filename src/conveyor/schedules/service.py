"""Creating, changing, pausing and previewing schedules (the API, CLI and dashboard use it).

A schedule is two store records: its definition (`schedules`, written here) and its tickers'
progress (`schedule_state`, written by the tickers). Changing a schedule takes effect at the
next pass of every ticker, within a second: no worker restarts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from conveyor import errors
from conveyor.models import from_ts
from conveyor.schedules.model import (
    SCHEDULES,
    STATES,
    NewSchedule,
    Schedule,
    ScheduleFields,
    ScheduleState,
    ScheduleView,
)
from conveyor.schedules.timing import explain
from conveyor.service import Service

PREVIEW_MAX = 100
NEXT_RUNS_SHOWN = 5


class Schedules:
    """Schedule operations over a `Service` (its store, and its kinds to validate input)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store

    # -- reading -------------------------------------------------------------------------------

    def all(self) -> list[ScheduleView]:
        states = dict(self.store.list_records(STATES))
        now = self.store.now()
        views = []
        for key, value in self.store.list_records(SCHEDULES):
            schedule = read(key, value)
            if schedule is not None:
                views.append(self._view(schedule, states.get(key), now))
        return views

    def get(self, schedule_id: str) -> ScheduleView:
        schedule = self._load(schedule_id)
        return self._view(schedule, self.store.get_record(STATES, schedule_id), self.store.now())

    def next_runs(self, schedule_id: str, n: int = 10) -> list[datetime]:
        """The next `n` times it fires (whether or not it is paused)."""
        schedule = self._load(schedule_id)
        return _times(schedule.timing().upcoming(self.store.now(), max(1, min(n, PREVIEW_MAX))))

    @staticmethod
    def preview(fields: ScheduleFields, now: float, n: int = 10) -> list[datetime]:
        """The next `n` times a schedule not yet saved would fire."""
        return _times(fields.timing().upcoming(now, max(1, min(n, PREVIEW_MAX))))

    # -- changing ------------------------------------------------------------------------------

    def create(self, new: NewSchedule) -> ScheduleView:
        """Create a schedule; `AlreadyExistsError` if the id is taken."""
        if self.store.get_record(SCHEDULES, new.id) is not None:
            raise errors.AlreadyExistsError(
                f"a schedule {new.id!r} already exists; PUT /v1/schedules/{new.id} replaces it",
                schedule_id=new.id,
            )
        return self._save(new, None)

    def put(self, new: NewSchedule) -> ScheduleView:
        """Create a schedule, or replace the definition of the one with this id."""
        return self._save(new, self._stored(new.id))

    def delete(self, schedule_id: str) -> None:
        """Delete a schedule (its jobs stay). A schedule declared in code comes back when a
        worker that declares it starts: pause it instead, or remove it from the code."""
        if not self.store.delete_record(SCHEDULES, schedule_id):
            raise _not_found(schedule_id)
        self.store.delete_record(STATES, schedule_id)

    def pause(self, schedule_id: str, paused: bool = True) -> ScheduleView:
        """Pause (no jobs) or resume. Ticks passed while paused are not made up for."""
        schedule = self._load(schedule_id)
        if paused != schedule.paused:
            now = self.store.now()
            value = schedule.model_dump(mode="json")
            value.update(paused=paused, updated_at=now_iso(now))
            if not paused:
                # Resumed: what passed while paused was skipped on purpose, not missed.
                state = self.store.get_record(STATES, schedule_id) or {}
                self.store.put_record(STATES, schedule_id, {**state, "last_tick": now})
            self.store.put_record(SCHEDULES, schedule_id, value)
        return self.get(schedule_id)

    def register(self, declared: Sequence[NewSchedule]) -> None:
        """Register schedules declared in code (workers do at start). A changed declaration
        replaces the stored one; whether an admin paused it is kept."""
        for new in declared:
            stored = self._stored(new.id)
            if stored is not None:
                new = new.model_copy(update={"paused": stored.paused})
                if _fields(stored) == _fields(new) and stored.source == "code":
                    continue
            self._save(new, stored, source="code", check=False)

    # -- helpers -------------------------------------------------------------------------------

    def _save(
        self,
        new: NewSchedule,
        stored: Schedule | None,
        *,
        source: str = "api",
        check: bool = True,
    ) -> ScheduleView:
        if check:
            kind = self.service.kind(new.kind)
            self.service.validate(kind, new.input)
        now = self.store.now()
        created = stored.created_at if stored is not None else from_ts(now)
        schedule = Schedule(
            **new.model_dump(), source=source, created_at=created, updated_at=from_ts(now)
        )
        if stored is None or _when(stored) != _when(new):
            # Its first tick is the first one after it was created (or its timing changed):
            # the ticks of before are not missed.
            state = self.store.get_record(STATES, new.id) or {}
            self.store.put_record(STATES, new.id, {**state, "last_tick": now})
        self.store.put_record(SCHEDULES, new.id, schedule.model_dump(mode="json"))
        return self._view(schedule, self.store.get_record(STATES, new.id), now)

    def _stored(self, schedule_id: str) -> Schedule | None:
        value = self.store.get_record(SCHEDULES, schedule_id)
        return None if value is None else read(schedule_id, value)

    def _load(self, schedule_id: str) -> Schedule:
        found = self._stored(schedule_id)
        if found is None:
            raise _not_found(schedule_id)
        return found

    @staticmethod
    def _view(schedule: Schedule, state: dict[str, Any] | None, now: float) -> ScheduleView:
        timing = schedule.timing()
        return ScheduleView(
            **schedule.model_dump(),
            state=read_state(state),
            explain=explain(schedule.cron) if schedule.cron else f"Every {schedule.every_s}s",
            next_runs=[] if schedule.paused else _times(timing.upcoming(now, NEXT_RUNS_SHOWN)),
        )


def read(key: str, value: dict[str, Any]) -> Schedule | None:
    """A stored schedule, or None (logged by the caller's absence) if it no longer validates."""
    try:
        return Schedule.model_validate({**value, "id": key})
    except ValidationError:
        return None


def read_state(value: dict[str, Any] | None) -> ScheduleState:
    value = value or {}
    return ScheduleState(
        last_tick=from_ts(value.get("last_tick")),
        last_job_id=value.get("last_job_id"),
        skipped=int(value.get("skipped", 0)),
        last_error=value.get("last_error"),
    )


def _fields(schedule: NewSchedule) -> NewSchedule:
    return NewSchedule.model_validate(schedule.model_dump(include=set(NewSchedule.model_fields)))


def _when(schedule: NewSchedule) -> tuple[str | None, str, int | None]:
    return schedule.cron, schedule.timezone, schedule.every_s


def now_iso(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).isoformat()


def _times(ticks: Sequence[float]) -> list[datetime]:
    return [t for t in map(from_ts, ticks) if t is not None]


def _not_found(schedule_id: str) -> errors.ScheduleNotFoundError:
    return errors.ScheduleNotFoundError(
        f"no schedule {schedule_id!r}; `conveyor schedules list` shows them",
        schedule_id=schedule_id,
    )
