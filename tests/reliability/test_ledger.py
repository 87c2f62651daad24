"""Reliability-plan S1 (baseline) and S2 (kill storm) with a fsynced ledger, N = 2,000."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env
from tests.integration.ledger import check

pytestmark = pytest.mark.timeout(300)
N = 2000


def run_jobs(tmp_path: Path, ms: float) -> tuple[Service, list[str], Path, str]:
    url = f"sqlite:///{tmp_path / 'home' / 'conveyor.db'}"
    store = open_store(url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    ledger = tmp_path / "ledger.jsonl"
    ids: list[str] = []
    for start in range(0, N, 500):
        batch = [
            NewJob(kind="test.ledger", input={"ledger": str(ledger), "ms": ms})
            for _ in range(start, min(N, start + 500))
        ]
        ids += [job.id for job in service.submit_many(batch)]
    return service, ids, ledger, url


def all_finished(service: Service) -> bool:
    waiting = service.list_jobs(
        JobFilter(state=[JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING]), limit=1
    )
    return not waiting.jobs


def test_s1_baseline_no_faults(tmp_path: Path) -> None:
    service, ids, ledger, url = run_jobs(tmp_path, ms=1)
    env = worker_env(tmp_path / "home")
    workers = [start_worker(url, tmp_path / "home", "-c", "4", "--burst", env=env) for _ in "ab"]
    for worker in workers:
        assert worker.wait(240) == 0
    report = check(service.store, ids, ledger)
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.duplicate_executions == []
    assert report.attempts == {1: N}
    print(f"S1: p50 enqueue->start {report.percentile(0.5):.0f} ms")


def test_s2_kill_storm_loses_nothing(tmp_path: Path) -> None:
    service, ids, ledger, url = run_jobs(tmp_path, ms=40)
    env = worker_env(tmp_path / "home", CONVEYOR_LEASE_S="4", CONVEYOR_SWEEP_S="0.5",
                     CONVEYOR_HEARTBEAT_S="0.5", CONVEYOR_GRACE_S="2")  # fmt: skip
    workers = [start_worker(url, tmp_path / "home", "-c", "4", env=env) for _ in "ab"]
    rng = random.Random(7)
    kills = 0
    try:
        # Fault A: SIGKILL one random busy child every 0.4 s, 20 times.
        while kills < 20 and not all_finished(service):
            pids = [pid for w in workers for pid in children(w.pid)]
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
            time.sleep(0.4)  # the fault schedule, not synchronisation
        # Fault B: at this point SIGKILL one supervisor (orphans its children) and TERM the other.
        workers[0].send_signal(signal.SIGKILL)
        assert stop(workers[1], timeout=30) == 0
        replacements = [start_worker(url, tmp_path / "home", "-c", "4", env=env) for _ in "ab"]
        wait_for(lambda: all_finished(service), timeout=180, interval=0.2)
    finally:
        for worker in [*workers, *locals().get("replacements", [])]:
            stop(worker)
    report = check(service.store, ids, ledger)
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.unexplained_duplicates == []
    # Each SIGKILLed child had at most one job in flight; the killed supervisor had up to 4.
    assert len(report.duplicate_executions) <= kills + 4
    print(
        f"S2: kills={kills}+1 supervisor, duplicate executions="
        f"{len(report.duplicate_executions)}, attempts={dict(report.attempts)}"
    )
