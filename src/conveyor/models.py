"""The domain: jobs, their states, kinds, events and workers. Pydantic models, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Re-exported: the states live apart so that the CLI starts without pydantic models.
from conveyor.states import FINAL_STATES as FINAL_STATES
from conveyor.states import NOT_STARTED_STATES as NOT_STARTED_STATES
from conveyor.states import WAITING_STATES as WAITING_STATES
from conveyor.states import JobState as JobState

JSON = Any
"""Any JSON-serializable value."""

QueueName = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
KindName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")]
Tag = Annotated[str, Field(min_length=1, max_length=200)]


WaitingReason = Literal["queue_paused", "concurrency_limited", "rate_limited"]
"""Why a queued job is held back: its queue is paused, a `max_running` is reached, or a rate
limit has no slot free."""
LimitStrategy = Literal["queue", "cancel_newest", "cancel_in_progress"]
UniqueScope = Literal["waiting", "active"]
"""Unique jobs: a duplicate is one still waiting (`waiting`), or waiting or running
(`active`)."""
LIMIT_TARGET = r"^(queue|kind|key):[A-Za-z0-9_.:-]{1,200}$"


def utcnow() -> datetime:
    return datetime.now(UTC)


M = TypeVar("M", bound=BaseModel)


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def trusted(cls: type[M], values: dict[str, Any]) -> M:
    """Build a model from complete, already-valid data without validation (the hot path).

    Like `model_construct`, minus its per-field alias and default handling: `values` must hold
    every field. Stores use it for rows they wrote themselves.
    """
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", values)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", None)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Progress(Model):
    """How far a running job is; `total` may be unknown."""

    current: float = 0
    total: float | None = None
    message: str | None = None


class JobError(Model):
    """Why an attempt (or the job) failed."""

    type: str = Field(description="Exception class name, or a reason such as `worker_lost`.")
    message: str = ""
    traceback: str | None = None
    reason: str = Field(
        "error",
        description="error | timeout | worker_lost | cancelled | invalid_input | invalid_output",
    )


class Lease(Model):
    owner: str
    token: str
    expires_at: datetime


class RetryPolicy(Model):
    """Exponential backoff with full jitter between `base_s` and a cap."""

    max_attempts: int = Field(3, ge=1, le=1000)
    backoff_s: float = Field(1.0, ge=0, le=86_400)
    backoff_max_s: float = Field(3_600.0, ge=0, le=7 * 86_400)


class NewJob(Model):
    """A job to enqueue. Defaults not given here come from the kind."""

    kind: KindName
    input: JSON = Field(default_factory=dict)
    queue: QueueName | None = None
    priority: int = Field(0, ge=-1000, le=1000, description="Higher runs first.")
    run_at: datetime | None = Field(None, description="Do not start before this time.")
    delay_s: float | None = Field(None, ge=0, le=366 * 86_400, description="Or: start after this.")
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout_s: float | None = Field(None, gt=0, le=7 * 86_400)
    backoff_s: float | None = Field(None, ge=0, le=86_400)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)
    webhook: dict[str, Any] | None = None
    unique_key: str | None = Field(
        None,
        min_length=1,
        max_length=255,
        description="A job with this key in `unique_scope` is returned instead of a new one.",
    )
    unique_scope: UniqueScope = Field(
        "active", description="`waiting`: duplicates of a waiting job; `active`: or running."
    )
    unique_window_s: float | None = Field(
        None, gt=0, le=366 * 86_400, description="Only jobs created this recently count."
    )

    @field_validator(
        "priority", "delay_s", "max_attempts", "timeout_s", "backoff_s", "unique_window_s",
        mode="before",
    )  # fmt: skip
    @classmethod
    def _no_booleans(cls, value: Any) -> Any:
        # JSON's true/false are not numbers, though Python's bool is an int subclass.
        if isinstance(value, bool):
            raise ValueError("expected a number, not a boolean")
        return value


class Job(Model):
    """One run of a kind, with everything known about it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    kind: str
    queue: str
    state: JobState
    input: JSON = None
    priority: int = 0
    run_at: datetime
    attempt: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    backoff_s: float = 1.0
    progress: Progress | None = None
    result: JSON = None
    error: JobError | None = None
    tags: list[str] = Field(default_factory=list)
    idempotency_key: str | None = None
    webhook: dict[str, Any] | None = None
    lease: Lease | None = None
    cancel_requested: bool = False
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime
    concurrency_key: str | None = Field(
        None, description="The key its kind's per-key limits count it under."
    )
    unique_key: str | None = None
    schedule_id: str | None = Field(None, description="The schedule that made this job.")
    schedule_tick: datetime | None = Field(None, description="The schedule's tick it ran for.")
    waiting_reason: WaitingReason | None = Field(
        None,
        description="Why a queued job is not running yet, when a limit or a paused queue holds"
        " it back (filled when read).",
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Jobs that must be final before this one is queued."
    )
    workflow_id: str | None = Field(None, description="The workflow this job is a step of.")
    step: str | None = Field(None, description="Its step's name in that workflow.")
    parent_id: str | None = Field(None, description="The job that spawned this one as a child.")
    continuation: JSON = Field(
        None,
        description="Set while a job waits for the children it spawned: the state its kind's"
        " continuation resumes from when they have all ended.",
    )
    # Last: stores build jobs without it (store.base.job_from_values adds it).
    warning: str | None = Field(
        None,
        description="On submit answers and job pages: why this job may wait forever (no live"
        " worker serves its kind in its queue). Not stored.",
    )


