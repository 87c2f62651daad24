"""Store protocol v2, section 2 (#20): limits, unique jobs, queue controls and token buckets.

Every test runs against every backend; `IMPLEMENTED` says which backends are expected to pass
yet (the others are strict xfails, so a backend that starts passing must be listed).
"""

from __future__ import annotations

import threading

import pytest

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.models import JobFilter, JobState, Limit
from conveyor.store import Beat, BeatStatus, Store
from conveyor.store.base import complete
from tests.backends import Backend
from tests.conformance.helpers import enqueue, spec

LEASE = 30.0
IMPLEMENTED: set[str] = {"sqlite", "memory", "postgres", "redis"}


@pytest.fixture(autouse=True)
def _pending(request: pytest.FixtureRequest, backend: Backend) -> None:
    if backend.name not in IMPLEMENTED:
        request.applymarker(pytest.mark.xfail(strict=True, reason="limits not built yet"))


def claim(store: Store, n: int = 10, queues: tuple[str, ...] = ("default",)) -> list[str]:
    return [job.id for job in store.claim(list(queues), "w1", n, LEASE)]


def reason(store: Store, job_id: str) -> str | None:
    return store.get(job_id).waiting_reason


# -- the limits themselves ------------------------------------------------------------------------


def test_limits_are_set_replaced_listed_and_deleted(store: Store) -> None:
    assert store.limits() == []
    stored = store.set_limit(Limit(target="kind:noop", max_running=2))
    assert stored.max_running == 2 and stored.updated_at is not None
    store.set_limit(Limit(target="queue:default", rate=10, per_s=60))
    store.set_limit(Limit(target="kind:noop", max_running=5))
    store.set_limit(Limit(target="key:noop", max_running=1, strategy="cancel_newest"))
    got = {limit.target: limit for limit in store.limits()}
    assert [limit.target for limit in store.limits()] == ["key:noop", "kind:noop", "queue:default"]
    assert got["kind:noop"].max_running == 5 and got["key:noop"].strategy == "cancel_newest"
    assert got["queue:default"].rate == 10 and got["queue:default"].per_s == 60
    assert got["queue:default"].max_running is None
    assert store.delete_limit("kind:noop") is True
    assert store.delete_limit("kind:noop") is False
    assert [limit.target for limit in store.limits()] == ["key:noop", "queue:default"]


def test_no_limits_leaves_claims_and_jobs_alone(store: Store, clock: FakeClock) -> None:
    ids = enqueue(store, clock, 3, concurrency_key="a")
    assert reason(store, ids[0]) is None
    assert store.get(ids[0]).concurrency_key == "a"
    assert sorted(claim(store)) == sorted(ids)


# -- queue controls ------------------------------------------------------------------------------


def test_a_paused_queue_is_not_claimed_until_resumed(store: Store, clock: FakeClock) -> None:
    [held] = enqueue(store, clock)
    [other] = enqueue(store, clock, queue="other")
    store.pause_queue("default", True)
    assert claim(store, queues=("default", "other")) == [other]
    assert reason(store, held) == "queue_paused"
    stats = {s.name: s for s in store.queue_stats()}
    assert stats["default"].paused is True and stats["other"].paused is False
    [late] = enqueue(store, clock)  # submits still land
    store.pause_queue("default", False)
    assert reason(store, held) is None
    assert sorted(claim(store)) == sorted([held, late])
    assert not any(s.paused for s in store.queue_stats())


def test_pausing_an_empty_queue_shows_in_stats(store: Store) -> None:
    store.pause_queue("quiet", True)
    stats = {s.name: s for s in store.queue_stats()}
    assert stats["quiet"].paused is True and stats["quiet"].queued == 0


def test_purge_cancels_waiting_jobs_only(store: Store, clock: FakeClock) -> None:
    [running] = enqueue(store, clock)
    assert claim(store, 1) == [running]
    waiting = enqueue(store, clock, 3) + enqueue(store, clock, run_at=clock() + 60)
    [elsewhere] = enqueue(store, clock, queue="other")
    assert store.purge_queue("default") == 4
    for job_id in waiting:
        job = store.get(job_id)
        assert job.state is JobState.CANCELLED and job.finished_at is not None
        assert store.events(job_id)[-1].data == {"state": "cancelled", "reason": "purged"}
    assert store.get(running).state is JobState.RUNNING
    assert store.get(elsewhere).state is JobState.QUEUED
    assert store.purge_queue("default") == 0
    clock.advance(61)
    assert claim(store) == []  # the purged scheduled job stays cancelled


