"""The Store contract every backend satisfies; tests/conformance proves it.

Everything on the hot path is batched: `claim` takes up to n jobs, `heartbeat` and `settle`
take many leases at once. Every operation that touches a running job presents the lease token
it was given by `claim`; a stale token changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import ValidationError

from conveyor import errors
from conveyor.models import (
    JSON,
    Job,
    JobError,
    JobEvent,
    JobFilter,
    JobPage,
    JobState,
    KindInfo,
    Limit,
    Progress,
    QueueStats,
    UniqueScope,
    WorkerInfo,
    from_ts,
    trusted,
)
from conveyor.store.rules import Outcome

log = logging.getLogger("conveyor.store")

IDEMPOTENCY_WINDOW_S = 24 * 3600.0
"""How long an idempotency key is remembered unless the settings say otherwise."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A fully resolved job to insert: defaults already applied by the service."""

    id: str
    kind: str
    queue: str
    input: JSON
    run_at: float
    priority: int = 0
    max_attempts: int = 3
    timeout_s: float | None = None
    backoff_s: float = 1.0
    tags: tuple[str, ...] = ()
    idempotency_key: str | None = None
    request_hash: str | None = None
    idempotency_window_s: float = IDEMPOTENCY_WINDOW_S
    webhook: dict[str, Any] | None = None
    #: The key the kind's per-key limits (`key:<kind>`) count this job under (e.g. a tenant).
    concurrency_key: str | None = None
    #: A job with the same unique key in `unique_scope` (created within `unique_window_s`, if
    #: given) is returned instead of inserting this one.
    unique_key: str | None = None
    unique_scope: UniqueScope = "active"
    unique_window_s: float | None = None
    #: The schedule (and its tick, epoch seconds) this job was made for.
    schedule_id: str | None = None
    schedule_tick: float | None = None
    depends_on: tuple[str, ...] = ()
    """Ids of jobs (stored, or earlier or later in the same batch) that must be final first."""
    workflow_id: str | None = None
    step: str | None = None
    parent_id: str | None = None
    """The job that spawned this one; a `Settlement.spawn` sets it to the settling job."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a worker ends its lease on a job.

    With `Outcome.WAIT`, `spawn` are the children to insert (any number) and `continuation`
    what the job resumes from when they have all ended (stored on the job, read back by the
    claim that resumes it).
    """

    job_id: str
    token: str
    outcome: Outcome
    result: JSON = None
    error: JobError | None = None
    retry: bool = True
    spawn: Sequence[JobSpec] = ()
    continuation: JSON = None


@dataclass(frozen=True, slots=True)
class Beat:
    """A heartbeat for one lease, optionally carrying progress and log lines."""

    job_id: str
    token: str
    progress: Progress | None = None
    logs: Sequence[str] = field(default_factory=tuple)


class BeatStatus(StrEnum):
    OK = "ok"  #: lease extended
    CANCEL = "cancel"  #: lease extended, but a cancel was requested: stop the job
    LOST = "lost"  #: the token is stale (rescued, cancelled, or finished): stop and drop it


def job_from_values(**values: Any) -> Job:
    """A Job from every one of its stored fields, unvalidated (stores use it for their own
    rows). `warning` is never stored (the API fills it on answers), so it starts empty here."""
    values.setdefault("warning", None)
    return trusted(Job, values)


def new_job(spec: JobSpec, state: JobState, now: float) -> Job:
    """The Job a freshly inserted spec becomes, without reading it back."""
    created = from_ts(now)
    return job_from_values(
        id=spec.id, kind=spec.kind, queue=spec.queue, state=state, input=spec.input,
        priority=spec.priority, run_at=from_ts(spec.run_at), attempt=0,
        max_attempts=spec.max_attempts, timeout_s=spec.timeout_s, backoff_s=spec.backoff_s,
        progress=None, result=None, error=None, tags=list(spec.tags),
        idempotency_key=spec.idempotency_key, webhook=spec.webhook, lease=None,
        cancel_requested=False, created_at=created, started_at=None, finished_at=None,
        updated_at=created, concurrency_key=spec.concurrency_key, unique_key=spec.unique_key,
        schedule_id=spec.schedule_id, schedule_tick=from_ts(spec.schedule_tick),
        waiting_reason=None, depends_on=list(spec.depends_on),
        workflow_id=spec.workflow_id,
        step=spec.step, parent_id=spec.parent_id, continuation=None,
    )  # fmt: skip


