"""Child jobs: a handler spawns jobs and resumes, without holding a slot, when they have ended.

    @conveyor.task("demo.fanout", input=FanoutIn)
    def fanout(input: FanoutIn, ctx: conveyor.Context) -> conveyor.Continue:
        for i in range(input.n):
            ctx.spawn("noop", {"i": i})
        return ctx.wait_for_children(state={"n": input.n})

    @fanout.continuation
    def fanout_done(input: FanoutIn, children: conveyor.Children, ctx: conveyor.Context) -> int:
        return sum(child.succeeded for child in children)

The handler's children are inserted, and the job blocked on them, in the transaction that
settles it (`Outcome.WAIT`): its slot is free at once and its attempt is given back. When the
last child has ended (succeeded, failed or cancelled) the job is queued again; the worker that
claims it calls the kind's continuation with the same input, the children's outcomes (in spawn
order, read from the store page by page: any number of children works) and `children.state`,
the JSON given to `wait_for_children`. A continuation returns the job's result, raises like a
handler (its retries run the continuation again, not the handler), or spawns and waits again.

Pieces: the child process builds the spawn list (`Spawns`, on `Context`) and turns a `Continue`
into a "wait" outcome (`wait_outcome`); the supervisor resolves the spawned jobs' defaults
(`SpawnResolver`) and reads the children of resumed jobs before sending them to a child
(`load_children`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload

from conveyor import errors
from conveyor.limits import resolve_key
from conveyor.models import JSON, Job, JobError, JobFilter, JobState, KindInfo
from conveyor.store.base import JobSpec, Settlement, Store
from conveyor.store.rules import Outcome

if TYPE_CHECKING:
    from conveyor.kinds.registry import KindSpec

PAGE = 1000
"""Children read per store call when a job resumes."""


@dataclass(frozen=True, slots=True)
class Continue:
    """What a handler returns to wait for the children it spawned (`ctx.wait_for_children`)."""

    state: JSON = None


@dataclass(frozen=True, slots=True)
class ChildOutcome:
    """How one child ended."""

    id: str
    kind: str
    state: JobState
    result: JSON = None
    error: JobError | None = None

    @property
    def succeeded(self) -> bool:
        return self.state is JobState.SUCCEEDED


class Children(Sequence[ChildOutcome]):
    """The outcomes of the children a job spawned before it waited, in spawn order, and the
    `state` it gave `wait_for_children`."""

    def __init__(self, outcomes: list[ChildOutcome], state: JSON = None) -> None:
        self._outcomes = outcomes
        self.state = state

    @overload
    def __getitem__(self, index: int) -> ChildOutcome: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ChildOutcome]: ...
    def __getitem__(self, index: int | slice) -> ChildOutcome | Sequence[ChildOutcome]:
        return self._outcomes[index]

    def __len__(self) -> int:
        return len(self._outcomes)

    def __iter__(self) -> Iterator[ChildOutcome]:
        return iter(self._outcomes)

    @property
    def succeeded(self) -> list[ChildOutcome]:
        return [c for c in self._outcomes if c.state is JobState.SUCCEEDED]

    @property
    def failed(self) -> list[ChildOutcome]:
        """Children that failed or were cancelled."""
        return [c for c in self._outcomes if c.state is not JobState.SUCCEEDED]

    def __repr__(self) -> str:
        return f"Children({len(self)} jobs, {len(self.succeeded)} succeeded)"


# -- in the child process ----------------------------------------------------------------------


class Spawns:
    """The jobs a handler spawned (`ctx.spawn`), with ids that increase in spawn order."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self._last = 0

    def add(self, kind: str, input: JSON, options: dict[str, Any]) -> str:
        value = _uuid7_int()
        if value <= self._last:  # same millisecond: keep the order the handler spawned in
            value = self._last + 1
        self._last = value
        h = f"{value:032x}"
        job_id = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        self.jobs.append({"id": job_id, "kind": kind, "input": {} if input is None else input,
                          **options})  # fmt: skip
        return job_id