class Limit(Model):
    """A concurrency and/or rate limit the store enforces at claim time, on every host.

    `target` is `queue:<name>` (the queue's jobs), `kind:<name>` (the kind's jobs) or
    `key:<kind>` (each concurrency key of that kind on its own: per tenant, per account).
    """

    target: Annotated[str, Field(pattern=LIMIT_TARGET, description="queue:, kind: or key:")]
    max_running: int | None = Field(None, ge=1, le=1_000_000, description="Running at once.")
    rate: int | None = Field(None, ge=1, le=1_000_000, description="Starts per `per_s`.")
    per_s: float = Field(1.0, gt=0, le=7 * 86_400)
    strategy: LimitStrategy = Field(
        "queue",
        description="What a submit over a key's `max_running` does: `queue` (wait),"
        " `cancel_newest` (the new job is cancelled) or `cancel_in_progress` (the oldest of the"
        " key's jobs is cancelled); the last two on `key:` limits only.",
    )
    updated_at: datetime | None = None

    @model_validator(mode="after")
    def _check(self) -> Limit:
        if self.max_running is None and self.rate is None:
            raise ValueError("a limit needs max_running, rate or both")
        if self.strategy != "queue":
            if self.max_running is None:
                raise ValueError(f"strategy {self.strategy} needs max_running")
            if self.scope != "key":
                raise ValueError(f"strategy {self.strategy} applies to key: limits only")
        return self

    @property
    def scope(self) -> Literal["queue", "kind", "key"]:
        scope = self.target.partition(":")[0]
        assert scope in ("queue", "kind", "key")
        return scope  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The queue or kind the limit is on."""
        return self.target.partition(":")[2]


class JobEvent(Model):
    """One entry of a job's event log: a transition, a progress update or a log line."""

    seq: int = Field(description="Store-wide increasing sequence; resume after it.")
    job_id: str
    at: datetime
    type: Literal["state", "progress", "log"]
    data: dict[str, Any]


class KindInfo(Model):
    """A kind as registered in the store by workers: enough for the API to validate input."""

    name: KindName
    queue: str = "default"
    description: str = ""
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    max_attempts: int = 3
    timeout_s: float | None = None
    backoff_s: float = 1.0
    examples: list[JSON] = Field(default_factory=list)
    concurrency_key: str | None = Field(
        None,
        description="Where a job's concurrency key comes from: `input.<field>` (a dotted"
        " path) or `tag:<prefix>` (the rest of its first tag with that prefix).",
    )
    limits: list[Limit] = Field(default_factory=list, description="Limits declared in code.")
    updated_at: datetime | None = None


RUNNING_LISTED = 100


class SlotUse(Model):
    """One kind's slots in a worker: how many of its jobs run now, and at most."""

    kind: str
    runs: Literal["async", "thread", "process"] = Field(
        description="How the worker runs the kind: many at once on an event loop (`async`)"
        " or threads (`thread`), or one per child process (`process`)."
    )
    busy: int
    total: int


class WorkerInfo(Model):
    """A worker process (supervisor) as seen by the store."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int = Field(description="Child processes.")
    running: list[str] = Field(
        default_factory=list,
        description=f"Ids of jobs running now (the first {RUNNING_LISTED}; `busy` counts all).",
    )
    kinds: list[str] = Field(default_factory=list, description="The kinds it claims.")
    busy: int = Field(0, description="Jobs running now.")
    slots: list[SlotUse] = Field(default_factory=list, description="Slots per kind.")
    state: Literal["running", "draining", "stopped"] = "running"
    started_at: datetime
    last_seen: datetime


class QueueStats(Model):
    name: str
    blocked: int = 0
    queued: int = 0
    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    oldest_queued_age_s: float | None = None
    finished_last_minute: int = 0
    paused: bool = Field(False, description="Claims skip a paused queue; submits still land.")


class JobFilter(Model):
    state: list[JobState] | None = None
    kind: str | None = None
    queue: str | None = None
    tag: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    ids: list[str] | None = None
    workflow_id: str | None = None
    parent_id: str | None = None

    @field_validator("state", "ids", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """`state="failed"` means `state=["failed"]` (as `?state=failed` does over HTTP)."""
        return [value] if isinstance(value, str) else value


class JobPage(Model):
    jobs: list[Job]
    next_cursor: str | None = None