def read_kinds(rows: Iterable[dict[str, Any]]) -> list[KindInfo]:
    """Kinds from stored rows, skipping (and logging) any that no longer validate: one damaged
    row must not hide every other kind from the API and the dashboard."""
    kinds = []
    for row in rows:
        try:
            kinds.append(KindInfo.model_validate(row))
        except ValidationError as exc:
            log.warning("ignoring a stored kind that does not validate: %s", exc)
    return kinds


def batch_keys(specs: Sequence[JobSpec]) -> dict[str, str | None]:
    """The batch's idempotency keys and request hashes; a key used twice is refused."""
    seen: dict[str, str | None] = {}
    for spec in specs:
        key = spec.idempotency_key
        if key is None:
            continue
        if key in seen:
            if seen[key] != spec.request_hash:
                raise errors.IdempotencyConflictError(idempotency_key=key)
            raise errors.InvalidInputError(
                f"idempotency key {key!r} appears twice in one batch", idempotency_key=key
            )
        seen[key] = spec.request_hash
    return seen


def created_event(spec: JobSpec, state: JobState) -> dict[str, Any]:
    """The data of a job's first event: its state, its queue and whether it carries a
    webhook of its own. Written with the job, so the webhook dispatcher can route the events
    of the jobs it saw created without reading each job back (most jobs have no webhook)."""
    data: dict[str, Any] = {"state": state.value, "queue": spec.queue}
    if spec.webhook is not None:
        data["webhook"] = True
    return data


