"""Blocked jobs (store protocol v2, section 1): dependencies, children, release and rewind.

Every test runs against every backend. A dependent is released (queued) in the transaction that
makes its last dependency final, whatever makes it final: settle, cancel, rescue.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace

import pytest

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.models import JobError, JobFilter, JobState
from conveyor.store import Outcome, Settlement, Store
from conveyor.store.base import JobSpec, complete, fail
from tests.backends import Backend
from tests.conformance.helpers import spec

LEASE = 30.0
#: Backends whose store does not implement blocked jobs yet (their tests must fail).
NOT_YET: frozenset[str] = frozenset()


@pytest.fixture(autouse=True)
def _not_yet(request: pytest.FixtureRequest, backend: Backend) -> None:
    if backend.name in NOT_YET:
        request.node.add_marker(
            pytest.mark.xfail(strict=True, reason=f"{backend.name}: blocked jobs not built yet")
        )


def claim(store: Store, n: int = 1, owner: str = "w1") -> list:
    return store.claim(["default"], owner, n, LEASE)


def claim_one(store: Store, owner: str = "w1"):
    [job] = claim(store, 1, owner)
    return job


def run(store: Store, job_id: str, result: object = None) -> None:
    """Claim `job_id` (it must be the only claimable job) and complete it."""
    job = claim_one(store)
    assert job.id == job_id
    assert complete(store, job.id, job.lease.token, result)


def states(store: Store, *ids: str) -> list[JobState]:
    return [store.get(i).state for i in ids]


def state_events(store: Store, job_id: str) -> list[str]:
    return [e.data["state"] for e in store.events(job_id) if e.type == "state"]


# -- enqueue ------------------------------------------------------------------------------------


def test_dependent_of_a_waiting_job_is_blocked(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock)])
    [down] = store.enqueue(
        [spec(clock, depends_on=(up.id,), workflow_id="wf1", step="b", parent_id=None)]
    )
    assert down.state is JobState.BLOCKED
    got = store.get(down.id)
    assert got.state is JobState.BLOCKED
    assert got.depends_on == [up.id]
    assert (got.workflow_id, got.step, got.parent_id, got.continuation) == ("wf1", "b", None, None)
    assert state_events(store, down.id) == ["blocked"]
    assert [j.id for j in claim(store, 10)] == [up.id], "a blocked job is not claimable"


def test_dependency_already_final_does_not_block(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock)])
    run(store, up.id)
    [down] = store.enqueue([spec(clock, depends_on=(up.id,))])
    assert down.state is JobState.QUEUED
    got = store.get(down.id)
    assert (got.state, got.depends_on) == (JobState.QUEUED, [up.id])


def test_dependencies_within_a_batch_in_any_order(store: Store, clock: FakeClock) -> None:
    a, b, c = spec(clock), spec(clock), spec(clock)
    # c depends on a (earlier) and on b (later in the batch)
    jobs = store.enqueue([a, replace(c, depends_on=(a.id, b.id)), b])
    assert [j.state for j in jobs] == [JobState.QUEUED, JobState.BLOCKED, JobState.QUEUED]
    run_ids = {j.id for j in claim(store, 10)}
    assert run_ids == {a.id, b.id}


def test_unknown_dependency_inserts_nothing(store: Store, clock: FakeClock) -> None:
    ok = spec(clock)
    bad = spec(clock, depends_on=("01a2175a-250b-7149-80ca-6fd5ab7a7457",))
    with pytest.raises(errors.JobNotFoundError):
        store.enqueue([ok, bad])
    with pytest.raises(errors.JobNotFoundError):
        store.get(ok.id)
    assert store.list_jobs(JobFilter()).jobs == []


def test_a_big_batch_with_dependencies(store: Store, clock: FakeClock) -> None:
    """2,500 jobs in one enqueue, each after the one before: the store takes any batch size."""
    specs = [spec(clock)]
    for _ in range(2_499):
        specs.append(spec(clock, depends_on=(specs[-1].id,)))
    jobs = store.enqueue(specs)
    assert [j.state for j in jobs].count(JobState.BLOCKED) == 2_499
    run(store, specs[0].id)
    assert store.get(specs[1].id).state is JobState.QUEUED
    assert store.get(specs[2].id).state is JobState.BLOCKED


# -- release --------------------------------------------------------------------------------


def test_last_dependency_to_end_releases(store: Store, clock: FakeClock) -> None:
    a, b = store.enqueue([spec(clock), spec(clock)])
    [down] = store.enqueue([spec(clock, depends_on=(a.id, b.id, a.id))])
    first, second = claim(store, 2)
    assert complete(store, first.id, first.lease.token, 1)
    assert store.get(down.id).state is JobState.BLOCKED
    assert complete(store, second.id, second.lease.token, 2)
    assert store.get(down.id).state is JobState.QUEUED
    assert state_events(store, down.id) == ["blocked", "queued"]
    assert claim_one(store).id == down.id


def test_released_job_due_later_is_scheduled(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock)])
    [down] = store.enqueue([spec(clock, depends_on=(up.id,), run_at=clock() + 60)])
    assert down.state is JobState.BLOCKED
    run(store, up.id)
    assert store.get(down.id).state is JobState.SCHEDULED
    clock.advance(61)
    store.rescue()
    assert claim_one(store).id == down.id


def test_failure_releases_only_when_final(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock, max_attempts=2, backoff_s=0)])
    [down] = store.enqueue([spec(clock, depends_on=(up.id,))])
    job = claim_one(store)
    assert fail(store, job.id, job.lease.token, JobError(type="E"))
    assert states(store, up.id, down.id) == [JobState.SCHEDULED, JobState.BLOCKED]
    clock.advance(1)
    store.rescue()
    job = claim_one(store)
    assert fail(store, job.id, job.lease.token, JobError(type="E"))
    assert states(store, up.id, down.id) == [JobState.FAILED, JobState.QUEUED]


def test_cancel_releases_and_a_blocked_job_cancels_at_once(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock)])
    mid, end = spec(clock, depends_on=(up.id,)), spec(clock)
    store.enqueue([mid, replace(end, depends_on=(mid.id,))])
    assert states(store, mid.id, end.id) == [JobState.BLOCKED, JobState.BLOCKED]
    cancelled = store.cancel(mid.id)
    assert cancelled.state is JobState.CANCELLED
    assert states(store, up.id, mid.id, end.id) == [
        JobState.QUEUED, JobState.CANCELLED, JobState.QUEUED
    ]  # fmt: skip
    # the upstream ending later changes nothing for the cancelled job
    run(store, up.id)
    assert store.get(mid.id).state is JobState.CANCELLED


def test_cancel_of_a_running_dependency_releases_when_it_ends(
    store: Store, clock: FakeClock
) -> None:
    [up] = store.enqueue([spec(clock)])
    [down] = store.enqueue([spec(clock, depends_on=(up.id,))])
    job = claim_one(store)
    store.cancel(up.id)
    assert store.get(down.id).state is JobState.BLOCKED
    assert store.settle([Settlement(job.id, job.lease.token, Outcome.CANCELLED)]) == [True]
    assert store.get(down.id).state is JobState.QUEUED


def test_rescue_to_failed_releases(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock, max_attempts=1)])
    [down] = store.enqueue([spec(clock, depends_on=(up.id,))])
    assert down.state is JobState.BLOCKED
    claim_one(store)
    clock.advance(LEASE + 1)
    assert store.rescue() == [up.id]
    assert states(store, up.id, down.id) == [JobState.FAILED, JobState.QUEUED]


def test_blocked_jobs_are_counted_and_not_deletable(store: Store, clock: FakeClock) -> None:
    [up] = store.enqueue([spec(clock)])
    [down] = store.enqueue([spec(clock, depends_on=(up.id,))])
    [stats] = store.queue_stats()
    assert (stats.blocked, stats.queued) == (1, 1)
    with pytest.raises(errors.InvalidStateError):
        store.delete(down.id)


def test_one_release_when_dependencies_end_concurrently(store: Store, clock: FakeClock) -> None:
    """Two workers settle the two dependencies of 50 jobs at the same time: each dependent is
    released exactly once."""
    pairs = [store.enqueue([spec(clock), spec(clock)]) for _ in range(50)]
    downs = store.enqueue([spec(clock, depends_on=(a.id, b.id)) for a, b in pairs])
    leases = {job.id: job.lease.token for job in claim(store, 100)}
    assert len(leases) == 100
    barrier = threading.Barrier(2)

    def settle(side: int) -> None:
        barrier.wait(timeout=10)
        for pair in pairs:
            job = pair[side]
            store.settle([Settlement(job.id, leases[job.id], Outcome.SUCCEEDED)])

    threads = [threading.Thread(target=settle, args=(side,)) for side in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for down in downs:
        assert state_events(store, down.id) == ["blocked", "queued"]
    assert len(claim(store, 100)) == 50


# -- children (Outcome.WAIT) ------------------------------------------------------------------


def children(clock: FakeClock, parent_id: str, n: int) -> list[JobSpec]:
    return [spec(clock, parent_id=parent_id, input={"i": i}) for i in range(n)]


def all_children(store: Store, parent_id: str) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = store.list_jobs(JobFilter(parent_id=parent_id), cursor, 1000)
        ids += [j.id for j in page.jobs]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor


def test_wait_blocks_on_children_and_resumes_with_continuation(
    store: Store, clock: FakeClock
) -> None:
    [parent] = store.enqueue([spec(clock)])
    job = claim_one(store)
    kids = children(clock, parent.id, 3)
    wait = Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=kids, continuation={"k": 1})
    assert store.settle([wait]) == [True]
    got = store.get(parent.id)
    assert got.state is JobState.BLOCKED
    assert got.attempt == 0, "a wait gives its attempt back"
    assert got.lease is None
    assert got.continuation == {"k": 1}
    assert sorted(all_children(store, parent.id)) == sorted(k.id for k in kids)
    assert all(store.get(k.id).parent_id == parent.id for k in kids)
    assert not complete(store, job.id, job.lease.token, "late"), "the lease has ended"
    running = claim(store, 10)
    assert sorted(j.id for j in running) == sorted(k.id for k in kids)
    for child in running[:-1]:
        assert complete(store, child.id, child.lease.token, "ok")
        assert store.get(parent.id).state is JobState.BLOCKED
    last = running[-1]
    assert fail(store, last.id, last.lease.token, JobError(type="E"), retry=False)
    resumed = claim_one(store)
    assert resumed.id == parent.id
    assert resumed.attempt == 1
    assert resumed.continuation == {"k": 1}
    assert state_events(store, parent.id) == ["queued", "running", "blocked", "queued", "running"]


def test_wait_with_no_children_queues_at_once(store: Store, clock: FakeClock) -> None:
    [parent] = store.enqueue([spec(clock)])
    job = claim_one(store)
    store.settle([Settlement(job.id, job.lease.token, Outcome.WAIT, continuation="c")])
    again = claim_one(store)
    assert (again.id, again.attempt, again.continuation) == (parent.id, 1, "c")


def test_wait_after_a_cancel_request_cancels_and_spawns_nothing(
    store: Store, clock: FakeClock
) -> None:
    [parent] = store.enqueue([spec(clock)])
    job = claim_one(store)
    store.cancel(parent.id)
    wait = Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=children(clock, parent.id, 2))
    assert store.settle([wait]) == [True]
    assert store.get(parent.id).state is JobState.CANCELLED
    assert all_children(store, parent.id) == []


def test_cancel_of_a_waiting_parent_is_immediate(store: Store, clock: FakeClock) -> None:
    [parent] = store.enqueue([spec(clock)])
    job = claim_one(store)
    kids = children(clock, parent.id, 2)
    store.settle([Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=kids)])
    assert len(all_children(store, parent.id)) == 2
    assert store.cancel(parent.id).state is JobState.CANCELLED
    for child in claim(store, 2):
        assert complete(store, child.id, child.lease.token, None)
    assert store.get(parent.id).state is JobState.CANCELLED
    assert claim(store) == []


def test_thousands_of_children_in_one_wait(store: Store, clock: FakeClock) -> None:
    [parent] = store.enqueue([spec(clock)])
    job = claim_one(store)
    kids = children(clock, parent.id, 2_500)
    assert store.settle([Settlement(job.id, job.lease.token, Outcome.WAIT, spawn=kids)]) == [True]
    assert len(all_children(store, parent.id)) == 2_500
    done = 0
    while done < 2_500:
        batch = claim(store, 400)
        assert batch and parent.id not in {j.id for j in batch}
        store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED) for j in batch])
        done += len(batch)
    assert [j.id for j in claim(store, 10)] == [parent.id]


# -- rewind -----------------------------------------------------------------------------------


def test_rewind_reruns_failed_steps_and_their_dependents(store: Store, clock: FakeClock) -> None:
    [a] = store.enqueue([spec(clock, max_attempts=1, workflow_id="wf")])
    [b] = store.enqueue([spec(clock, depends_on=(a.id,), workflow_id="wf")])
    job = claim_one(store)
    assert fail(store, job.id, job.lease.token, JobError(type="E"))
    skipped = claim_one(store)  # the worker skips b: its upstream failed
    store.settle([Settlement(skipped.id, skipped.lease.token, Outcome.CANCELLED)])
    rewound = store.rewind([b.id, a.id])
    assert [(j.id, j.state, j.attempt) for j in rewound] == [
        (b.id, JobState.BLOCKED, 0), (a.id, JobState.QUEUED, 0)
    ]  # fmt: skip
    assert claim_one(store).id == a.id
    assert claim(store) == []
    rerun = store.get(a.id)
    assert complete(store, a.id, rerun.lease.token, "ok")
    assert claim_one(store).id == b.id


def test_rewind_does_not_wait_for_a_final_dependency(store: Store, clock: FakeClock) -> None:
    [a] = store.enqueue([spec(clock)])
    [b] = store.enqueue([spec(clock, depends_on=(a.id,))])
    run(store, a.id)
    job = claim_one(store)
    assert fail(store, job.id, job.lease.token, JobError(type="E"), retry=False)
    [again] = store.rewind([b.id])
    assert again.state is JobState.QUEUED


def test_rewind_refuses_jobs_that_are_not_failed_or_cancelled(
    store: Store, clock: FakeClock
) -> None:
    [a, b] = store.enqueue([spec(clock), spec(clock)])
    job = claim_one(store)
    assert fail(store, job.id, job.lease.token, JobError(type="E"), retry=False)
    with pytest.raises(errors.InvalidStateError):
        store.rewind([a.id, b.id])
    assert states(store, a.id, b.id) == [JobState.FAILED, JobState.QUEUED]
    with pytest.raises(errors.JobNotFoundError):
        store.rewind([a.id, "01a2175a-250b-7149-80ca-6fd5ab7a7457"])
    assert store.get(a.id).state is JobState.FAILED


# -- lists --------------------------------------------------------------------------------


def test_list_by_workflow_and_by_parent_pages(store: Store, clock: FakeClock) -> None:
    ids = [j.id for j in store.enqueue([spec(clock, workflow_id="wf") for _ in range(5)])]
    store.enqueue([spec(clock, workflow_id="other"), spec(clock)])

    def pages(f: JobFilter) -> Iterator[str]:
        cursor = None
        while True:
            page = store.list_jobs(f, cursor, 2)
            yield from (j.id for j in page.jobs)
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    assert list(pages(JobFilter(workflow_id="wf"))) == sorted(ids, reverse=True)
    assert list(pages(JobFilter(workflow_id="wf", state=[JobState.QUEUED]))) == sorted(
        ids, reverse=True
    )
    assert list(pages(JobFilter(parent_id=ids[0]))) == []


# -- races ------------------------------------------------------------------------------------


def race(*workers: object) -> None:
    """Run the callables in threads started together; re-raise the first error."""
    barrier = threading.Barrier(len(workers))
    failures: list[BaseException] = []

    def run(work: object) -> None:
        barrier.wait(timeout=10)
        try:
            work()  # type: ignore[operator]
        except BaseException as exc:  # surfaced below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    if failures:
        raise failures[0]


def test_cancel_races_the_release(store: Store, clock: FakeClock) -> None:
    """Dependents are cancelled while their parents are settled: each ends cancelled, and a
    cancelled job is never queued afterwards."""
    ups = store.enqueue([spec(clock) for _ in range(40)])
    downs = store.enqueue([spec(clock, depends_on=(u.id,)) for u in ups])
    leases = {job.id: job.lease.token for job in claim(store, 40)}

    def settle() -> None:
        for up in ups:
            store.settle([Settlement(up.id, leases[up.id], Outcome.SUCCEEDED)])

    def cancel() -> None:
        for down in downs:
            store.cancel(down.id)

    race(settle, cancel)
    for down in downs:
        events = state_events(store, down.id)
        assert store.get(down.id).state is JobState.CANCELLED
        assert events[-1] == "cancelled" and events.count("queued") <= 1, events
    assert claim(store, 100) == []


def test_rewind_races_the_release(store: Store, clock: FakeClock) -> None:
    """Cancelled dependents are rewound while their running parents are settled: whichever
    commits first, each ends queued exactly once (never stuck blocked, never queued twice)."""
    ups = store.enqueue([spec(clock) for _ in range(40)])
    downs = store.enqueue([spec(clock, depends_on=(u.id,)) for u in ups])
    leases = {job.id: job.lease.token for job in claim(store, 40)}
    for down in downs:
        store.cancel(down.id)

    def settle() -> None:
        for up in ups:
            store.settle([Settlement(up.id, leases[up.id], Outcome.SUCCEEDED)])

    def rewind() -> None:
        for down in downs:
            store.rewind([down.id])

    race(settle, rewind)
    for down in downs:
        events = state_events(store, down.id)
        assert events[-1] == "queued", events
        assert events.count("queued") == 1, events
    assert sorted(j.id for j in claim(store, 100)) == sorted(d.id for d in downs)
