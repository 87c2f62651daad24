"""Reliability-plan S20: a soak with rotating faults (nightly tier only, marked `soak`).

An API and three workers (`-c 3`, each with its webhook dispatcher) run against a store for
30 minutes (PostgreSQL, the store of many machines; a 3-minute variant on every store) under
an ebb-and-flow load: a producer submits batches over HTTP at a rate swinging between 4 and
20 jobs/s (a 5-minute sine; 50-200 ms jobs, one in ten with a webhook). Every 120 s (every
30 s in the short variant) the next fault of the rotation strikes:

- SIGKILL a worker (its supervisor; a new one is started);
- restart the store: PostgreSQL or Redis SIGKILLed, started again 5 s later (SQLite: SIGKILL a
  busy child instead: there is no server);
- a 20 s silent partition of one worker: its link to the store (a `ResetProxy`) stalls and its
  connections are left half-open (SQLite: SIGTERM a worker and start a new one instead);
- SIGSTOP a worker (supervisor, children, dispatcher) for 2 x TTL;
- the webhook receiver answers 503 for 30 s.

Pass: 0 acknowledged jobs lost, 0 duplicate completions, duplicate executions only re-runs and
at most the jobs running at the faults, every webhook delivered, the API never answers 500,
and the long-lived processes (API, workers never killed) do not leak: RSS growth <= 10 % after
the warm-up (the first third) and open file descriptors within ± 10. The p99 enqueue -> start
latency of the first and last 10 minutes is recorded, not judged: the 30-minute run missed the
plan's 1.2 x bar (an open finding in docs/reliability.md).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest

from conveyor.errors import StoreUnavailableError
from conveyor.models import JobFilter, JobState
from conveyor.service import Service
from conveyor.webhooks.signing import generate_secret
from tests.integration.harness import (
    children,
    start_server,
    start_worker,
    stop,
    wait_for,
    worker_env,  # fmt: skip
)
from tests.integration.ledger import check
from tests.reliability.fault_results import record_fault_run
from tests.reliability.fleet import Producer, all_finished, open_service
from tests.reliability.reset_proxy import ResetProxy
from tests.reliability.test_degraded_network import via
from tests.servers.http import free_port, serve_in_thread
from tests.webhooks.receiver import Receiver

LEASE_S, HEARTBEAT_S, SWEEP_S = 5.0, 1.5, 1.0
WORKERS, CONCURRENCY = 3, 3
RATE_LOW, RATE_HIGH, WAVE_S = 4.0, 20.0, 300.0
BATCH = 10
PARTITION_S, OUTAGE_S, STORE_DOWN_S = 20.0, 30.0, 5.0

T = TypeVar("T")
pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]


@dataclass
class Store:
    """The store under test, and how to restart it (None: SQLite, no server)."""

    name: str
    url: str
    restart: Callable[[], None] | None = None


@contextlib.contextmanager
def soak_store(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if name == "sqlite":
        yield Store(name, f"sqlite:///{tmp_path / 'conveyor.db'}")
    elif name == "postgres":
        server = request.getfixturevalue("postgres_factory").start()

        def restart_pg() -> None:
            server.kill()
            time.sleep(STORE_DOWN_S)  # the outage itself
            server.start()

        yield Store(name, server.create_database(), restart_pg)
    else:
        server = request.getfixturevalue("redis_factory")()

        def restart_redis() -> None:
            server.kill()
            time.sleep(STORE_DOWN_S)  # the outage itself
            server.start()

        yield Store(name, server.url, restart_redis)


def retrying(call: Callable[[], T]) -> T:
    """The test's own store calls: after a store restart its pool may hold dead connections."""
    for _ in range(20):
        try:
            return call()
        except StoreUnavailableError:
            time.sleep(0.5)
    return call()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Fleet:
    """The API, the workers (each behind its own proxy on a server store) and the receiver."""

    store: Store
    home: Path
    env: dict[str, str]
    proxies: list[ResetProxy]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)  # pids of workers killed or replaced

    def worker_url(self, index: int) -> str:
        if not self.proxies:
            return self.store.url
        return via(self.proxies[index], self.store.url)

    def start(self, index: int) -> None:
        worker = start_worker(self.worker_url(index), self.home, "-c", str(CONCURRENCY),
                              env=self.env)  # fmt: skip
        if index < len(self.workers):
            self.killed.add(self.workers[index].pid)
            self.workers[index] = worker
        else:
            self.workers.append(worker)

    def group(self, index: int) -> list[int]:
        """A worker's supervisor, its children and their children (the dispatcher's)."""
        pids = [self.workers[index].pid]
        for pid in list(pids):
            pids += children(pid)
        return pids