@runtime_checkable
class Store(Protocol):
    """A durable job store. An accepted job is committed before `enqueue` returns."""

    def enqueue(self, specs: Sequence[JobSpec]) -> list[Job]:
        """Insert jobs atomically; return them in order. Each new job's first event carries
        `created_event` as its data. A batch may be of any size.

        A spec whose idempotency key is already known within the window returns the original
        job instead; the same key with a different `request_hash` raises
        `IdempotencyConflictError` and inserts nothing.

        A spec with a `unique_key` that a job in its `unique_scope` holds (created within
        `unique_window_s`, if set) returns that job instead; decided in the same transaction,
        so concurrent submits make one job. Under a per-key limit (`key:<kind>`) with strategy
        `cancel_newest`, a spec whose key already has `max_running` jobs waiting or running is
        stored `cancelled` at once (reason `concurrency_limited`); with `cancel_in_progress`
        the oldest of them is cancelled instead (a running one is asked to stop) and the new
        job waits its turn.

        A spec with `depends_on` (ids of stored jobs, or of jobs earlier or later in the batch)
        starts `blocked` while any of them is not final, counting those; it is queued (or
        scheduled) when the last of them ends, in the transaction that ends it. An unknown id
        raises `JobNotFoundError` and inserts nothing.
        """
        ...

    def claim(
        self,
        queues: Sequence[str],
        owner: str,
        n: int,
        lease_s: float,
        *,
        kinds: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> list[Job]:
        """Lease up to n due jobs from `queues` (highest priority, then oldest run_at first).

        Only jobs of `kinds` / carrying `tag` when given. Each claimed job gets a fresh random
        lease token and `attempt + 1`.

        Limits (`set_limit`) and paused queues hold jobs back, in the same transaction: a
        paused queue gives nothing; a job is taken only while its queue's, its kind's and its
        concurrency key's running counts are below their `max_running`, and each rate limit
        on it has a start free (the claim takes it). Among the keys of a per-key limit the
        least recently started key goes first (round robin): one busy key cannot starve the
        others.
        """
        ...

    def heartbeat(self, beats: Sequence[Beat], lease_s: float) -> dict[str, BeatStatus]:
        """Extend leases (store clock + lease_s) and record progress and logs, if tokens match."""
        ...

    def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """End leases; per item True if applied, False if the token was stale (nothing changed).

        A job that becomes final releases the `blocked` jobs waiting for it in the same
        transaction (as do `cancel`, `rescue` and a claim failing an undecodable row).
        `Outcome.WAIT` inserts the settlement's `spawn` as children of the job and blocks it on
        them, storing its `continuation` and giving its attempt back; with no child left to wait
        for it is queued again at once.
        """
        ...

    def cancel(self, job_id: str) -> Job:
        """Cancel a waiting job at once, or flag a running one (`cancel_requested`)."""
        ...

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again with a fresh attempt budget."""
        ...

    def rewind(self, job_ids: Sequence[str]) -> list[Job]:
        """Run failed or cancelled jobs again, in one transaction (a workflow's retry).

        Each job gets a fresh attempt budget and becomes `blocked` on those of its
        `depends_on` that are not final or are rewound with it, else `queued`. Unknown ids
        raise `JobNotFoundError`, jobs in other states `InvalidStateError`; then nothing
        changes. Returns the jobs in the order given.
        """
        ...

    def delete(self, job_id: str) -> None:
        """Delete a finished job and its events."""
        ...

    def rescue(self, owner: str | None = None) -> list[str]:
        """Treat expired leases (or every lease of `owner`, at once) as lost; promote due jobs."""
        ...

    def get(self, job_id: str) -> Job:
        """The job, or `JobNotFoundError`."""
        ...

    def list_jobs(self, filter: JobFilter, cursor: str | None = None, limit: int = 50) -> JobPage:
        """Newest first; pass `next_cursor` back to get the next page. Filters by
        `workflow_id` and `parent_id` are indexed (a parent's children page cheaply)."""
        ...

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """The job's events with `seq > after`, oldest first."""
        ...

    def feed(self, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """Events of all jobs with `seq > after`, oldest first: a durable outbox that
        dispatchers (webhooks, callbacks) and live views follow by remembering the last seq.
        """
        ...

    def put_record(self, collection: str, key: str, value: dict[str, Any]) -> None:
        """Upsert a small JSON document (API keys, compat-layer state, delivery logs)."""
        ...

    def get_record(self, collection: str, key: str) -> dict[str, Any] | None: ...

    def list_records(self, collection: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """All (key, value) pairs of a collection whose key starts with `prefix`, by key."""
        ...

    def delete_record(self, collection: str, key: str) -> bool:
        """Delete a record; True if it existed."""
        ...

    def register_kinds(self, kinds: Sequence[KindInfo]) -> None: ...

    def kinds(self) -> list[KindInfo]: ...

    def worker_beat(self, info: WorkerInfo) -> None:
        """Upsert a worker's record; `state="stopped"` removes it."""
        ...

    def workers(self) -> list[WorkerInfo]: ...

    def queue_stats(self) -> list[QueueStats]: ...

    def prune(self, finished_before: float, limit: int = 10_000) -> list[str]:
        """Delete up to `limit` jobs that finished before this time; return their ids."""
        ...

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Block until work may be available in `queues`, or `timeout` seconds pass."""
        ...

    def now(self) -> float:
        """The store's clock (epoch seconds); leases are measured by it."""
        ...

    def ping(self) -> None:
        """Raise `StoreUnavailableError` unless the store answers."""
        ...

    # -- flow control (store protocol v2, section 2) ------------------------------------------

    def set_limit(self, limit: Limit) -> Limit:
        """Create or replace the limit on `limit.target`; the next claim on every host obeys
        it. Returns it as stored (with `updated_at`)."""
        ...

    def delete_limit(self, target: str) -> bool:
        """Remove the limit on `target`; True if there was one."""
        ...

    def limits(self) -> list[Limit]:
        """Every limit, by target."""
        ...

    def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause (claims skip the queue; submits still land) or resume a queue."""
        ...

    def purge_queue(self, queue: str) -> int:
        """Cancel every waiting (queued or scheduled) job of the queue, with reason `purged`;
        how many. Running jobs are left alone."""
        ...

    def take_tokens(self, key: str, n: int, rate: int, per_s: float) -> float:
        """Take n tokens from the bucket `key` (capacity `rate`, refilled at `rate` per
        `per_s`, full when first used), global across every process on the store. Returns 0
        if taken, else the seconds until n would be there (nothing taken). n > rate raises
        `InvalidInputError`."""
        ...

    def close(self) -> None: ...


def jobs_by_id(store: Store, ids: Iterable[str], chunk: int = 500) -> dict[str, Job]:
    """The jobs with these ids that exist, read `chunk` at a time (`list_jobs(ids=…)`)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Job] = {}
    for start in range(0, len(wanted), chunk):
        part = wanted[start : start + chunk]
        page = store.list_jobs(JobFilter(ids=part), None, len(part))
        found.update((job.id, job) for job in page.jobs)
    return found


def complete(store: Store, job_id: str, token: str, result: JSON) -> bool:
    """Settle one lease as succeeded."""
    return store.settle([Settlement(job_id, token, Outcome.SUCCEEDED, result=result)])[0]


def fail(store: Store, job_id: str, token: str, error: JobError, retry: bool = True) -> bool:
    """Settle one lease as failed (retried while attempts remain, unless retry is False)."""
    return store.settle([Settlement(job_id, token, Outcome.FAILED, error=error, retry=retry)])[0]


def release(store: Store, job_id: str, token: str) -> bool:
    """Hand a lease back without using an attempt."""
    return store.settle([Settlement(job_id, token, Outcome.RELEASED)])[0]
