"""The target: a 1-second schedule served by three `conveyor worker` processes, two of them
killed -9 and restarted, makes exactly one job per tick, on every store that processes share.

The PR-tier run takes ~15 s; the 10-minute run is a soak test (`make soak`)."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conveyor.models import JobFilter, KindInfo
from conveyor.schedules.model import NewSchedule
from conveyor.schedules.service import Schedules
from conveyor.schedules.ticker import schedule_tag
from conveyor.service import Service
from conveyor.storage import open_storage
from tests.backends import Backend
from tests.integration.harness import children, start_worker, stop, wait_for, worker_env

pytestmark = pytest.mark.timeout(900)


def kill9(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a supervisor and its children: nothing of it runs on."""
    pids = [process.pid, *children(process.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(10)


def run_schedule_under_kills(
    backend: Backend, home: Path, duration_s: float, kill_every_s: float, down_s: float
) -> None:
    if not backend.shared:
        pytest.skip("an in-memory store cannot be shared by processes")
    store = backend.open()
    env = worker_env(home, CONVEYOR_WEBHOOK_DISPATCHER="0")
    rng = random.Random(20)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        store.register_kinds([KindInfo(name="noop")])
        service = Service(store, open_storage(f"file://{home / 'files'}"))
        workers = [start_worker(backend.url, home, "-c", "1", env=env) for _ in range(3)]
        wait_for(lambda: len(store.workers()) == 3, 120, 0.2, "three workers up")
        # Catch-up keeps every tick, however late a loaded machine runs a ticker: what is
        # measured is one job per tick, not the machine's latency.
        new = NewSchedule(id="beat", kind="noop", every_s=1, misfire="catch_up",
                          catch_up_max=1000)  # fmt: skip
        created = Schedules(service).create(new)
        first_tick = math.floor(created.created_at.timestamp()) + 1
        started = time.monotonic()
        next_kill = started + kill_every_s
        kills = 0
        while time.monotonic() - started < duration_s:
            if time.monotonic() >= next_kill:
                victims = rng.sample(range(3), 2)
                for index in victims:
                    kill9(workers[index])
                kills += 2
                time.sleep(down_s)  # the third carries on alone meanwhile
                for index in victims:
                    workers[index] = start_worker(backend.url, home, "-c", "1", env=env)
                next_kill = time.monotonic() + kill_every_s
            time.sleep(0.2)
        last_tick = math.floor(store.now())

        def jobs() -> list[str]:
            page = store.list_jobs(JobFilter(tag=schedule_tag("beat")), None, 100_000)
            return [j.idempotency_key or "" for j in page.jobs]

        wait_for(lambda: f"schedule:beat:{last_tick}" in jobs(), 30, 0.1, "the last tick's job")
        keys = jobs()
        ticks = sorted(int(k.rsplit(":", 1)[1]) for k in keys)
        assert kills >= 2
        assert len(keys) == len(set(keys)), "a tick got two jobs"
        expected = list(range(first_tick, ticks[-1] + 1))
        assert ticks == expected, f"ticks without a job: {sorted(set(expected) - set(ticks))}"
        assert ticks[-1] >= last_tick
    finally:
        for process in workers:
            stop(process)
        store.close()


def test_one_job_per_tick_while_workers_are_killed(backend: Backend, home: Path) -> None:
    run_schedule_under_kills(backend, home, duration_s=12, kill_every_s=4, down_s=1.5)


@pytest.mark.soak
def test_one_job_per_tick_for_ten_minutes_of_kills(backend: Backend, home: Path) -> None:
    run_schedule_under_kills(backend, home, duration_s=600, kill_every_s=30, down_s=5)
