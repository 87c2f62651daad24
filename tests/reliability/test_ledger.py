"""Reliability-plan S1 (baseline) and S2 (kill storm) with a fsynced ledger, on every shared store.

One parametrized test per scenario runs on SQLite, PostgreSQL and Redis (the server backends
from `tests/backends.py`). The PR tier uses N = 2,000; the nightly tier (`make chaos`, marked
`soak`) repeats the kill storm with N = 10,000. Each run writes its figures to
`bench/results/reliability.json` (see `fault_results.py`).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from conveyor.service import Service
from tests.backends import Backend
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env
from tests.integration.ledger import check
from tests.reliability.conftest import SQLITE_IN_PR, STORES
from tests.reliability.fault_results import record_fault_run
from tests.reliability.fleet import all_finished, open_service, submit_ledger

pytestmark = pytest.mark.timeout(600)
N = 2000
LEASE_S, SWEEP_S = 4.0, 0.5


def run_jobs(
    backend: Backend, tmp_path: Path, ms: float, n: int = N
) -> tuple[Service, list[str], Path]:
    service = open_service(backend.url, tmp_path)
    ledger = tmp_path / "ledger.jsonl"
    return service, submit_ledger(service, ledger, [ms] * n), ledger


@pytest.mark.parametrize("shared_backend", SQLITE_IN_PR, indirect=True)
def test_s1_baseline_no_faults(shared_backend: Backend, tmp_path: Path) -> None:
    service, ids, ledger = run_jobs(shared_backend, tmp_path, ms=1)
    home = tmp_path / "home"
    env = worker_env(home)
    started = time.monotonic()
    workers = [start_worker(shared_backend.url, home, "-c", "4", "--burst", env=env)
               for _ in "ab"]  # fmt: skip
    for worker in workers:
        assert worker.wait(240) == 0
    elapsed = time.monotonic() - started
    report = check(service.store, ids, ledger)
    record_fault_run(
        "S1 baseline", shared_backend.name, jobs=N, faults="none", lost=len(report.lost),
        duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions), inflight_bound=0,
        notes=f"{N / elapsed:.0f} jobs/s drain incl. worker start (2 workers x 4)",
    )  # fmt: skip
    service.store.close()
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.duplicate_executions == []
    assert report.attempts == {1: N}


@pytest.mark.parametrize("shared_backend", STORES, indirect=True)
@pytest.mark.parametrize(
    "n", [pytest.param(N, id="2000"), pytest.param(10_000, id="10000", marks=pytest.mark.soak)]
)
def test_s2_kill_storm_loses_nothing(shared_backend: Backend, tmp_path: Path, n: int) -> None:
    service, ids, ledger = run_jobs(shared_backend, tmp_path, ms=40, n=n)
    url, home = shared_backend.url, tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S=str(LEASE_S), CONVEYOR_SWEEP_S=str(SWEEP_S),
                     CONVEYOR_HEARTBEAT_S="0.5", CONVEYOR_GRACE_S="2")  # fmt: skip
    workers = [start_worker(url, home, "-c", "4", env=env) for _ in "ab"]
    replacements: list[object] = []
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
        # Fault B: SIGKILL one supervisor (orphans its leases) and TERM the other.
        workers[0].send_signal(signal.SIGKILL)
        assert stop(workers[1], timeout=30) == 0
        replacements = [start_worker(url, home, "-c", "4", env=env) for _ in "ab"]
        wait_for(lambda: all_finished(service), timeout=max(180, n / 20), interval=0.2)
    finally:
        for worker in [*workers, *replacements]:
            stop(worker)  # type: ignore[arg-type]
    report = check(service.store, ids, ledger)
    bound = kills + 4  # each SIGKILLed child had one job in flight; the supervisor up to 4
    recovery = max(report.recovery_s, default=0.0)
    record_fault_run(
        "S2 kill storm" + ("" if n == N else f" (N={n:,})"), shared_backend.name, jobs=n,
        faults=f"{kills} child SIGKILL + 1 supervisor SIGKILL + 1 SIGTERM",
        lost=len(report.lost), duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions), inflight_bound=bound,
        max_recovery_s=recovery, recovery_bound_s=LEASE_S + SWEEP_S + 5,
        notes=f"attempts {dict(sorted(report.attempts.items()))}",
    )  # fmt: skip
    service.store.close()
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.unexplained_duplicates == []
    assert len(report.duplicate_executions) <= bound
    assert recovery <= LEASE_S + SWEEP_S + 5