@pytest.mark.parametrize(("store_name", "minutes"), [
    pytest.param("sqlite", 3, id="sqlite-3min"),
    pytest.param("postgres", 3, id="postgres-3min", marks=pytest.mark.postgres),
    pytest.param("redis", 3, id="redis-3min", marks=pytest.mark.redis),
    pytest.param("postgres", 30, id="postgres-30min", marks=pytest.mark.postgres),
])  # fmt: skip
def test_s20_soak_with_rotating_faults(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    store_name: str,
    minutes: float,
) -> None:
    secret = generate_secret()
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", "127.0.0.1/32")
    receiver = Receiver([secret])
    port = free_port()
    rng = random.Random(20)
    period = 120.0 if minutes >= 30 else 30.0
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(soak_store(store_name, request, tmp_path))
        service: Service = open_service(store.url, tmp_path)
        stack.callback(service.store.close)
        ledger, home = tmp_path / "ledger.jsonl", tmp_path / "home"
        env = worker_env(
            home, CONVEYOR_LEASE_S=str(LEASE_S), CONVEYOR_HEARTBEAT_S=str(HEARTBEAT_S),
            CONVEYOR_SWEEP_S=str(SWEEP_S), CONVEYOR_GRACE_S="5",
            CONVEYOR_CALLBACK_ALLOW="127.0.0.1/32", CONVEYOR_WEBHOOK_SECRETS=secret,
            CONVEYOR_WEBHOOK_BACKOFF_S="0.5", CONVEYOR_WEBHOOK_BACKOFF_MAX_S="5",
            CONVEYOR_WEBHOOK_LEASE_S="3", CONVEYOR_WEBHOOK_POLL_S="0.2",
        )  # fmt: skip
        server = urlsplit(store.url).port
        proxies = [] if store.restart is None else [ResetProxy(server or 0, seed=i)
                                                    for i in range(WORKERS)]  # fmt: skip
        for proxy in proxies:
            stack.enter_context(proxy.running())
        stack.enter_context(serve_in_thread(receiver.app(), port))
        fleet = Fleet(store, home, env, proxies)
        api_url, api = start_server("api", store.url, home, env=env)
        stack.callback(stop, api)
        for index in range(WORKERS):
            fleet.start(index)
        stack.callback(lambda: [stop(w) for w in fleet.workers])
        wait_for(lambda: len(service.store.workers()) >= WORKERS, timeout=60, interval=0.2)

        producer = Producer(api_url)
        started = time.monotonic()
        end = started + minutes * 60
        hooked: list[int] = []  # indexes into producer.ids of jobs with a webhook

        def produce() -> None:
            while (now := time.monotonic()) < end:
                phase = math.sin(2 * math.pi * (now - started) / WAVE_S)
                rate = RATE_LOW + (RATE_HIGH - RATE_LOW) * (1 + phase) / 2
                jobs = []
                for _ in range(BATCH):
                    job: dict[str, object] = {"kind": "test.ledger", "input": {
                        "ledger": str(ledger), "ms": rng.uniform(50, 200)}}  # fmt: skip
                    if rng.random() < 0.1:
                        job["webhook"] = {"url": f"http://127.0.0.1:{port}/hook",
                                          "events": ["job.succeeded"]}  # fmt: skip
                    jobs.append(job)
                before = len(producer.ids)
                if producer.submit(jobs, end + 120):
                    hooked.extend(before + i for i, j in enumerate(jobs) if "webhook" in j)
                time.sleep(max(0.0, BATCH / rate - (time.monotonic() - now)))

        thread = producer.in_thread(produce)
        samples: dict[int, list[tuple[int, int]]] = {api.pid: []}  # pid -> [(rss, fds)]
        faults: list[str] = []
        inflight = 0

        def sample() -> None:
            for pid in [api.pid, *(w.pid for w in fleet.workers)]:
                if pid not in fleet.killed:
                    with contextlib.suppress(OSError):
                        samples.setdefault(pid, []).append((rss_kb(pid), open_fds(pid)))

        def running() -> int:
            return len(retrying(lambda: service.list_jobs(
                JobFilter(state=[JobState.RUNNING]), limit=100)).jobs)  # fmt: skip

        def kill_worker() -> str:
            index = rng.randrange(WORKERS)
            os.kill(fleet.workers[index].pid, signal.SIGKILL)
            fleet.workers[index].wait(10)
            fleet.start(index)
            return "SIGKILL worker"

        def restart_store() -> str:
            if store.restart is None:
                busy = [pid for w in fleet.workers for pid in children(w.pid)]
                os.kill(rng.choice(busy), signal.SIGKILL)
                return "SIGKILL child"
            store.restart()
            return f"store down {STORE_DOWN_S:g} s"

        def partition() -> str:
            index = rng.randrange(WORKERS)
            if not proxies:
                stop(fleet.workers[index])
                fleet.start(index)
                return "SIGTERM worker"
            proxies[index].stall()
            time.sleep(PARTITION_S)  # the fault's duration
            proxies[index].heal()
            return f"partition {PARTITION_S:g} s"

        def pause() -> str:
            pids = fleet.group(rng.randrange(WORKERS))
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            time.sleep(2 * LEASE_S)  # the fault's duration
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            return f"SIGSTOP {2 * LEASE_S:g} s"

        def receiver_outage() -> str:
            receiver.status = 503
            time.sleep(OUTAGE_S)  # the fault's duration
            receiver.status = 200
            return f"receiver 503 {OUTAGE_S:g} s"

        rotation = [kill_worker, restart_store, partition, pause, receiver_outage]
        next_fault = started + period
        while time.monotonic() < end:
            sample()
            if time.monotonic() >= next_fault and next_fault < end - period / 2:
                inflight += running()
                faults.append(rotation[len(faults) % len(rotation)]())
                next_fault += period
            time.sleep(min(5.0, max(0.0, end - time.monotonic())))  # the sampling period
        thread.join(180)
        wait_for(lambda: retrying(lambda: all_finished(service)), timeout=600, interval=1,
                 what="the drain")  # fmt: skip
        ids = list(producer.ids)
        hooked_ids = {ids[i] for i in hooked}
        wait_for(lambda: hooked_ids <= {h.payload["data"]["job_id"] for h in receiver.delivered()},
                 timeout=300, interval=1, what="every webhook delivered")  # fmt: skip
        sample()
        report = retrying(lambda: check(service.store, ids, ledger))
        elapsed = time.monotonic() - started
    window = min(600.0, minutes * 60 / 3)
    first, last = p99_windows(ids, report.start_latency_ms, window)
    leaks = leaks_of({pid: v for pid, v in samples.items() if pid not in fleet.killed})
    errors = producer.errors()
    record_fault_run(
        f"S20 soak ({minutes:g} min)", store_name, jobs=len(ids),
        faults=f"{len(faults)} rotating: " + ", ".join(sorted({f for f in faults})),
        lost=len(report.lost), duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions), inflight_bound=inflight,
        max_recovery_s=max(report.recovery_s, default=None),
        recovery_bound_s=LEASE_S + SWEEP_S + 5,
        notes=f"{len(ids) / elapsed:.1f} jobs/s over {elapsed / 60:.0f} min (ebb and flow "
        f"{RATE_LOW:g}-{RATE_HIGH:g}/s), {WORKERS} workers x {CONCURRENCY}; p99 enqueue->start "
        f"first/last {window / 60:g} min {first:.0f}/{last:.0f} ms; {len(hooked_ids)} webhooks "
        f"delivered; client saw {errors or 'no errors'}; {leaks.summary}; "
        f"load average {os.getloadavg()[0]:.1f}",
    )  # fmt: skip
    assert report.lost == []
    assert report.duplicate_completions == []
    assert report.unexplained_duplicates == []
    assert len(report.duplicate_executions) <= inflight
    assert "500" not in errors, errors
    assert leaks.rss_growth <= 0.10, leaks.summary
    assert leaks.fd_drift <= 10, leaks.summary


