"""A real `conveyor worker` on Redis: idle workers do not poll, and wake at once for new work."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import start_worker, stop, wait_for, wait_state, worker_env
from tests.servers.redis import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
IDLE_WINDOW_S = 3.0


def commands(server: RedisServer) -> tuple[int, int]:
    """Commands run so far (counting those inside scripts), and scripts run."""
    client = server.client()
    try:
        stats = client.info("commandstats")
        total = sum(int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_"))
        return total, int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    finally:
        client.close()


def test_idle_worker_does_not_poll_and_wakes_at_once(
    redis_url: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    store = open_store(redis_url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    worker = start_worker(redis_url, tmp_path / "home", "--concurrency", "1",
                          env=worker_env(tmp_path / "home"))  # fmt: skip
    try:
        [warm] = service.submit_many([NewJob(kind="noop")])
        wait_state(store, warm.id, [JobState.SUCCEEDED], timeout=60)

        total, scripts = commands(redis_server)
        time.sleep(IDLE_WINDOW_S)  # a measurement window, not a synchronization
        total_after, scripts_after = commands(redis_server)
        idle_rate = (total_after - total - 1) / IDLE_WINDOW_S
        script_rate = (scripts_after - scripts) / IDLE_WINDOW_S

        pickups = []
        for _ in range(20):
            [job] = service.submit_many([NewJob(kind="noop")])
            done = wait_state(store, job.id, [JobState.SUCCEEDED], timeout=10)
            assert done.started_at is not None
            pickups.append((done.started_at - done.created_at).total_seconds() * 1000)
            # let the worker go idle again: it is waiting on the wake channel, not polling
            wait_for(lambda: not store.workers()[0].running, timeout=10)
        p50 = statistics.median(pickups)
        print(f"\nredis idle worker: {idle_rate:.1f} commands/s ({script_rate:.1f} scripts/s);"
              f" enqueue->start p50 {p50:.1f} ms, max {max(pickups):.1f} ms")  # fmt: skip
        # Idle traffic is worker beats, sweeps, the webhook feed and one claim per wake timeout:
        # a few scripts a second, not a polling storm (which would be hundreds).
        assert script_rate <= 5
        assert idle_rate < 60
        assert p50 < 250, "a publish on the wake channel starts the job, no poll interval"
    finally:
        assert stop(worker) == 0
        store.close()
