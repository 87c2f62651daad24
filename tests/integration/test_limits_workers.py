"""Limits hold across worker processes (#20): several `conveyor worker` processes on one store
never run more than a limit allows, and a rate limit is shared by all of them.

Each job appends start and end records to a ledger (tests.testkinds `test.ledger`); a ledger
interval lies inside the store's running interval of that job (the start is written after the
claim, the end before the settlement), so the ledger can only under-count what ran at once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conveyor.ids import uuid7
from conveyor.models import JobFilter, JobState, Limit
from conveyor.store import JobSpec, Store
from tests.backends import Backend
from tests.integration.harness import start_worker, stop, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
WORKERS, SLOTS = 3, 3


def ledger_spec(ledger: Path, ms: float, key: str | None = None) -> JobSpec:
    return JobSpec(
        id=uuid7(), kind="test.ledger", queue="default", run_at=time.time(),
        input={"ledger": str(ledger), "ms": ms}, concurrency_key=key, max_attempts=3,
    )  # fmt: skip


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in points:  # an end sorts before a start at the same instant
        running += step
        peak = max(peak, running)
    return peak


def run_workers(backend: Backend, store: Store, tmp_path: Path, ids: list[str]) -> None:
    home = tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S="30")
    workers = [start_worker(backend.url, home, "-c", str(SLOTS), env=env) for _ in range(WORKERS)]
    try:

        def done() -> bool:
            finished = store.list_jobs(JobFilter(state=[JobState.SUCCEEDED]), limit=len(ids))
            return len(finished.jobs) == len(ids)

        wait_for(done, timeout=240, interval=0.2, what="every job to succeed")
    finally:
        for worker in workers:
            stop(worker)


def intervals(ledger: Path) -> dict[str, tuple[float, float]]:
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    starts = {r["job"]: r["t"] for r in records if r["ev"] == "start"}
    return {r["job"]: (starts[r["job"]], r["t"]) for r in records if r["ev"] == "end"}


@pytest.fixture
def shared_store(backend: Backend) -> Store:
    if not backend.shared:
        pytest.skip("worker processes cannot open a private in-memory store")
    return backend.open()


def test_concurrency_limits_hold_across_worker_processes(
    backend: Backend, shared_store: Store, tmp_path: Path
) -> None:
    store = shared_store
    ledger = tmp_path / "ledger.jsonl"
    store.set_limit(Limit(target="key:test.ledger", max_running=2))
    store.set_limit(Limit(target="kind:test.ledger", max_running=5))
    keys = ["a", "b", "c", "d"]
    specs = [ledger_spec(ledger, 150, keys[i % 4]) for i in range(48)]
    ids = [job.id for job in store.enqueue(specs)]
    run_workers(backend, store, tmp_path, ids)
    ran = intervals(ledger)
    assert len(ran) == len(ids)
    key_of = {s.id: s.concurrency_key for s in specs}
    for key in keys:
        assert max_overlap([ran[i] for i in ran if key_of[i] == key]) <= 2, key
    overall = max_overlap(list(ran.values()))
    assert 3 <= overall <= 5  # 9 slots ran at most 5 at once, and did run several at once
    store.close()


def test_a_rate_limit_is_shared_by_worker_processes(
    backend: Backend, shared_store: Store, tmp_path: Path
) -> None:
    store = shared_store
    ledger = tmp_path / "ledger.jsonl"
    store.set_limit(Limit(target="kind:test.ledger", rate=10, per_s=1))
    ids = [job.id for job in store.enqueue([ledger_spec(ledger, 1) for _ in range(40)])]
    run_workers(backend, store, tmp_path, ids)
    starts = sorted(job.started_at.timestamp() for job in store.list_jobs(  # type: ignore[union-attr]
        JobFilter(ids=ids), limit=len(ids)).jobs)  # fmt: skip
    # A full bucket (10) and then 10 per second: the 40th start comes 3 s after the first at
    # the earliest, and no second holds more than the bucket plus one second's refill.
    assert starts[-1] - starts[0] >= 3.0 - 0.05
    for i, first in enumerate(starts):
        within = sum(1 for t in starts[i:] if t < first + 0.99)
        assert within <= 20, f"{within} starts within 1 s of {first}"
    store.close()
