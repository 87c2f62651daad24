"""Reliability-plan S7 on PostgreSQL: the database server crashes and restarts mid-drain.

A real `conveyor worker` drains 2,000 `noop` jobs while a producer keeps enqueuing; the whole
PostgreSQL server (postmaster and every backend) is SIGKILLed, stays down for a moment and is
started again on the same data directory (crash recovery from its WAL). Pass: every
acknowledged job succeeds, exactly one `succeeded` event per job, and the worker recovers by
itself (it is never restarted).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.kinds.registry import import_kinds
from conveyor.store import JobSpec, Store, open_store
from tests.integration.harness import start_worker, stop, wait_for, worker_env
from tests.servers.postgres import PostgresServerFactory

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(240)]
N = 2000
DOWN_S = 3.0


def specs(count: int, now: float) -> list[JobSpec]:
    return [
        JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now)
        for _ in range(count)
    ]


def count_finished(url: str) -> int:
    """Finished jobs, read with a fresh connection (0 while the server is down)."""
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            row = conn.execute(
                "SELECT count(*) FROM conveyor_jobs WHERE finished_at IS NOT NULL"
            ).fetchone()
            return int(row[0]) if row else 0
    except psycopg.OperationalError:
        return 0


def answers(store: Store) -> bool:
    try:
        store.ping()
    except errors.StoreUnavailableError:
        return False
    return True


class Producer(threading.Thread):
    """Enqueues small batches through the outage; remembers which were acknowledged."""

    def __init__(self, store: Store) -> None:
        super().__init__(daemon=True)
        self.store = store
        self.acked: list[str] = []
        self.refused = 0
        self.stop_at = threading.Event()

    def run(self) -> None:
        while not self.stop_at.is_set():
            batch = specs(5, time.time())
            try:
                self.acked += [job.id for job in self.store.enqueue(batch)]
            except errors.StoreUnavailableError:
                self.refused += 1
            self.stop_at.wait(0.02)  # the producer's rate, not synchronisation


def test_s7_postgres_killed_and_restarted_mid_drain(
    postgres_factory: PostgresServerFactory, tmp_path: Path
) -> None:
    server = postgres_factory.start()
    url = server.create_schema()
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    ids = [job.id for start in range(0, N, 500) for job in store.enqueue(specs(500, time.time()))]
    home = tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S="15", CONVEYOR_HEARTBEAT_S="1",
                     CONVEYOR_SWEEP_S="1")  # fmt: skip
    worker = start_worker(url, home, "--concurrency", "2", env=env)
    producer = Producer(store)
    producer.start()
    try:
        started = time.monotonic()
        wait_for(lambda: count_finished(url) >= N // 3, timeout=90)
        before_kill = count_finished(url)
        server.kill()
        killed_at = time.monotonic()
        time.sleep(DOWN_S)  # the outage itself (fault schedule, not synchronisation)
        server.start()
        back_at = time.monotonic()
        baseline = count_finished(url)
        resumed = wait_for(lambda: count_finished(url) > baseline and time.monotonic(),
                           timeout=60)  # fmt: skip
        producer.stop_at.set()
        producer.join(10)
        everything = len(ids) + len(producer.acked)
        wait_for(lambda: count_finished(url) >= everything, timeout=120)
        drained_at = time.monotonic()
        assert worker.poll() is None, "the worker must survive the outage by itself"
    finally:
        producer.stop_at.set()
        code = stop(worker)
    assert code == 0

    acked = ids + producer.acked
    # This test's own pool lived through the outage too: it may hand out a connection broken
    # by the crash once more, so wait until it answers before reading the results through it.
    wait_for(lambda: answers(store), timeout=30, interval=0.2)
    jobs = {j.id: j for j in (store.get(i) for i in acked)}
    lost = [i for i, j in jobs.items() if j.state.value != "succeeded"]
    completions: Counter[str] = Counter()
    after = 0
    while batch := store.feed(after=after, limit=5000):
        completions.update(e.job_id for e in batch if e.type == "state"
                           and e.data["state"] == "succeeded")  # fmt: skip
        after = batch[-1].seq
    duplicates = [i for i, n in completions.items() if n > 1]
    reruns = sum(1 for j in jobs.values() if j.attempt > 1)
    print(
        f"\nS7 postgres: {len(acked)} acked ({len(producer.acked)} during the run,"
        f" {producer.refused} enqueue batches refused while down), finished before kill"
        f" {before_kill}, down {back_at - killed_at:.1f}s, first completion"
        f" {resumed - back_at:.1f}s after restart, re-run (attempt > 1) {reruns},"
        f" drain {len(acked) / (drained_at - started):.0f} jobs/s overall"
    )
    assert lost == []
    assert duplicates == []
    assert all(completions[i] == 1 for i in acked)
    assert resumed - back_at <= 10.0, "workers resume within 10 s of the server coming back"
    store.close()
