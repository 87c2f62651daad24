"""The job state machine, in one place for every backend.

Backends store and fetch; the decisions (what state a settled or lost job goes to, when a retry
runs, what may be cancelled or retried) are made here, by pure functions that tests can reach
without a store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from conveyor import errors
from conveyor.models import FINAL_STATES, JobError, JobState


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"  #: the handler returned a result
    FAILED = "failed"  #: the handler raised; retried while attempts remain (unless retry=False)
    CANCELLED = "cancelled"  #: the worker stopped the job after a cancel request
    RELEASED = "released"  #: handed back unstarted or interrupted by a drain; no attempt used
    LOST = "lost"  #: the worker died or its lease expired; counts as a failed attempt
    WAIT = "wait"  #: the handler spawned children; resume when they end; no attempt used


CANCELLABLE = frozenset({JobState.BLOCKED, JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING})
RETRYABLE = frozenset({JobState.FAILED, JobState.CANCELLED})


@dataclass(frozen=True, slots=True)
class Decision:
    """Where a settled job goes next."""

    state: JobState
    run_at: float | None  # None: unchanged
    attempt: int
    finished: bool
    error: JobError | None

    def event_data(self) -> dict[str, Any]:
        """The data of the state event this decision writes (the same on every backend)."""
        data: dict[str, Any] = {"state": self.state.value, "attempt": self.attempt}
        if self.error is not None:
            data["error"] = self.error.model_dump(exclude={"traceback"})
        if self.state is JobState.SCHEDULED and self.run_at is not None:
            data["run_at"] = self.run_at
        return data


def backoff_delay(attempt: int, base_s: float, cap_s: float = 3_600.0) -> float:
    """Exponential backoff with jitter: uniform in [full/2, full], full = base * 2^(attempt-1)."""
    full = min(cap_s, base_s * 2.0 ** max(0, attempt - 1))
    return full / 2 + random.random() * full / 2


def decide(
    *,
    outcome: Outcome,
    attempt: int,
    max_attempts: int,
    backoff_s: float,
    cancel_requested: bool,
    now: float,
    error: JobError | None = None,
    retry: bool = True,
) -> Decision:
    """Decide the next state of a running job settled with `outcome`."""
    if outcome is Outcome.SUCCEEDED:
        return Decision(JobState.SUCCEEDED, None, attempt, True, None)
    if outcome is Outcome.RELEASED or outcome is Outcome.WAIT:
        if cancel_requested:  # a WAIT then spawns nothing
            return Decision(JobState.CANCELLED, None, attempt, True, None)
        # A WAIT is blocked on its children; the store queues it at once if none is left.
        state = JobState.QUEUED if outcome is Outcome.RELEASED else JobState.BLOCKED
        return Decision(state, now, max(0, attempt - 1), False, None)
    if outcome is Outcome.CANCELLED or cancel_requested:
        return Decision(JobState.CANCELLED, None, attempt, True, error)
    if outcome is Outcome.LOST and error is None:
        error = JobError(
            type="WorkerLost",
            message="the worker running this job died or lost its lease",
            reason="worker_lost",
        )
    if retry and attempt < max_attempts:
        return Decision(
            JobState.SCHEDULED, now + backoff_delay(attempt, backoff_s), attempt, False, error
        )
    return Decision(JobState.FAILED, None, attempt, True, error)


def initial_state(run_at: float, now: float) -> JobState:
    """The state of a job due at `run_at` that waits for nothing else (also on release)."""
    return JobState.SCHEDULED if run_at > now else JobState.QUEUED


def released_event(state: JobState, run_at: float) -> dict[str, Any]:
    """The data of the state event of a blocked job whose last dependency (or child) ended."""
    data: dict[str, Any] = {"state": state.value, "released": True}
    if state is JobState.SCHEDULED:
        data["run_at"] = run_at
    return data


def blocked_event(pending: int, attempt: int) -> dict[str, Any]:
    """The data of the state event of a job that becomes blocked on `pending` jobs."""
    return {"state": JobState.BLOCKED.value, "attempt": attempt, "pending": pending}


def ensure_cancellable(job_id: str, state: JobState) -> None:
    """Raise `InvalidStateError` unless a job in `state` may be cancelled."""
    _ensure(job_id, state, CANCELLABLE, "only waiting or running jobs can be cancelled")


def rewind_pending(deps: list[str], states: dict[str, JobState], rewound: set[str]) -> list[str]:
    """The dependencies a rewound job waits for: those rewound with it and those not final
    (a missing one, deleted after it ended, counts as final). A failed dependency that is not
    rewound does not block it: the worker decides at claim whether it runs."""
    pending = []
    for dep in dict.fromkeys(deps):
        state = states.get(dep)
        if dep in rewound or (state is not None and state not in FINAL_STATES):
            pending.append(dep)
    return pending


def ensure_retryable(job_id: str, state: JobState) -> None:
    """Raise `InvalidStateError` unless a job in `state` may be retried."""
    _ensure(job_id, state, RETRYABLE, "only failed or cancelled jobs can be retried")


def ensure_deletable(job_id: str, state: JobState) -> None:
    """Raise `InvalidStateError` unless a job in `state` may be deleted."""
    _ensure(job_id, state, FINAL_STATES, "cancel it first, only finished jobs can be deleted")


def _ensure(job_id: str, state: JobState, allowed: frozenset[JobState], why: str) -> None:
    if state not in allowed:
        raise errors.InvalidStateError(f"job {job_id} is {state.value}; {why}", state=state.value)
