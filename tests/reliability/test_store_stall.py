"""Reliability-plan R3/S10 without root: self-fencing while store calls hang, and no false alarm.

A loopback proxy (`reset_proxy.py`) sits between one `conveyor worker` and PostgreSQL or
Redis and freezes all traffic: no byte moves, no connection closes, the worker's kernel still
sees its data acknowledged. This is the harshest silent partition for the supervisor's loop:
its heartbeat call hangs with no TCP timeout to end it, so only the fence watchdog
(`worker/fence.py`) can stop the job whose lease is lapsing.

- A freeze longer than the lease: the running job's child is killed within the fence margin
  of the lease (measured from the freeze, which is after the last renewal was sent) and never
  writes its end record.
- A 2 s freeze (a slow but alive store) with a 6 s lease: nothing is fenced, the job runs once
  to its end and succeeds.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.backends import Backend
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env
from tests.reliability.conftest import SERVER_STORES
from tests.reliability.reset_proxy import ResetProxy

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.parametrize("shared_backend", SERVER_STORES, indirect=True)]  # fmt: skip
SLACK_S = 1.0  # scheduling slack on a loaded 2-core machine


def records(ledger: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []


@pytest.fixture
def proxied(shared_backend: Backend) -> Iterator[tuple[ResetProxy, str]]:
    proxy = ResetProxy(urlsplit(shared_backend.url).port or 0)
    with proxy.running():
        yield proxy, proxy.via(shared_backend.url)


class OneJob:
    """One `test.ledger` job of `job_s` and one `conveyor worker -c 1` reaching the store
    through the proxy, with the given lease and heartbeat."""

    def __init__(
        self, backend: Backend, proxied: tuple[ResetProxy, str], tmp_path: Path, *,
        lease_s: float, heartbeat_s: float, job_s: float,
    ) -> None:  # fmt: skip
        store = open_store(backend.url)
        store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
        self.service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
        self.ledger = tmp_path / "ledger.jsonl"
        job = NewJob(kind="test.ledger", input={"ledger": str(self.ledger), "ms": job_s * 1000})
        self.job_id = self.service.submit(job).id
        home = tmp_path / "home"
        env = worker_env(home, CONVEYOR_LEASE_S=str(lease_s),
                         CONVEYOR_HEARTBEAT_S=str(heartbeat_s), CONVEYOR_SWEEP_S="0.5")  # fmt: skip
        self.worker = start_worker(proxied[1], home, "-c", "1", env=env)

    def started(self) -> dict[str, object]:
        """The ledger's start record, once the job runs."""
        return wait_for(lambda: next((r for r in records(self.ledger) if r["ev"] == "start"),
                                     None), timeout=60)  # fmt: skip

    def events(self) -> list[object]:
        return [r["ev"] for r in records(self.ledger)]

    def close(self) -> None:
        stop(self.worker)
        self.service.store.close()


def test_frozen_store_fences_the_running_job_within_the_lease(
    shared_backend: Backend, proxied: tuple[ResetProxy, str], tmp_path: Path
) -> None:
    lease_s = 2.0
    proxy = proxied[0]
    run = OneJob(shared_backend, proxied, tmp_path, lease_s=lease_s, heartbeat_s=0.4,
                 job_s=4 * lease_s)  # fmt: skip
    try:
        child = int(str(run.started()["pid"]))
        proxy.freeze()
        frozen_at = time.monotonic()
        wait_for(lambda: child not in children(run.worker.pid), timeout=4 * lease_s,
                 interval=0.01)  # fmt: skip
        fenced_after = time.monotonic() - frozen_at
    finally:
        proxy.thaw()
        run.close()
    assert fenced_after <= lease_s + SLACK_S, f"fenced {fenced_after:.2f}s after the freeze"
    assert run.events() == ["start"], "the fenced job ran to its end"


def test_short_store_stall_does_not_fence(
    shared_backend: Backend, proxied: tuple[ResetProxy, str], tmp_path: Path
) -> None:
    stall_s = 2.0
    proxy = proxied[0]
    run = OneJob(shared_backend, proxied, tmp_path, lease_s=6.0, heartbeat_s=1.0,
                 job_s=2.5 * stall_s)  # fmt: skip
    try:
        run.started()
        proxy.freeze()
        time.sleep(stall_s)  # the stall itself (fault schedule, not synchronisation)
        proxy.thaw()
        job = wait_for(lambda: (j := run.service.get(run.job_id)).state.is_final and j,
                       timeout=30)  # fmt: skip
    finally:
        proxy.thaw()
        run.close()
    assert job.state is JobState.SUCCEEDED
    assert job.attempt == 1
    assert run.events() == ["start", "end"]
