"""Reliability-plan S9: SQLite crash consistency in single-node mode.

A producer submits jobs and records each acknowledged id (fsynced) while a worker drains them;
both are SIGKILLed at random moments (mid-claim, mid-settle, mid-enqueue) and restarted, cycle
after cycle. After every kill the database passes `PRAGMA integrity_check`; at the end every
acknowledged job exists and succeeded exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conveyor.models import JobState
from conveyor.store import open_store
from tests.integration.harness import ROOT, start_worker, wait_for, worker_env

PRODUCER = """
import os, sys
from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
url, acks = sys.argv[1:3]
store = open_store(url)
store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
service = Service(store, open_storage("file://" + os.path.dirname(acks) + "/files"))
fd = os.open(acks, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
while True:
    jobs = service.submit_many([NewJob(kind="noop") for _ in range(10)])
    os.write(fd, "".join(j.id + "\\n" for j in jobs).encode())
    os.fsync(fd)
"""


def integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def run_cycles(tmp_path: Path, cycles: int) -> None:
    home = tmp_path / "home"
    home.mkdir()
    db_path = home / "conveyor.db"
    url = f"sqlite:///{db_path}"
    acks = home / "acks.txt"
    env = worker_env(home, CONVEYOR_LEASE_S="3", CONVEYOR_HEARTBEAT_S="0.5", CONVEYOR_SWEEP_S="0.5")
    rng = random.Random(9)
    for _ in range(cycles):
        producer = subprocess.Popen(
            [sys.executable, "-c", PRODUCER, url, str(acks)], cwd=ROOT, env=env,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        worker = start_worker(url, home, "-c", "2", env=env)
        count = len(acks.read_text().splitlines()) if acks.exists() else 0
        wait_for(lambda c=count: acks.exists() and len(acks.read_text().splitlines()) > c + 20)
        # Let both run for a random moment so the kill lands anywhere in their work.
        deadline = len(acks.read_text().splitlines()) + rng.randint(10, 200)
        wait_for(lambda d=deadline: len(acks.read_text().splitlines()) >= d, timeout=60)
        for process in (producer, worker):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        assert integrity(db_path) == "ok"
    # Drain everything that was acknowledged.
    drainer = start_worker(url, home, "-c", "2", "--burst", env=env)
    assert drainer.wait(180) == 0
    acked = acks.read_text().split()
    store = open_store(url)
    store.rescue()  # leases of the last killed worker
    drainer = start_worker(url, home, "-c", "2", "--burst", env=env)
    assert drainer.wait(180) == 0
    lost = [job_id for job_id in acked if store.get(job_id).state is not JobState.SUCCEEDED]
    completions: Counter[str] = Counter()
    after = 0
    while batch := store.feed(after=after, limit=5000):
        completions.update(e.job_id for e in batch if e.data.get("state") == "succeeded")
        after = batch[-1].seq
    store.close()
    assert lost == []
    assert [j for j, n in completions.items() if n > 1] == []
    assert integrity(db_path) == "ok"
    print(f"S9: {cycles} kill cycles, {len(acked)} acknowledged jobs, 0 lost, 0 duplicated")


@pytest.mark.timeout(600)
def test_s9_sqlite_survives_kill_cycles(tmp_path: Path) -> None:
    run_cycles(tmp_path, cycles=6)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_s9_sqlite_survives_fifty_kill_cycles(tmp_path: Path) -> None:
    run_cycles(tmp_path, cycles=50)