# -- concurrency limits --------------------------------------------------------------------------


def test_kind_max_running_holds_jobs_back(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="kind:noop", max_running=2))
    ids = enqueue(store, clock, 5)
    [other] = enqueue(store, clock, kind="other")
    first = store.claim(["default"], "w1", 10, LEASE)
    assert sorted(j.id for j in first) == sorted([*ids[:2], other])
    assert [reason(store, i) for i in ids[2:]] == ["concurrency_limited"] * 3
    assert claim(store) == []
    assert complete(store, first[0].id, first[0].lease.token, None)  # type: ignore[union-attr]
    assert claim(store) == [ids[2]]


def test_queue_max_running_holds_jobs_back(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="queue:default", max_running=1))
    ids = enqueue(store, clock, 3)
    [other] = enqueue(store, clock, queue="other")
    assert sorted(claim(store, queues=("default", "other"))) == sorted([ids[0], other])
    assert reason(store, ids[1]) == "concurrency_limited"
    assert reason(store, other) is None


def test_per_key_max_running_counts_each_key(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=1))
    a1, a2 = enqueue(store, clock, 2, concurrency_key="a")
    [b1] = enqueue(store, clock, concurrency_key="b")
    [plain] = enqueue(store, clock)  # no key: the per-key limit does not apply
    assert sorted(claim(store)) == sorted([a1, b1, plain])
    assert reason(store, a2) == "concurrency_limited"


def test_keys_take_turns_least_recently_started_first(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=100))
    a = enqueue(store, clock, 4, concurrency_key="a")  # a's jobs are the oldest
    clock.advance(1)
    b = enqueue(store, clock, 2, concurrency_key="b")
    clock.advance(1)
    c = enqueue(store, clock, 1, concurrency_key="c")
    # one claim takes one job of each key before a second of any
    assert claim(store, 3) == [a[0], b[0], c[0]]
    clock.advance(1)
    # across claims too: a started first, so after the next a and b come ...
    assert claim(store, 1) == [a[1]]
    clock.advance(1)
    assert claim(store, 1) == [b[1]]
    clock.advance(1)
    assert claim(store, 5) == [a[2], a[3]]


def test_a_higher_priority_still_goes_first(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=100))
    enqueue(store, clock, 3, concurrency_key="a")
    [urgent] = enqueue(store, clock, concurrency_key="a", priority=5)
    assert claim(store, 1) == [urgent]


def test_a_changed_limit_is_read_by_the_next_claim(store: Store, clock: FakeClock) -> None:
    ids = enqueue(store, clock, 6)
    store.set_limit(Limit(target="kind:noop", max_running=1))
    assert claim(store) == ids[:1]
    store.set_limit(Limit(target="kind:noop", max_running=3))
    assert claim(store) == ids[1:3]
    assert store.delete_limit("kind:noop")
    assert claim(store) == ids[3:]


def test_limits_hold_with_kind_and_tag_filters(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="kind:noop", max_running=1))
    ids = enqueue(store, clock, 3, tags=("t",))
    got = store.claim(["default"], "w1", 10, LEASE, kinds=["noop"], tag="t")
    assert [j.id for j in got] == ids[:1]


def test_a_retried_job_counts_again(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=1))
    a1, _ = enqueue(store, clock, 2, concurrency_key="a")
    [job] = store.claim(["default"], "w1", 10, LEASE)
    assert job.id == a1
    # the lease is lost: the job is queued again (attempts left) and no longer running
    clock.advance(LEASE + 1)
    assert store.rescue() == [a1]
    clock.advance(3600)
    assert len(claim(store)) == 1  # a1 (retry due) or a2: one of key a at a time
    assert claim(store) == []


# -- rate limits ---------------------------------------------------------------------------------


