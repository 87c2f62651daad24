from __future__ import annotations

import pytest

from conveyor.models import JobState
from conveyor.store.rules import Outcome, backoff_delay, decide


@pytest.mark.parametrize("attempt", [1, 2, 3, 10])
def test_backoff_is_jittered_exponential_and_capped(attempt: int) -> None:
    full = min(60.0, 2.0 * 2 ** (attempt - 1))
    for _ in range(100):
        assert full / 2 <= backoff_delay(attempt, 2.0, cap_s=60.0) <= full


def test_decisions() -> None:
    common = {"attempt": 1, "max_attempts": 2, "backoff_s": 0.0, "now": 100.0}
    assert decide(outcome=Outcome.SUCCEEDED, cancel_requested=True, **common).state is (
        JobState.SUCCEEDED
    ), "a job that finished despite a cancel request keeps its result"
    assert decide(outcome=Outcome.FAILED, cancel_requested=False, **common).state is (
        JobState.SCHEDULED
    )
    assert decide(outcome=Outcome.FAILED, cancel_requested=True, **common).state is (
        JobState.CANCELLED
    )
    released = decide(outcome=Outcome.RELEASED, cancel_requested=False, **common)
    assert (released.state, released.attempt) == (JobState.QUEUED, 0)
    lost = decide(outcome=Outcome.LOST, cancel_requested=False, **{**common, "attempt": 2})
    assert lost.state is JobState.FAILED
    assert lost.error is not None and lost.error.reason == "worker_lost"
