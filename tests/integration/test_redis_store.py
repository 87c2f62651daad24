"""Redis-only guarantees the shared conformance suite cannot see.

- Durability guard (reliability-plan S8): with the append-only file off the store refuses to
  start, unless explicitly allowed, and then warns loudly.
- Rescue of >= 20,000 expired leases in one sweep (no Lua `unpack` limits on the way).
- Retention keeps memory bounded: pruned jobs leave no keys, events or feed entries behind.
- Tag indexes: a tag filter reads only the tagged jobs; stores written before the indexes
  existed are back-filled on open.
- The census of waiting kinds per queue: exact through every transition, lets a claim by kind
  skip reading jobs, and a census left wrong (or missing) never hands out a job of a kind the
  worker does not run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.models import JobFilter, JobState
from conveyor.store import Settlement, Store, open_store
from conveyor.store.redis import ALLOW_VOLATILE_ENV, RedisStore
from conveyor.store.rules import Outcome
from tests.conformance.helpers import spec
from tests.integration.harness import PYTHONPATH, ROOT
from tests.servers.redis import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]


# -- durability guard -----------------------------------------------------------------------------


@pytest.fixture
def volatile(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    return redis_factory(appendonly=False)


def test_refuses_to_start_without_persistence(
    volatile: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ALLOW_VOLATILE_ENV, raising=False)
    with pytest.raises(errors.ConfigurationError, match="appendonly"):
        open_store(volatile.url)


def test_cli_refusal_is_one_clear_line(volatile: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "queues", "--store", volatile.url],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": PYTHONPATH},
    )  # fmt: skip
    assert done.returncode == 1
    assert "persistence off" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize("how", ["url", "env"])
def test_override_starts_with_a_loud_warning(
    volatile: RedisServer,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = volatile.url
    if how == "url":
        url += "?allow_no_persistence=1"
    else:
        monkeypatch.setenv(ALLOW_VOLATILE_ENV, "1")
    with caplog.at_level(logging.WARNING, logger="conveyor.store.redis"):
        store = open_store(url)
    try:
        assert any("persistence OFF" in r.getMessage() for r in caplog.records)
        store.ping()
    finally:
        store.close()


def test_persistent_server_starts_without_warning(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="conveyor.store.redis"):
        open_store(redis_url).close()
    assert not caplog.records


def test_unreachable_server_is_unavailable_not_a_crash() -> None:
    from tests.servers.redis import free_port

    with pytest.raises(errors.StoreUnavailableError):
        open_store(f"redis://127.0.0.1:{free_port()}/0")


def test_prefix_namespaces_keys(redis_url: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    a = open_store(redis_url + "?prefix=app1:", clock=clock)
    b = open_store(redis_url + "?prefix=app2:", clock=clock)
    try:
        [job] = a.enqueue([spec(clock)])
        assert b.claim(["default"], "w", 10, 30) == []
        assert [j.id for j in a.claim(["default"], "w", 10, 30)] == [job.id]
        client = redis_server.client()
        assert all(key.startswith("app1:") for key in client.keys("*"))
        client.close()
    finally:
        a.close()
        b.close()


# -- rescue at scale ------------------------------------------------------------------------------

LEASES = 20_000


def test_rescue_of_20k_expired_leases_in_one_sweep(redis_url: str) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    try:
        for _ in range(0, LEASES, 5000):
            store.enqueue([spec(clock, backoff_s=0.0) for _ in range(5000)])
        claimed = store.claim(["default"], "w1", LEASES, 30.0)
        assert len(claimed) == LEASES
        clock.advance(31)
        started = time.perf_counter()
        rescued = store.rescue()
        took = time.perf_counter() - started
        print(f"\nrescued {len(rescued)} expired leases in one sweep in {took:.2f}s")
        assert sorted(rescued) == sorted(j.id for j in claimed)
        [stats] = store.queue_stats()
        assert stats.running == 0
        assert stats.queued + stats.scheduled == LEASES
        # Every old token is fenced off; the jobs run again as attempt 2.
        stale = [
            Settlement(j.id, j.lease.token, Outcome.SUCCEEDED) for j in claimed[:100] if j.lease
        ]
        assert store.settle(stale) == [False] * 100
        clock.advance(1)
        again = store.claim(["default"], "w2", 10, 30.0)
        assert {j.attempt for j in again} == {2}
    finally:
        store.close()


def test_rescue_by_owner_takes_only_its_leases(redis_url: str) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    try:
        store.enqueue([spec(clock) for _ in range(2000)])
        mine = store.claim(["default"], "gone", 1000, 30.0)
        others = store.claim(["default"], "alive", 1000, 30.0)
        rescued = store.rescue(owner="gone")
        assert sorted(rescued) == sorted(j.id for j in mine)
        assert store.get(others[0].id).state is JobState.RUNNING
    finally:
        store.close()


# -- retention ------------------------------------------------------------------------------------


def test_prune_leaves_nothing_behind(redis_url: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    assert isinstance(store, RedisStore)
    client = redis_server.client()
    try:
        store.register_kinds([])
        baseline = set(client.keys("*"))
        for _ in range(3):
            store.enqueue([spec(clock, tags=("batch", f"t{i}")) for i in range(500)])
            jobs = store.claim(["default"], "w", 500, 30.0)
            assert all(store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED)
                                     for j in jobs if j.lease]))  # fmt: skip
            clock.advance(10)
            assert len(store.prune(clock() - 5)) == 500
        left = set(client.keys("*")) - baseline
        # Only fixed-size bookkeeping remains: counters, the sequence, the queue list.
        assert left <= {"conveyor:seq", "conveyor:queues", "conveyor:counts:default"}
        assert client.zcard("conveyor:feed") == 0
        assert store.queue_stats() == []
        assert store.feed() == []
    finally:
        client.close()
        store.close()


def test_listing_by_state_reads_only_that_state(redis_url: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    client = redis_server.client()
    try:
        store.enqueue([spec(clock) for _ in range(3000)])
        jobs = store.claim(["default"], "w", 3000, 30.0)
        store.settle(
            [Settlement(j.id, j.lease.token, Outcome.SUCCEEDED) for j in jobs[3:] if j.lease]
        )
        store.cancel(jobs[0].id)  # still running, cancel requested
        client.config_resetstat()
        page = store.list_jobs(JobFilter(state=[JobState.RUNNING, JobState.QUEUED]), limit=10)
        reads = int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
        assert [j.id for j in page.jobs] == sorted((j.id for j in jobs[:3]), reverse=True)
        assert reads <= 3, "only the running jobs' hashes are read, not the 2,997 finished"
        # the index follows every transition: per state it matches the counters (running
        # jobs are indexed by their leases)
        for state in ("running", "succeeded", "queued"):
            counted = int(client.hget("conveyor:counts:default", state) or 0)
            index = "conveyor:leases" if state == "running" else f"conveyor:st:{state}"
            assert client.zcard(index) == counted
        [job] = store.list_jobs(JobFilter(state=[JobState.SUCCEEDED]), limit=1).jobs
        assert job.id == max(j.id for j in jobs[3:])
    finally:
        client.close()
        store.close()


def test_listing_by_tag_reads_only_tagged_jobs(redis_url: str, redis_server: RedisServer) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    client = redis_server.client()
    try:
        specs = [spec(clock, tags=("rare",) if i % 1000 == 0 else ("common",)) for i in range(3000)]
        store.enqueue(specs)
        jobs = store.claim(["default"], "w", 2999, 30.0)
        store.settle([Settlement(j.id, j.lease.token, Outcome.SUCCEEDED) for j in jobs if j.lease])
        client.config_resetstat()
        page = store.list_jobs(JobFilter(tag="rare", state=[JobState.SUCCEEDED]), limit=10)
        reads = int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
        rare = sorted((s.id for s in specs if s.tags == ("rare",)), reverse=True)
        assert [j.id for j in page.jobs] == rare
        assert reads <= 3, "only the 3 tagged jobs' hashes are read"
        client.config_resetstat()
        [waiting] = store.list_jobs(JobFilter(tag="common", state=[JobState.QUEUED])).jobs
        reads = int(client.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0))
        assert waiting.id == specs[-1].id
        assert reads <= 1, "the one queued job is fewer than the tag's 2,997: read by state"
    finally:
        client.close()
        store.close()


def test_claim_by_a_common_tag_walks_the_ready_set_in_claim_order(redis_url: str) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    try:
        specs = [spec(clock, tags=("common",), priority=i % 3) for i in range(20)]
        store.enqueue([*specs, spec(clock), spec(clock, tags=("other",))])
        claimed = store.claim(["default"], "w", 5, 30.0, tag="common")
        best = sorted(specs, key=lambda s: (-s.priority, s.run_at, s.id))[:5]
        assert [j.id for j in claimed] == [s.id for s in best]
    finally:
        store.close()


def test_a_store_from_before_tag_indexes_is_back_filled_on_open(
    redis_url: str, redis_server: RedisServer
) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    client = redis_server.client()
    try:
        specs = [spec(clock, tags=("old", f"n{i}")) for i in range(2500)]
        store.enqueue(specs)
        store.close()
        # What an older conveyor left: the same jobs, no tag indexes.
        client.delete("conveyor:indexed:tags", *client.keys("conveyor:tag:*"))
        store = open_store(redis_url, clock=clock)
        assert client.exists("conveyor:indexed:tags")
        page = store.list_jobs(JobFilter(tag="old"), limit=3000)
        assert [j.id for j in page.jobs] == sorted((s.id for s in specs), reverse=True)
        assert [j.id for j in store.claim(["default"], "w", 5, 30.0, tag="n7")] == [specs[7].id]
    finally:
        client.close()
        store.close()


def census(client: Any, queue: str = "default") -> dict[str, int]:
    return {k: int(v) for k, v in client.hgetall(f"conveyor:waiting:{queue}").items()}


@pytest.fixture
def opened(redis_url: str, redis_server: RedisServer) -> Iterator[tuple[FakeClock, Store, Any]]:
    """A store on a fake clock and a plain client on the same server."""
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    client = redis_server.client()
    yield clock, store, client
    client.close()
    store.close()


def test_census_of_waiting_kinds_follows_every_transition(
    opened: tuple[FakeClock, Store, Any],
) -> None:
    clock, store, client = opened
    store.enqueue([spec(clock, kind="a") for _ in range(4)])
    store.enqueue([spec(clock, kind="b"), spec(clock, kind="b", run_at=clock() + 5)])
    assert census(client) == {"a": 4, "b": 2}
    first, second, third = store.claim(["default"], "w", 3, 30.0, kinds=["a"])
    assert census(client) == {"a": 1, "b": 2}
    store.settle([
        Settlement(first.id, first.lease.token, Outcome.SUCCEEDED),  # type: ignore[union-attr]
        Settlement(second.id, second.lease.token, Outcome.FAILED),  # type: ignore[union-attr]
    ])  # fmt: skip
    assert census(client) == {"a": 2, "b": 2}  # the failure waits for its retry
    store.cancel(third.id)  # running: stays running until its worker stops
    [waiting_b] = [j for j in store.list_jobs(JobFilter(state=[JobState.QUEUED])).jobs
                   if j.kind == "b"]  # fmt: skip
    store.cancel(waiting_b.id)
    assert census(client) == {"a": 2, "b": 1}
    clock.advance(10)  # the scheduled b becomes due and is promoted: still waiting
    store.claim(["default"], "w", 10, 30.0, kinds=["z"])
    assert census(client) == {"a": 2, "b": 1}
    store.retry(waiting_b.id)
    assert census(client) == {"a": 2, "b": 2}
    claimed = store.claim(["default"], "w", 10, 30.0)
    assert len(claimed) == 4 and census(client) == {}


def test_claim_by_kind_reads_no_job_first_when_the_census_allows(
    opened: tuple[FakeClock, Store, Any],
) -> None:
    clock, store, client = opened
    only_a = [spec(clock, kind="a") for _ in range(50)]
    store.enqueue(only_a)
    client.config_resetstat()
    got = store.claim(["default"], "w", 10, 30.0, kinds=["a", "b"])
    assert [j.id for j in got] == [s.id for s in only_a[:10]]
    assert "cmdstat_hmget" not in client.info("commandstats")
    mixed = [spec(clock, kind="b"), spec(clock, kind="c")]
    store.enqueue(mixed)
    client.config_resetstat()
    got = store.claim(["default"], "w", 50, 30.0, kinds=["c"])
    assert [j.id for j in got] == [mixed[1].id]  # a "c" is waiting: jobs are checked
    assert "cmdstat_hmget" in client.info("commandstats")


def test_a_wrong_or_missing_census_never_hands_out_a_foreign_kind(
    redis_url: str, opened: tuple[FakeClock, Store, Any]
) -> None:
    clock, store, client = opened
    foreign = [spec(clock, kind="x") for _ in range(3)]
    mine = [spec(clock, kind="a") for _ in range(3)]
    store.enqueue([*foreign, *mine])
    # What an older conveyor leaves: jobs it enqueued are missing from the census.
    client.hdel("conveyor:waiting:default", "x")
    assert store.claim(["default"], "w", 2, 30.0, kinds=["a"]) == []  # x first in order
    assert census(client) == {"x": 3, "a": 3}  # recounted by that claim
    got = store.claim(["default"], "w", 10, 30.0, kinds=["a"])
    assert [j.id for j in got] == [s.id for s in mine]
    # A store written before the census: counted once on open.
    client.delete("conveyor:indexed:waiting", "conveyor:waiting:default")
    open_store(redis_url, clock=clock).close()
    assert census(client) == {"x": 3}
    assert client.exists("conveyor:indexed:waiting")


def test_every_concurrent_waiter_wakes_on_new_work(redis_url: str) -> None:
    clock = FakeClock()
    store = open_store(redis_url, clock=clock)
    try:
        store.wait_for_work(["default"], 0.01)  # subscribe
        woke: list[float] = []
        threads = [
            threading.Thread(target=lambda: (store.wait_for_work(["default"], 10.0),
                                             woke.append(time.monotonic())))
            for _ in range(3)
        ]  # fmt: skip
        for thread in threads:
            thread.start()
        time.sleep(0.1)  # let them block; the assertion is on the wake-up, not this
        sent = time.monotonic()
        store.enqueue([spec(clock)])
        for thread in threads:
            thread.join(5.0)
        assert len(woke) == 3
        assert max(woke) - sent < 2.0, "waiters must not take turns waiting out timeouts"
    finally:
        store.close()


def test_record_prefix_query_reads_only_matching_records(
    redis_url: str, redis_server: RedisServer
) -> None:
    store = open_store(redis_url)
    client = redis_server.client()
    try:
        for i in range(3000):
            store.put_record("deliveries", f"job{i:05d}/{i % 3}", {"n": i})
        client.config_resetstat()
        got = store.list_records("deliveries", prefix="job00042/")
        stats = client.info("commandstats")
        assert got == [("job00042/0", {"n": 42})]
        assert "cmdstat_hgetall" not in stats, "a prefix query must not read the collection"
        assert store.delete_record("deliveries", "job00042/0")
        assert store.list_records("deliveries", prefix="job00042/") == []
        assert len(store.list_records("deliveries", prefix="job0")) == 2999
    finally:
        client.close()
        store.close()
