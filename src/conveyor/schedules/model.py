"""Schedules as stored and shown: what to submit, when, and what to do when runs are late or
still going."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from conveyor.models import JSON, KindName, Model, QueueName, Tag
from conveyor.schedules.timing import Timing, check_cron, zone

# At most 190 characters, so the tag its jobs carry (`schedule:<id>`) is a valid tag.
ScheduleId = Annotated[str, Field(min_length=1, max_length=190, pattern=r"^[A-Za-z0-9_.:-]+$")]
Misfire = Literal["skip", "run_once", "catch_up"]
Overlap = Literal["allow", "forbid", "replace"]

#: Collections of the store's records: definitions (admins and code write them) and the
#: tickers' progress (tickers write it), kept apart so a ticker never overwrites an admin's edit.
SCHEDULES = "schedules"
STATES = "schedule_state"


class ScheduleFields(Model):
    """What a schedule runs and when: the body of `POST /v1/schedules` without the id."""

    kind: KindName
    input: JSON = Field(default_factory=dict)
    queue: QueueName | None = Field(None, description="Default: the kind's queue.")
    priority: int = Field(0, ge=-1000, le=1000)
    tags: list[Tag] = Field(
        default_factory=list, max_length=49, description="Its jobs also get `schedule:<id>`."
    )
    cron: str | None = Field(
        None,
        max_length=200,
        description="A cron expression (5 fields, or 6 with seconds first; `@daily` etc.).",
    )
    timezone: str = Field("UTC", max_length=100, description="IANA time zone of `cron`.")
    every_s: int | None = Field(
        None, ge=1, le=366 * 86400, description="Or: every this many seconds (from the epoch)."
    )
    misfire: Misfire = Field(
        "run_once",
        description="Ticks missed for longer than `misfire_grace_s` (e.g. nothing was running):"
        " `skip` them, `run_once` (one job for the latest), or `catch_up` (one job per missed"
        " tick, the latest `catch_up_max`).",
    )
    catch_up_max: int = Field(10, ge=1, le=1000, description="At most this many missed ticks.")
    misfire_grace_s: float = Field(
        30.0, ge=0, le=86400, description="A tick this late still runs as usual."
    )
    overlap: Overlap = Field(
        "allow",
        description="When the previous run has not finished: `allow` another, `forbid` (skip"
        " this tick), or `replace` (cancel the previous run, then start this one).",
    )
    paused: bool = False
    description: str = Field("", max_length=1000)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else check_cron(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleFields:
        if (self.cron is None) == (self.every_s is None):
            raise ValueError("give exactly one of `cron` and `every_s`")
        return self

    def timing(self) -> Timing:
        return Timing(self.cron, self.timezone, self.every_s)


class NewSchedule(ScheduleFields):
    """A schedule to create: an id and what it runs when."""

    id: ScheduleId


class Schedule(NewSchedule):
    """A stored schedule."""

    source: Literal["api", "code"] = Field(
        "api", description="`code`: declared on a kind; workers register it at start."
    )
    created_at: datetime
    updated_at: datetime


class ScheduleState(Model):
    """What the tickers did last (written by them; read-only for users)."""

    last_tick: datetime | None = Field(None, description="The latest tick handled.")
    last_job_id: str | None = None
    skipped: int = Field(0, description="Ticks skipped (misfire `skip`, overlap `forbid`).")
    last_error: str | None = Field(None, description="Why the latest tick made no job.")


class ScheduleView(Schedule):
    """A schedule, what its tickers did last and when it runs next."""

    state: ScheduleState = Field(default_factory=ScheduleState)
    explain: str = Field("", description="The timing in words.")
    next_runs: list[datetime] = Field(default_factory=list)
