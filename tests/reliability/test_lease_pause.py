"""Reliability-plan S5: lease renewal, a SIGSTOPped worker, and fencing of its late results.

Short leases (TTL 2 s, heartbeat 0.4 s, sweep 0.5 s) so the scenario fits in seconds:

- Fault 1 (none): a job lasting 4 x TTL on a healthy worker is kept alive by heartbeats and is
  never rescued (one start, attempt 1, no re-queue event).
- Fault 2: worker W1 runs a short job (finishes while W1 is paused) and a long one (4 x TTL);
  W1 (supervisor and children) is SIGSTOPped for 2 x TTL. W2 must claim both within
  TTL + sweep + 2 s. After SIGCONT, W1's heartbeat and completion are refused: every job has
  exactly one `succeeded` event and the result of attempt 2; W1 kills its stale long job
  within about one heartbeat interval (it never writes that job's end record).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.backends import Backend
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env
from tests.reliability.conftest import SQLITE_IN_PR
from tests.reliability.fault_results import record_fault_run

pytestmark = [pytest.mark.timeout(300), pytest.mark.parametrize(
    "shared_backend", SQLITE_IN_PR, indirect=True)]  # fmt: skip
LEASE_S, HEARTBEAT_S, SWEEP_S = 2.0, 0.4, 0.5
PAUSE_S = 2 * LEASE_S
LONG_MS = 4 * LEASE_S * 1000


def ledger_records(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def starts(path: Path, job_id: str) -> list[dict[str, object]]:
    return [r for r in ledger_records(path) if r["job"] == job_id and r["ev"] == "start"]


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def setup(backend: Backend, tmp_path: Path) -> tuple[Service, Path, dict[str, str]]:
    store = open_store(backend.url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    env = worker_env(
        tmp_path / "home",
        CONVEYOR_LEASE_S=str(LEASE_S),
        CONVEYOR_HEARTBEAT_S=str(HEARTBEAT_S),
        CONVEYOR_SWEEP_S=str(SWEEP_S),
    )
    return service, tmp_path / "ledger.jsonl", env


def succeeded_events(service: Service, job_id: str) -> int:
    return sum(
        1 for e in service.store.events(job_id)
        if e.type == "state" and e.data["state"] == JobState.SUCCEEDED
    )  # fmt: skip


def requeued(service: Service, job_id: str) -> int:
    return sum(
        1 for e in service.store.events(job_id)
        if e.type == "state" and e.data["state"] in (JobState.QUEUED, JobState.SCHEDULED)
    )  # fmt: skip


def test_s5_long_jobs_with_heartbeats_are_never_rescued(
    shared_backend: Backend, tmp_path: Path
) -> None:
    service, ledger, env = setup(shared_backend, tmp_path)
    home = tmp_path / "home"
    workers = [start_worker(shared_backend.url, home, "-c", "2", env=env) for _ in "ab"]
    try:
        jobs = service.submit_many(
            [NewJob(kind="test.ledger", input={"ledger": str(ledger), "ms": LONG_MS})
             for _ in range(2)]
        )  # fmt: skip
        ids = [j.id for j in jobs]
        wait_for(lambda: all(service.get(i).state is JobState.SUCCEEDED for i in ids),
                 timeout=120, interval=0.1)  # fmt: skip
    finally:
        for worker in workers:
            stop(worker)
    runs = {i: len(starts(ledger, i)) for i in ids}
    rescues = {i: requeued(service, i) - 1 for i in ids}  # the enqueue itself is one `queued`
    record_fault_run(
        "S5 long jobs (4x TTL) with heartbeats", shared_backend.name, jobs=len(ids),
        faults="none", lost=0, duplicate_completions=sum(
            max(0, succeeded_events(service, i) - 1) for i in ids),
        duplicate_executions=sum(max(0, n - 1) for n in runs.values()), inflight_bound=0,
        notes=f"TTL {LEASE_S:g} s, jobs {LONG_MS / 1000:g} s, rescues {sum(rescues.values())}",
    )  # fmt: skip
    attempts = [service.get(i).attempt for i in ids]
    service.store.close()
    assert runs == {i: 1 for i in ids}
    assert rescues == {i: 0 for i in ids}
    assert attempts == [1] * len(ids)


def marker(directory: Path, name: str, attempt: int) -> dict[str, object] | None:
    """What `test.block` wrote when attempt `attempt` of job `name` started (pid), with mtime."""
    path = directory / f"{name}.{attempt}.started"
    try:
        return {**json.loads(path.read_text()), "t": path.stat().st_mtime}
    except (OSError, ValueError):
        return None


def test_s5_paused_worker_is_fenced(shared_backend: Backend, tmp_path: Path) -> None:
    service, _, env = setup(shared_backend, tmp_path)
    home, gates = tmp_path / "home", {"short": tmp_path / "short", "long": tmp_path / "long"}
    for gate in gates.values():
        gate.mkdir()
    w1 = start_worker(shared_backend.url, home, "-c", "2", env=env)
    w2 = None
    stopped: list[int] = []
    try:
        jobs = dict(zip(gates, service.submit_many([
            NewJob(kind="test.block", input={"dir": str(gate), "name": name})
            for name, gate in gates.items()
        ]), strict=True))  # fmt: skip
        wait_for(lambda: all(marker(gates[n], n, 1) for n in gates), timeout=60)
        # W2 comes up only now, so W1 holds both jobs; wait until it is registered.
        w2 = start_worker(shared_backend.url, home, "-c", "2", env=env)
        wait_for(lambda: len(service.store.workers()) >= 2, timeout=60, interval=0.1)
        stopped = [w1.pid, *children(w1.pid)]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        paused_at = time.time()
        wait_for(lambda: all(marker(gates[n], n, 2) for n in gates), timeout=30, interval=0.05)
        rescue_s = {n: float(marker(gates[n], n, 2)["t"]) - paused_at for n in gates}  # type: ignore[index,arg-type]
        # The short job may finish now: attempt 2 (W2) succeeds while W1 is still paused; W1's
        # stale child sees the same gate open as soon as it resumes and reports success too.
        (gates["short"] / "release").touch()
        wait_for(lambda: service.get(jobs["short"].id).state is JobState.SUCCEEDED, timeout=30)
        # Keep W1 paused for 2 x TTL in all (the fault itself, not synchronisation).
        time.sleep(max(0.0, paused_at + PAUSE_S - time.time()))
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        resumed_at = time.time()
        stopped = []
        stale_pid = int(marker(gates["long"], "long", 1)["pid"])  # type: ignore[index,call-overload]
        wait_for(lambda: not alive(stale_pid), timeout=HEARTBEAT_S + 5, interval=0.02)
        abort_s = time.time() - resumed_at
        # Only now may the long job finish: W1's stale child is gone and cannot complete it.
        (gates["long"] / "release").touch()
        wait_for(lambda: all(service.get(j.id).state is JobState.SUCCEEDED
                             for j in jobs.values()), timeout=60, interval=0.1)  # fmt: skip
        # Let W1 report its stale short result (it resumed); then look at the events.
        wait_for(lambda: service.store.workers() and time.time() > resumed_at + 2 * HEARTBEAT_S,
                 timeout=10)  # fmt: skip
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        for worker in (w1, w2):
            if worker is not None:
                stop(worker)
    final = {n: service.get(j.id) for n, j in jobs.items()}
    completions = {n: succeeded_events(service, j.id) for n, j in jobs.items()}
    bound = LEASE_S + SWEEP_S + 2
    record_fault_run(
        "S5 SIGSTOP 2x TTL, fencing", shared_backend.name, jobs=2,
        faults=f"SIGSTOP worker (supervisor + children) {PAUSE_S:g} s", lost=sum(
            1 for j in final.values() if j.state is not JobState.SUCCEEDED),
        duplicate_completions=sum(max(0, n - 1) for n in completions.values()),
        duplicate_executions=2, inflight_bound=2, max_recovery_s=max(rescue_s.values()),
        recovery_bound_s=bound,
        notes=f"TTL {LEASE_S:g} s; stale job killed {abort_s:.2f} s after SIGCONT; "
        f"results {[j.result for j in final.values()]}",
    )  # fmt: skip
    service.store.close()
    assert all(j.state is JobState.SUCCEEDED for j in final.values())
    assert completions == {n: 1 for n in final}, "a stale completion was accepted"
    assert all(j.attempt == 2 and j.result == {"attempt": 2} for j in final.values())
    assert max(rescue_s.values()) <= bound
    assert abort_s <= HEARTBEAT_S + 2.0
