"""Reliability-plan S12: a degraded network between the workers (and the API) and the store.

Every process reaches PostgreSQL or Redis through its own `ResetProxy` (netem is not available
here): latency 100 ms ± 50 ms on every chunk both ways and 0.5 % of chunks resetting their
connection, for the whole run; in the middle a 10 s stall of all three links, after which each
connection that lost bytes stays half-open (no answer, no reset, keepalives answered). A
producer submits over HTTP with an `Idempotency-Key`, retrying what failed.

PostgreSQL connections get a 5 s call deadline (`call_timeout`, 60 s by default): this scenario
found that without one a call on a half-open connection never returned, and the worker with it.
Redis calls end at the client's socket timeout.

Pass: 0 acknowledged jobs lost, 0 duplicate completions, duplicate executions only re-runs
(new attempt) and at most the jobs in flight at the stall, 0 jobs left running, the API never
answers 500 (503/504 and timeouts are retried), and both workers run jobs again after the
stall by themselves (no restart), within the call deadline + lease + sweep + 5 s. Nightly
tier only (about 3 minutes per store).
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conveyor.models import JobFilter, JobState
from tests.backends import Backend
from tests.integration.harness import (
    children,
    start_server,
    start_worker,
    stop,
    wait_for,
    worker_env,  # fmt: skip
)
from tests.integration.ledger import check
from tests.reliability.conftest import SERVER_STORES
from tests.reliability.fault_results import record_fault_run
from tests.reliability.fleet import Producer, all_finished, open_service
from tests.reliability.reset_proxy import ResetProxy

LEASE_S, HEARTBEAT_S, SWEEP_S = 4.0, 0.8, 0.5
LATENCY_S, JITTER_S, RESET_RATE = 0.1, 0.05, 0.005
STALL_S = 10.0
N, PRODUCERS, BATCH, JOB_MS = 240, 4, 10, 50
#: PostgreSQL: the `call_timeout` set below; Redis: the store's socket timeout (10 s).
CALL_TIMEOUT_S = 5.0
RECOVERY_BOUND_S = 10 + LEASE_S + SWEEP_S + 5

#: Nightly only (`soak`): about 3 minutes per store, the degraded links allow ~1.5 jobs/s.
pytestmark = [
    pytest.mark.soak,
    pytest.mark.timeout(400),
    pytest.mark.parametrize("shared_backend", SERVER_STORES, indirect=True),
]


def via(proxy: ResetProxy, url: str) -> str:
    """The store URL through `proxy` (and, for PostgreSQL, with a short call deadline: a call
    stuck on a half-open connection is broken off after it)."""
    if url.startswith("postgres"):
        url += f"{'&' if '?' in url else '?'}call_timeout={CALL_TIMEOUT_S:g}"
    return proxy.via(url)


def starts(ledger: Path) -> list[dict[str, float]]:
    if not ledger.exists():
        return []
    records = (json.loads(line) for line in ledger.read_text().splitlines())
    return [r for r in records if r["ev"] == "start"]


def worker_logs(home: Path) -> str:
    return "\n".join(f"{p.name}: {p.read_text()[-3000:]}" for p in sorted(home.glob("worker-*")))


def test_s12_degraded_network_loses_nothing(shared_backend: Backend, tmp_path: Path) -> None:
    service = open_service(shared_backend.url, tmp_path)
    ledger, home = tmp_path / "ledger.jsonl", tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S=str(LEASE_S), CONVEYOR_HEARTBEAT_S=str(HEARTBEAT_S),
                     CONVEYOR_SWEEP_S=str(SWEEP_S))  # fmt: skip
    upstream = urlsplit(shared_backend.url).port
    assert upstream is not None
    proxies = [ResetProxy(upstream, seed=i) for i in range(3)]  # fmt: skip
    owner: dict[int, int] = {}  # handler pid -> index of its worker
    with ExitStack() as stack:
        for proxy in proxies:
            stack.enter_context(proxy.running())
        api_url, api = start_server("api", via(proxies[2], shared_backend.url), home,
                                    env=env)  # fmt: skip
        stack.callback(stop, api)
        workers = [start_worker(via(p, shared_backend.url), home, "-c", "4", env=env)
                   for p in proxies[:2]]  # fmt: skip
        for worker in workers:
            stack.callback(stop, worker)

        def note_children() -> bool:
            """Remember which worker each handler process belongs to (False: keep polling)."""
            for index, worker in enumerate(workers):
                owner.update((pid, index) for pid in children(worker.pid))
            return False

        # The network degrades once everything runs (a worker that cannot reach its store
        # at start-up exits: that is its supervisor's business, not this scenario's).
        wait_for(lambda: len(service.store.workers()) == len(workers), timeout=60, interval=0.1)
        for proxy in proxies:
            proxy.latency_s, proxy.jitter_s, proxy.reset_rate = LATENCY_S, JITTER_S, RESET_RATE
        started = time.monotonic()
        producer = Producer(api_url)
        job = {"kind": "test.ledger", "input": {"ledger": str(ledger), "ms": JOB_MS}}
        threads = [producer.in_thread(lambda: [producer.submit([job] * BATCH, started + 240)
                                               for _ in range(N // PRODUCERS // BATCH)])
                   for _ in range(PRODUCERS)]  # fmt: skip
        # Stall every link once a third of the jobs ran (the fault schedule).
        wait_for(lambda: note_children() or len(starts(ledger)) >= N // 3, timeout=180,
                 interval=0.2)  # fmt: skip
        inflight = len(service.list_jobs(JobFilter(state=[JobState.RUNNING]), limit=100).jobs)
        for proxy in proxies:
            proxy.stall()
        time.sleep(STALL_S)  # the fault's duration, not synchronisation
        for proxy in proxies:
            proxy.heal()
        healed = time.time()
        for thread in threads:
            thread.join(300)
        wait_for(lambda: note_children() or (all_finished(service) and len(producer.ids) == N),
                 timeout=240, interval=0.2)  # fmt: skip
        elapsed = time.monotonic() - started
        alive = [w.poll() is None for w in workers]
    report = check(service.store, producer.ids, ledger)
    resumed = {index: min((r["t"] - healed for r in starts(ledger)
                           if r["t"] > healed and owner.get(int(r["pid"])) == index), default=None)
               for index in range(len(workers))}  # fmt: skip
    stats = [p.stats for p in proxies]
    record_fault_run(
        "S12 degraded network (proxy)", shared_backend.name, jobs=len(producer.ids),
        faults=f"latency {LATENCY_S * 1000:.0f}±{JITTER_S * 1000:.0f} ms, "
        f"{sum(s.resets for s in stats)} connection resets, {STALL_S:g} s stall "
        f"({sum(s.half_open for s in stats)} connections left half-open)",
        lost=len(report.lost), duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions), inflight_bound=inflight,
        max_recovery_s=max((r for r in resumed.values() if r is not None), default=None),
        recovery_bound_s=RECOVERY_BOUND_S,
        notes=f"API + 2 workers x 4 each behind its own proxy; {len(producer.ids) / elapsed:.1f} "
        f"jobs/s; client saw {producer.errors() or 'no errors'}; recovery = first job started "
        "by each worker after the stall",
    )  # fmt: skip
    service.store.close()
    assert len(producer.ids) == N, f"only {len(producer.ids)} of {N} submits acknowledged"
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.unexplained_duplicates == []
    assert len(report.duplicate_executions) <= inflight
    assert "500" not in producer.statuses, producer.statuses
    assert all(alive), f"a worker process died: {worker_logs(home)}"
    assert all(r is not None and r <= RECOVERY_BOUND_S for r in resumed.values()), resumed
    assert sum(s.half_open for s in stats) > 0 and sum(s.resets for s in stats) > 0, stats
