"""Reliability-plan S10 and issue 5 "many hosts": a store host and two worker hosts.

Three network namespaces (see `netns.py`): PostgreSQL or Redis (started by the usual
fixtures) runs in the store namespace, reachable from each worker host over its own veth link
through a `socat` forwarder; each worker host runs one `conveyor worker -c 4`.

1. Kill every worker process on host w2 mid-run (supervisor and children, SIGKILL): its jobs
   are rescued within lease TTL + sweep + 5 s and run on w1; w2 is started again.
2. Silent partition: blackhole w1's route to the store for 3 x TTL. w1 must fence itself: its
   in-flight jobs are killed once heartbeats have failed for a lease (no ledger `end` from w1
   later than cut + TTL + slack while cut off), w2 re-runs them, no job completes twice; after
   the route is healed w1 runs jobs again.

Every job then succeeds exactly once (ledger checker, §2.3). Nightly tier (`soak`): about a
minute per store.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env
from tests.integration.ledger import check
from tests.reliability.fault_results import record_fault_run
from tests.reliability.netns import Network, private_network
from tests.servers.postgres import running_server
from tests.servers.redis import redis_available, running_redis

pytestmark = [pytest.mark.soak, pytest.mark.timeout(600)]
LEASE_S, HEARTBEAT_S, SWEEP_S = 6.0, 1.0, 1.0
N, LONG_EVERY, SHORT_MS, LONG_MS = 400, 8, 300, 3 * LEASE_S * 1000
SLACK_S = 2.0  # scheduling slack on a loaded 2-core machine, on top of the fence deadline


@contextlib.contextmanager
def forwarders(net: Network, port: int) -> Iterator[None]:
    """socat in the store namespace: each link address:port -> 127.0.0.1:port."""
    if shutil.which("socat") is None:
        pytest.skip("socat is not installed")
    procs = [
        subprocess.Popen(
            ["socat", f"TCP-LISTEN:{port},bind={addr},fork,reuseaddr", f"TCP:127.0.0.1:{port}"],
            start_new_session=True,
            stderr=subprocess.DEVNULL,
        )
        for addr in net.store_addr.values()
    ]
    try:
        yield
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


class HostPids(threading.Thread):
    """Samples each host's worker children, so ledger records (pid) map to a host."""

    def __init__(self, workers: dict[str, list[subprocess.Popen[bytes]]]) -> None:
        super().__init__(daemon=True)
        self.workers = workers
        self.pids: dict[str, set[int]] = {host: set() for host in workers}
        self.last_seen: dict[int, float] = {}  # pid -> last time it was alive (~ its death)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            for host, procs in self.workers.items():
                for proc in list(procs):
                    found = children(proc.pid)
                    self.pids[host].update(found)
                    now = time.time()
                    self.last_seen.update((pid, now) for pid in found)


