"""Reliability-plan S6: workers whose clocks are wrong must not break leases.

Leases are judged by the store's clock (PostgreSQL `statement_timestamp()`, Redis `TIME`), so a
worker's clock must not matter. Three workers run under libfaketime (LD_PRELOAD on the worker
process and its children): one 60 s fast, one 60 s slow, one right until a forward step mid-run.
The skew is ten times the lease: any lease decision taken on a worker's clock (an expiry it
computes, a sweep that compares with its own time) would rescue healthy jobs at once.

libfaketime 0.9.10 also shifts `CLOCK_MONOTONIC` (its `FAKETIME_DONT_FAKE_MONOTONIC` breaks
`sleep`), which no real clock step does: a monotonic jump longer than the lease is what a
paused worker sees, and it must then fence itself. So the step (3 s) stays under the lease (4 s).

Pass: 0 lost, 0 duplicate completions, 0 duplicate executions, 0 jobs made claimable again
(no premature rescue), and every lease seen while the skewed workers ran expired within
`lease_s` of the store's clock. SQLite is not run: its store is inside each process, so the
"store's clock" is the host's, which one host's processes share (a host clock step is then
seen by all alike).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path

import pytest

from conveyor.models import JobFilter, JobState
from conveyor.service import Service
from tests.backends import Backend
from tests.integration.harness import start_worker, stop, wait_for, worker_env
from tests.integration.ledger import check
from tests.reliability.conftest import SERVER_STORES
from tests.reliability.fault_results import record_fault_run
from tests.reliability.fleet import LIBFAKETIME, all_finished, open_service, submit_ledger

LEASE_S, HEARTBEAT_S, SWEEP_S = 4.0, 0.8, 0.5
SKEW_S, STEP_S = 60, 3
N_SHORT, N_LONG = 80, 3
LONG_MS = 2 * LEASE_S * 1000  # renewed by heartbeats sent with a skewed clock

#: PostgreSQL in the PR tier, Redis nightly (`soak`): the PR tier's time is scarce.
SKEW_STORES = [
    pytest.param(*p.values, id=p.id,
                 marks=(*p.marks, *((pytest.mark.soak,) if p.id == "redis" else ())))
    for p in SERVER_STORES
]  # fmt: skip
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.parametrize("shared_backend", SKEW_STORES, indirect=True),
    pytest.mark.skipif(not LIBFAKETIME.exists(), reason=f"no {LIBFAKETIME} (apt-get install "
                       "faketime; `make chaos` does)"),
]  # fmt: skip


def faketime_env(base: dict[str, str], offset_file: Path) -> dict[str, str]:
    """Run under libfaketime with the offset read from `offset_file` (re-read every second)."""
    return {**base, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(offset_file),
            "FAKETIME_CACHE_DURATION": "1"}  # fmt: skip


def leases_ahead(service: Service) -> list[float]:
    """For each running job: its lease expiry minus the store's time now (seconds)."""
    now = service.store.now()
    running = service.list_jobs(JobFilter(state=[JobState.RUNNING]), limit=100).jobs
    return [j.lease.expires_at.timestamp() - now for j in running if j.lease is not None]


def clock_signs(ledger: Path, started: float, finished: float) -> Counter[str]:
    """How many ledger records the handlers timed ahead of (+), behind (-) or within (0) the
    run as this process's (right) clock saw it: proof that the skew took effect."""
    signs: Counter[str] = Counter()
    for line in ledger.read_text().splitlines():
        t = json.loads(line)["t"]
        signs["+" if t > finished + 1 else "-" if t < started - 1 else "0"] += 1
    return signs


def test_s6_skewed_worker_clocks_do_not_break_leases(
    shared_backend: Backend, tmp_path: Path
) -> None:
    service = open_service(shared_backend.url, tmp_path)
    ledger, home = tmp_path / "ledger.jsonl", tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S=str(LEASE_S), CONVEYOR_HEARTBEAT_S=str(HEARTBEAT_S),
                     CONVEYOR_SWEEP_S=str(SWEEP_S))  # fmt: skip
    offsets = {"fast": f"+{SKEW_S}s", "slow": f"-{SKEW_S}s", "step": "+0"}
    files = {name: tmp_path / f"faketime-{name}" for name in offsets}
    for name, offset in offsets.items():
        files[name].write_text(offset + "\n")
    rng = random.Random(6)
    durations = [rng.uniform(300, 2000) for _ in range(N_SHORT)] + [LONG_MS] * N_LONG
    ids = submit_ledger(service, ledger, durations)
    started = time.time()
    workers = [start_worker(shared_backend.url, home, "-c", "4",
                            env=faketime_env(env, files[name])) for name in offsets]  # fmt: skip
    ahead: list[float] = []
    try:
        wait_for(lambda: len(service.store.workers()) == len(workers), timeout=60, interval=0.1)
        # The forward step, mid-run, on the worker whose clock was right.
        wait_for(lambda: service.get(ids[N_SHORT // 2]).state is not JobState.QUEUED,
                 timeout=120, interval=0.1)  # fmt: skip
        files["step"].write_text(f"+{STEP_S}s\n")
        deadline = time.monotonic() + 240
        while not all_finished(service) and time.monotonic() < deadline:
            ahead += leases_ahead(service)
            time.sleep(0.2)  # sampling period of the lease check
    finally:
        for worker in workers:
            stop(worker)
    finished = time.time()
    report = check(service.store, ids, ledger)
    signs = clock_signs(ledger, started, finished)
    record_fault_run(
        "S6 worker clock skew", shared_backend.name, jobs=len(ids),
        faults=f"worker clocks +{SKEW_S} s, -{SKEW_S} s, +{STEP_S} s step mid-run (libfaketime)",
        lost=len(report.lost), duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions), inflight_bound=0,
        notes=f"TTL {LEASE_S:g} s; {N_LONG} jobs of 2x TTL; premature rescues "
        f"{len(report.requeued)}; lease expiry - store time seen in "
        f"[{min(ahead, default=0):.1f}, {max(ahead, default=0):.1f}] s over {len(ahead)} "
        f"samples; ledger records timed ahead/behind/right {signs['+']}/{signs['-']}/{signs['0']}",
    )  # fmt: skip
    service.store.close()
    assert signs["+"] and signs["-"], f"the skew did not take effect: {signs}"
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.duplicate_executions == []
    assert report.requeued == [], "healthy jobs were rescued"
    assert ahead, "no running job was ever sampled"
    assert min(ahead) > 0 and max(ahead) <= LEASE_S + 0.5, "a lease followed a worker's clock"
