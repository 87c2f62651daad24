"""Job states, apart from the pydantic models so that `conveyor --help` need not load them."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    BLOCKED = "blocked"  #: waiting for other jobs (dependencies, or children it spawned) to end
    SCHEDULED = "scheduled"  #: waiting for its run_at (first run or retry backoff)
    QUEUED = "queued"  #: ready to be claimed
    RUNNING = "running"  #: claimed by a worker holding a live lease
    SUCCEEDED = "succeeded"  #: finished; result stored
    FAILED = "failed"  #: out of attempts (or not retryable); last error stored
    CANCELLED = "cancelled"  #: cancelled before it finished

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
WAITING_STATES = frozenset({JobState.SCHEDULED, JobState.QUEUED})
"""Jobs due by time; `blocked` jobs wait for other jobs instead and are not among them."""
NOT_STARTED_STATES = frozenset({JobState.BLOCKED, *WAITING_STATES})
"""Jobs that have not started (yet): waiting for time or for other jobs."""