def test_kind_rate_limit_takes_slots_at_claim(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="kind:noop", rate=2, per_s=10))
    ids = enqueue(store, clock, 5)
    assert claim(store) == ids[:2]
    assert reason(store, ids[2]) == "rate_limited"
    clock.advance(5)  # one start's worth refilled
    assert claim(store) == ids[2:3]
    assert claim(store) == []
    clock.advance(1000)  # a full bucket holds `rate` starts, no more
    assert claim(store) == ids[3:5]


def test_per_key_rate_limit(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", rate=1, per_s=60))
    a1, a2 = enqueue(store, clock, 2, concurrency_key="a")
    [b1] = enqueue(store, clock, concurrency_key="b")
    assert sorted(claim(store)) == sorted([a1, b1])
    assert reason(store, a2) == "rate_limited"
    clock.advance(61)
    assert claim(store) == [a2]


def test_rate_and_concurrency_together(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="queue:default", max_running=1, rate=2, per_s=1000))
    ids = enqueue(store, clock, 4)
    [job] = store.claim(["default"], "w1", 10, LEASE)
    assert job.id == ids[0]  # the concurrency limit holds the rest ...
    assert claim(store) == []
    assert complete(store, job.id, job.lease.token, None)  # type: ignore[union-attr]
    assert claim(store) == ids[1:2]  # ... and took no rate slot for the ones it held
    assert reason(store, ids[2]) == "concurrency_limited"


# -- strategies ----------------------------------------------------------------------------------


def test_cancel_newest_cancels_a_submit_over_the_limit(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=1, strategy="cancel_newest"))
    [a1] = store.enqueue([spec(clock, concurrency_key="a")])
    [a2, b1] = store.enqueue([spec(clock, concurrency_key="a"), spec(clock, concurrency_key="b")])
    assert a1.state is JobState.QUEUED and b1.state is JobState.QUEUED
    assert a2.state is JobState.CANCELLED
    stored = store.get(a2.id)
    assert stored.state is JobState.CANCELLED and stored.finished_at is not None
    assert store.events(a2.id)[-1].data["reason"] == "concurrency_limited"
    assert sorted(claim(store)) == sorted([a1.id, b1.id])
    [a3] = store.enqueue([spec(clock, concurrency_key="a")])  # a1 is running: still over
    assert a3.state is JobState.CANCELLED


def test_cancel_in_progress_stops_the_oldest(store: Store, clock: FakeClock) -> None:
    store.set_limit(Limit(target="key:noop", max_running=1, strategy="cancel_in_progress"))
    [a1] = enqueue(store, clock, concurrency_key="a")
    [job] = store.claim(["default"], "w1", 1, LEASE)
    [a2] = enqueue(store, clock, concurrency_key="a")
    assert store.get(a1).cancel_requested is True
    assert store.heartbeat([Beat(a1, job.lease.token)], LEASE) == {a1: BeatStatus.CANCEL}  # type: ignore[union-attr]
    assert store.get(a2).state is JobState.QUEUED
    assert claim(store) == []  # a1 still runs until it stops
    assert complete(store, a1, job.lease.token, None)  # type: ignore[union-attr]
    assert claim(store) == [a2]
    # a waiting one is cancelled at once
    [a3] = enqueue(store, clock, concurrency_key="a")
    assert store.get(a2).cancel_requested is True
    [a4] = enqueue(store, clock, concurrency_key="a")
    assert store.get(a3).state is JobState.CANCELLED
    assert store.get(a4).state is JobState.QUEUED


# -- unique jobs ---------------------------------------------------------------------------------


def test_a_unique_duplicate_returns_the_waiting_job(store: Store, clock: FakeClock) -> None:
    [first] = store.enqueue([spec(clock, unique_key="report:7")])
    [again] = store.enqueue([spec(clock, unique_key="report:7")])
    assert again.id == first.id
    [other] = store.enqueue([spec(clock, unique_key="report:8")])
    assert other.id != first.id
    assert len(store.list_jobs(JobFilter()).jobs) == 2


def test_unique_within_one_batch(store: Store, clock: FakeClock) -> None:
    a, b = store.enqueue([spec(clock, unique_key="u"), spec(clock, unique_key="u")])
    assert a.id == b.id
    assert store.get(a.id).unique_key == "u"


