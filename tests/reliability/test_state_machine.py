"""Reliability-plan S3(a): random interleavings of every lease operation, per backend.

A Hypothesis state machine drives one store with an injected clock through enqueue, claim,
heartbeat, complete, fail, release, cancel, time jumps past lease expiry and sweeps, and checks
the invariants after every step: a claim never returns more than asked, a job never has two
live leases, stale tokens change nothing, attempts never exceed max_attempts, and final states
are absorbing. Each example uses its own queue, so one store serves all examples.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.models import JobError, JobFilter, JobState
from conveyor.store import Beat, BeatStatus, Outcome, Settlement, Store
from tests.conformance.helpers import spec

LEASE = 10.0
EXAMPLES = 60
STEPS = 25


@dataclass
class Lease:
    job_id: str
    token: str


def run_machine(store: Store, clock: FakeClock) -> None:
    class LeaseMachine(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.queue = f"q-{uuid.uuid4().hex[:12]}"
            self.jobs: dict[str, int] = {}  # id -> max_attempts
            self.leases: list[Lease] = []  # every lease ever handed out
            self.current: dict[str, str] = {}  # job -> token of its newest lease
            self.final: dict[str, tuple[JobState, object]] = {}

        def _job(self, index: int) -> str | None:
            ids = sorted(self.jobs)
            return ids[index % len(ids)] if ids else None

        @rule(count=st.integers(1, 4), attempts=st.integers(1, 3))
        def enqueue(self, count: int, attempts: int) -> None:
            made = store.enqueue(
                [spec(clock, queue=self.queue, max_attempts=attempts, backoff_s=0)
                 for _ in range(count)]
            )  # fmt: skip
            for job in made:
                self.jobs[job.id] = attempts

        @rule(n=st.integers(1, 5))
        def claim(self, n: int) -> None:
            claimed = store.claim([self.queue], "w", n, LEASE)
            assert len(claimed) <= n
            for job in claimed:
                assert job.lease is not None
                assert job.id not in self.final, "a final job was claimed again"
                assert job.attempt <= self.jobs[job.id]
                self.leases.append(Lease(job.id, job.lease.token))
                self.current[job.id] = job.lease.token

        def _pick(self, index: int) -> Lease | None:
            return self.leases[index % len(self.leases)] if self.leases else None

        def _apply(self, lease: Lease, settlement: Settlement) -> None:
            before = store.get(lease.job_id)
            [applied] = store.settle([settlement])
            live = before.state is JobState.RUNNING and before.lease is not None
            expected = live and before.lease.token == lease.token  # type: ignore[union-attr]
            assert applied == expected
            if not applied:
                assert store.get(lease.job_id) == before, "a stale token changed the job"

        @rule(index=st.integers(0, 100))
        def complete(self, index: int) -> None:
            if lease := self._pick(index):
                self._apply(lease, Settlement(lease.job_id, lease.token, Outcome.SUCCEEDED, 7))

        @rule(index=st.integers(0, 100), retry=st.booleans())
        def fail(self, index: int, retry: bool) -> None:
            if lease := self._pick(index):
                error = JobError(type="E", message="x")
                self._apply(
                    lease, Settlement(lease.job_id, lease.token, Outcome.FAILED, error=error,
                                      retry=retry)
                )  # fmt: skip

        @rule(index=st.integers(0, 100))
        def release(self, index: int) -> None:
            if lease := self._pick(index):
                self._apply(lease, Settlement(lease.job_id, lease.token, Outcome.RELEASED))

        @rule(index=st.integers(0, 100))
        def heartbeat(self, index: int) -> None:
            if lease := self._pick(index):
                before = store.get(lease.job_id)
                status = store.heartbeat([Beat(lease.job_id, lease.token)], LEASE)[lease.job_id]
                live = before.state is JobState.RUNNING and before.lease is not None
                if live and before.lease.token == lease.token:  # type: ignore[union-attr]
                    assert status in (BeatStatus.OK, BeatStatus.CANCEL)
                else:
                    assert status is BeatStatus.LOST

        @rule(index=st.integers(0, 100))
        def cancel(self, index: int) -> None:
            if (job_id := self._job(index)) is None:
                return
            try:
                store.cancel(job_id)
            except errors.InvalidStateError:
                assert store.get(job_id).state.is_final

        @rule(seconds=st.sampled_from([1.0, 5.0, LEASE + 1]))
        def advance(self, seconds: float) -> None:
            clock.advance(seconds)

        @rule()
        def sweep(self) -> None:
            store.rescue()

        @invariant()
        def invariants(self) -> None:
            if not getattr(self, "jobs", None):
                return
            page = store.list_jobs(JobFilter(ids=sorted(self.jobs)), limit=1000)
            for job in page.jobs:
                assert job.attempt <= job.max_attempts
                if job.state is JobState.RUNNING:
                    assert job.lease is not None
                    assert job.lease.token == self.current[job.id], "two leases on one job"
                if job.id in self.final:
                    assert (job.state, job.result) == self.final[job.id], "final state changed"
                elif job.state.is_final:
                    self.final[job.id] = (job.state, job.result)

    LeaseMachine.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    LeaseMachine.TestCase().runTest()


@pytest.mark.timeout(600)
def test_lease_state_machine(store: Store, clock: FakeClock) -> None:
    run_machine(store, clock)