def _uuid7_int() -> int:
    """A UUIDv7 as an integer (as conveyor.ids.uuid7, without the string round trips)."""
    rand = int.from_bytes(os.urandom(10), "big")
    value = (time.time_ns() // 1_000_000 & 0xFFFFFFFFFFFF) << 80
    value |= 0x7 << 76 | (rand >> 68 & 0xFFF) << 64 | 0b10 << 62
    return value | rand & 0x3FFFFFFFFFFFFFFF


def resume_entry(spec: KindSpec, message: dict[str, Any]) -> Callable[[Any, Any], Any] | None:
    """The function to call for a resumed job (None for a first run): the kind's continuation,
    given the children read by the supervisor."""
    resume = message.get("resume")
    if resume is None:
        return None
    fn = spec.continuation
    if fn is None:
        raise errors.ConfigurationError(
            f"kind {spec.name!r} spawned children but declares no continuation"
        )
    children = Children(
        [
            ChildOutcome(c[0], c[1], JobState(c[2]), c[3],
                         None if c[4] is None else JobError.model_validate(c[4]))
            for c in resume["children"]
        ],
        resume.get("state"),
    )  # fmt: skip
    return lambda arg, ctx: fn(arg, children, ctx)


def wait_outcome(job_id: str, value: Any, spawns: Spawns | None) -> dict[str, Any] | None:
    """The "wait" outcome of a handler that returned `Continue`, else None. Spawning without
    waiting is a mistake the handler must hear about: the children would never be inserted."""
    jobs = [] if spawns is None else spawns.jobs
    if not isinstance(value, Continue):
        if jobs:
            raise errors.ConfigurationError(
                f"the handler spawned {len(jobs)} jobs but returned a result: return"
                " ctx.wait_for_children() to run them"
            )
        return None
    since = jobs[0]["id"] if jobs else None
    return {"id": job_id, "outcome": Outcome.WAIT.value, "spawn": jobs,
            "continuation": {"state": value.state, "since": since}}  # fmt: skip


# -- in the supervisor -------------------------------------------------------------------------


class SpawnResolver:
    """Turns spawned jobs into specs with their kinds' defaults (as the API does for a submit):
    kinds this worker declares, else kinds registered in the store."""

    def __init__(self, store: Store, local: Sequence[KindInfo]) -> None:
        self.store = store
        self.kinds = {k.name: k for k in local}
        self.local = set(self.kinds)

    def kind(self, name: str) -> KindInfo:
        if name not in self.kinds:
            self.kinds.update((k.name, k) for k in self.store.kinds() if k.name not in self.local)
        if name not in self.kinds:
            raise errors.KindNotFoundError(f"spawned a job of unknown kind {name!r}", kind=name)
        return self.kinds[name]

    def spec(self, job: dict[str, Any], now: float, parent_id: str) -> JobSpec:
        kind = self.kind(job["kind"])
        tags = tuple(job.get("tags") or ())
        return JobSpec(
            id=job["id"],
            kind=kind.name,
            queue=job.get("queue") or kind.queue,
            input=job.get("input"),
            run_at=now + (job.get("delay_s") or 0.0),
            priority=job.get("priority") or 0,
            max_attempts=job.get("max_attempts") or kind.max_attempts,
            timeout_s=job["timeout_s"] if job.get("timeout_s") is not None else kind.timeout_s,
            backoff_s=job["backoff_s"] if job.get("backoff_s") is not None else kind.backoff_s,
            tags=tags,
            idempotency_key=job.get("idempotency_key"),
            concurrency_key=resolve_key(kind.concurrency_key, job.get("input"), tags),
            parent_id=parent_id,
        )

    def settlement(self, job_id: str, token: str, message: dict[str, Any]) -> Settlement:
        """The WAIT settlement of a "wait" outcome; a spawn that cannot be resolved fails the
        job (no retry: it would spawn the same thing again)."""
        now = time.time()
        try:
            spawn = [self.spec(job, now, job_id) for job in message["spawn"]]
        except errors.ConveyorError as exc:
            error = JobError(type=type(exc).__name__, message=str(exc), reason="error")
            return Settlement(job_id, token, Outcome.FAILED, error=error, retry=False)
        return Settlement(
            job_id, token, Outcome.WAIT, spawn=spawn, continuation=message["continuation"]
        )


def load_children(store: Store, jobs: Sequence[Job]) -> None:
    """Attach to each resumed job among `jobs` the outcomes of the children it waited for
    (`job.continuation` becomes {state, children}), read `PAGE` at a time."""
    for job in jobs:
        stored = job.continuation
        if not isinstance(stored, dict) or "since" not in stored:
            continue
        children = _children(store, job.id, stored["since"])
        job.continuation = {"state": stored.get("state"), "children": children}


def _children(store: Store, parent_id: str, since: str | None) -> list[list[Any]]:
    """[id, kind, state, result, error] of the children spawned since `since` (the first of
    the last wait: earlier waits' children are not this continuation's), in spawn order."""
    if since is None:
        return []
    found: list[list[Any]] = []
    cursor: str | None = None
    while True:
        page = store.list_jobs(JobFilter(parent_id=parent_id), cursor, PAGE)
        for child in page.jobs:
            if child.id < since:
                return found[::-1]
            error = None if child.error is None else child.error.model_dump(mode="json")
            found.append([child.id, child.kind, child.state.value, child.result, error])
        if page.next_cursor is None:
            return found[::-1]
        cursor = page.next_cursor