def ledger_records(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def unfinished(service: Service) -> bool:
    states = [JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING]
    return bool(service.list_jobs(JobFilter(state=states), limit=1).jobs)


def run_scenario(name: str, net: Network, local_url: str, tmp_path: Path) -> dict[str, Any]:
    store = open_store(local_url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    ledger = tmp_path / "ledger.jsonl"
    ids = [j.id for j in service.submit_many([
        NewJob(kind="test.ledger", input={"ledger": str(ledger),
               "ms": LONG_MS if i % LONG_EVERY == 0 else SHORT_MS})
        for i in range(N)
    ])]  # fmt: skip
    home = tmp_path / "home"
    env = worker_env(home, CONVEYOR_LEASE_S=str(LEASE_S), CONVEYOR_HEARTBEAT_S=str(HEARTBEAT_S),
                     CONVEYOR_SWEEP_S=str(SWEEP_S))  # fmt: skip

    def start(host: str) -> subprocess.Popen[bytes]:
        url = local_url.replace("127.0.0.1", net.store_addr[host])
        return start_worker(url, home, "-c", "4", env=env, prefix=net.exec_prefix(host))

    workers = {"w1": [start("w1")], "w2": [start("w2")]}
    sampler = HostPids(workers)
    sampler.start()
    figures: dict[str, float] = {}
    try:
        # Fault 1: every worker process on w2 dies at once.
        wait_for(lambda: len(ledger_records(ledger)) >= N // 3, timeout=240, interval=0.1)
        victim = workers["w2"][0]
        pids = [victim.pid, *children(victim.pid)]
        before = [r for r in ledger_records(ledger) if r["pid"] in pids]
        running_b = {r["job"] for r in before if r["ev"] == "start"} - {
            r["job"] for r in before if r["ev"] == "end"
        }
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(10)
        workers["w2"].append(start("w2"))
        # Fault 2: silent partition of w1 for 3 x TTL, once w2 is back and busy.
        wait_for(lambda: len(ledger_records(ledger)) >= 2 * N // 3, timeout=240, interval=0.1)
        net.blackhole("w1")
        cut_at = time.time()
        time.sleep(3 * LEASE_S)  # the partition itself (fault schedule, not synchronisation)
        net.heal("w1")
        healed_at = time.time()
        w1_pids = set(sampler.pids["w1"])
        resumed = wait_for(
            lambda: next((r["t"] for r in ledger_records(ledger) if r["ev"] == "start"
                          and r["t"] > healed_at and r["pid"] in sampler.pids["w1"]), None)
            or (not unfinished(service) and healed_at),
            timeout=120, interval=0.1,
        )  # fmt: skip
        figures["resume_s"] = float(resumed) - healed_at
        wait_for(lambda: not unfinished(service), timeout=300, interval=0.2)
    finally:
        sampler.done.set()
        for procs in workers.values():
            for proc in procs:
                stop(proc)
    report = check(store, ids, ledger)
    records = ledger_records(ledger)
    # Rescue time of w2's orphans: their next `queued` event after the kill.
    rescues = []
    for job_id in running_b:
        again = [
            e.at.timestamp()
            for e in store.events(job_id)
            if e.type == "state" and e.data["state"] == JobState.QUEUED
            and e.at.timestamp() > killed_at
        ]  # fmt: skip
        if again:
            rescues.append(min(again) - killed_at)
    # Self-fencing: nothing w1 ran may finish after cut + TTL + slack while it was cut off.
    fence_deadline = cut_at + LEASE_S + SLACK_S
    past_fence = [r for r in records if r["ev"] == "end" and r["pid"] in w1_pids
                  and fence_deadline < r["t"] < healed_at]  # fmt: skip
    inflight_w1 = {r["job"] for r in records if r["ev"] == "start" and r["pid"] in w1_pids
                   and r["t"] < cut_at} - {r["job"] for r in records if r["ev"] == "end"
                   and r["pid"] in w1_pids and r["t"] < cut_at}  # fmt: skip
    # When each job w1 had in flight at the cut stopped: its end record, else its process's
    # death (the fence kills the child). A correct fence stops all of them by the deadline.
    stopped_at = {}
    for job in inflight_w1:
        pid = next(r["pid"] for r in records if r["job"] == job and r["ev"] == "start"
                   and r["pid"] in w1_pids and r["t"] < cut_at)  # fmt: skip
        end = [r["t"] for r in records if r["job"] == job and r["ev"] == "end" and r["pid"] == pid]
        stopped_at[job] = min(end) if end else sampler.last_seen.get(int(pid), cut_at)
    fence_s = max((t - cut_at for t in stopped_at.values()), default=None)
    late = [job for job, t in stopped_at.items() if t > fence_deadline]
    bound = LEASE_S + SWEEP_S + 5
    record_fault_run(
        "S10 many hosts (netns)", name, jobs=N,
        faults=f"SIGKILL all of host w2 ({len(pids)} processes); blackhole w1 -> store "
        f"{3 * LEASE_S:g} s", lost=len(report.lost),
        duplicate_completions=len(report.duplicate_completions),
        duplicate_executions=len(report.duplicate_executions),
        inflight_bound=len(running_b) + len(inflight_w1) + 8,
        max_recovery_s=max(rescues, default=None), recovery_bound_s=bound,
        notes=f"TTL {LEASE_S:g} s; w1's {len(inflight_w1)} in-flight jobs stopped by cut + "
        f"{fence_s if fence_s is None else round(fence_s, 1)} s ({len(late)} after the "
        f"deadline cut + {LEASE_S + SLACK_S:g} s; {len(past_fence)} ran to their end); "
        f"w1 resumed {figures['resume_s']:.1f} s after healing",
    )  # fmt: skip
    store.close()
    return {
        "lost": report.lost,
        "duplicate_completions": report.duplicate_completions,
        "unexplained_duplicates": report.unexplained_duplicates,
        "duplicate_executions": len(report.duplicate_executions),
        "inflight_bound": len(running_b) + len(inflight_w1) + 8,
        "rescues": rescues,
        "rescue_bound": bound,
        "past_fence": past_fence,
        "late": late,
        "inflight_w1": len(inflight_w1),
        "resume_s": figures["resume_s"],
    }


@pytest.fixture(
    scope="module",
    params=[pytest.param("postgres", marks=pytest.mark.postgres),
            pytest.param("redis", marks=pytest.mark.redis)],
)  # fmt: skip
def scenario(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run the two faults once per store; the tests below judge the outcome."""
    tmp_path = tmp_path_factory.mktemp(f"s10_{request.param}")
    with private_network() as net, net.inside_store():
        if request.param == "postgres":
            with running_server() as pg, forwarders(net, pg.port):
                return run_scenario("postgres", net, pg.create_schema(), tmp_path)
        if not redis_available():
            pytest.skip("redis-server is not installed")
        with running_redis(appendfsync="always") as server, forwarders(net, server.port):
            return run_scenario("redis", net, server.url, tmp_path)


def test_s10_many_hosts_lose_nothing_and_rescue_in_time(scenario: dict[str, Any]) -> None:
    assert scenario["lost"] == []
    assert scenario["duplicate_completions"] == []
    assert scenario["unexplained_duplicates"] == []
    # Re-runs only for jobs in flight at a fault: w2's running jobs, w1's, plus each host's
    # prefetched-but-unstarted buffer (at most one per slot).
    assert scenario["duplicate_executions"] <= scenario["inflight_bound"]
    assert scenario["rescues"] and max(scenario["rescues"]) <= scenario["rescue_bound"]
    assert scenario["resume_s"] <= 10.0


def test_s10_cut_off_worker_fences_itself_within_lease(scenario: dict[str, Any]) -> None:
    assert scenario["inflight_w1"] > 0, "no job was in flight on w1 at the cut"
    past, late = scenario["past_fence"], scenario["late"]
    assert past == [], f"w1 ran {len(past)} jobs to their end past its lease while cut off"
    assert late == [], f"w1 stopped {len(late)} of its in-flight jobs after the fence deadline"