def test_unique_scope_waiting_or_active(store: Store, clock: FakeClock) -> None:
    [first] = store.enqueue([spec(clock, unique_key="u", unique_scope="waiting")])
    assert claim(store) == [first.id]
    [active] = store.enqueue([spec(clock, unique_key="u", unique_scope="active")])
    assert active.id == first.id  # still running: a duplicate while active
    [waiting] = store.enqueue([spec(clock, unique_key="u", unique_scope="waiting")])
    assert waiting.id != first.id  # running is not waiting: a new job
    [job] = store.claim(["default"], "w1", 1, LEASE)
    assert job.id == waiting.id
    [again] = store.enqueue([spec(clock, unique_key="u", unique_scope="waiting")])
    assert again.id not in (first.id, waiting.id)  # both run: nothing waits


def test_unique_after_the_job_finished_makes_a_new_one(store: Store, clock: FakeClock) -> None:
    [first] = store.enqueue([spec(clock, unique_key="u")])
    [job] = store.claim(["default"], "w1", 1, LEASE)
    assert store.enqueue([spec(clock, unique_key="u")])[0].id == first.id
    assert complete(store, job.id, job.lease.token, None)  # type: ignore[union-attr]
    [second] = store.enqueue([spec(clock, unique_key="u")])
    assert second.id != first.id and second.state is JobState.QUEUED


def test_unique_window(store: Store, clock: FakeClock) -> None:
    [first] = store.enqueue([spec(clock, unique_key="u", unique_window_s=60)])
    clock.advance(30)
    [same] = store.enqueue([spec(clock, unique_key="u", unique_window_s=60)])
    assert same.id == first.id
    clock.advance(31)
    [fresh] = store.enqueue([spec(clock, unique_key="u", unique_window_s=60)])
    assert fresh.id != first.id
    [again] = store.enqueue([spec(clock, unique_key="u", unique_window_s=60)])
    assert again.id == fresh.id


def test_concurrent_unique_submits_make_one_job(backend: Backend, clock: FakeClock) -> None:
    if not backend.shared:
        pytest.skip("one process only")
    stores = [backend.open(clock) for _ in range(4)]
    try:
        found: list[str] = []
        start = threading.Barrier(len(stores))

        def submit(store: Store) -> None:
            start.wait(timeout=30)
            for _ in range(10):
                [job] = store.enqueue([spec(clock, unique_key="race")])
                found.append(job.id)

        threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(found) == 40 and len(set(found)) == 1
        assert len(stores[0].list_jobs(JobFilter()).jobs) == 1
    finally:
        for opened in stores:
            opened.close()


# -- fields and token buckets --------------------------------------------------------------------


def test_new_fields_are_stored_and_read_back(store: Store, clock: FakeClock) -> None:
    tick = clock() - 30
    [made] = store.enqueue([
        spec(clock, concurrency_key="tenant-1", unique_key="u1", schedule_id="nightly",
             schedule_tick=tick),
    ])  # fmt: skip
    for job in (made, store.get(made.id), store.list_jobs(JobFilter()).jobs[0]):
        assert job.concurrency_key == "tenant-1"
        assert job.unique_key == "u1"
        assert job.schedule_id == "nightly"
        assert job.schedule_tick is not None and job.schedule_tick.timestamp() == tick
    [claimed] = store.claim(["default"], "w1", 1, LEASE)
    assert claimed.concurrency_key == "tenant-1" and claimed.schedule_id == "nightly"


def test_take_tokens_is_a_token_bucket(store: Store, clock: FakeClock) -> None:
    assert store.take_tokens("api:k1", 3, 5, 10) == 0
    wait = store.take_tokens("api:k1", 3, 5, 10)  # 2 left, one more needs 2 s
    assert wait == pytest.approx(2.0, abs=0.01)
    assert store.take_tokens("api:k2", 5, 5, 10) == 0  # buckets are separate
    clock.advance(2)
    assert store.take_tokens("api:k1", 3, 5, 10) == 0
    clock.advance(1000)
    assert store.take_tokens("api:k1", 5, 5, 10) == 0  # full, never more than `rate`
    assert store.take_tokens("api:k1", 1, 5, 10) > 0
    with pytest.raises(errors.InvalidInputError):
        store.take_tokens("api:k1", 6, 5, 10)