def created_s(job_id: str) -> float:
    """The creation time a UUIDv7 id carries (its first 48 bits: Unix milliseconds)."""
    return int(job_id.replace("-", "")[:12], 16) / 1000


def p99_windows(ids: list[str], latency_ms: list[float], window: float) -> tuple[float, float]:
    """p99 enqueue -> start of the jobs created in the first and the last `window` seconds."""
    times = [created_s(i) for i in ids]
    start, end = min(times), max(times)
    firsts = sorted(ms for t, ms in zip(times, latency_ms, strict=True) if t < start + window)
    lasts = sorted(ms for t, ms in zip(times, latency_ms, strict=True) if t > end - window)
    return (firsts[int(0.99 * (len(firsts) - 1))] if firsts else 0.0,
            lasts[int(0.99 * (len(lasts) - 1))] if lasts else 0.0)  # fmt: skip


@dataclass
class Leaks:
    rss_growth: float  # the largest relative growth after warm-up, over the processes
    fd_drift: int  # the largest change of open file descriptors after warm-up
    summary: str


def leaks_of(samples: dict[int, list[tuple[int, int]]]) -> Leaks:
    """Compare each process's last sample with its first after the warm-up (the first third)."""
    growth, drift, parts = 0.0, 0, []
    for series in samples.values():
        if len(series) < 6:
            continue  # replaced early: not a long-lived process
        (rss0, fd0), (rss1, fd1) = series[len(series) // 3], series[-1]
        growth = max(growth, rss1 / rss0 - 1)
        drift = max(drift, abs(fd1 - fd0))
        parts.append(f"{rss0 // 1024}->{rss1 // 1024} MiB, {fd0}->{fd1} fds")
    return Leaks(growth, drift, f"long-lived processes after warm-up: {'; '.join(parts)}")
