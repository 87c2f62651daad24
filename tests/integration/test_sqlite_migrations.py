"""Schema migrations on SQLite: a file written by an older conveyor is brought up to date when
it is opened, also by several processes at once."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import errors
from conveyor.clock import FakeClock
from conveyor.ids import uuid7
from conveyor.models import JobFilter
from conveyor.store.migrations import available
from conveyor.store.sqlite import SqliteStore
from tests.integration.harness import PYTHONPATH, ROOT

pytestmark = pytest.mark.timeout(120)


def version_1_database(path: Path, jobs: int) -> tuple[dict[str, list[str]], set[str]]:
    """A database as conveyor with schema version 1 left it (the first shipped migration, rows
    written the way its store wrote them); returns the job ids per tag, and the queued ones
    (the others succeeded)."""
    db = sqlite3.connect(path)
    db.executescript(available("sqlite")[0].sql)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    by_tag: dict[str, list[str]] = {}
    queued = set()
    rows = []
    for i in range(jobs):
        job_id = uuid7(1_700_000_000_000 + i)
        tags = [f"customer-{i % 7}"] + (["rare"] if i % 1000 == 0 else [])
        for tag in tags:
            by_tag.setdefault(tag, []).append(job_id)
        state = "succeeded" if i % 2 else "queued"
        if state == "queued":
            queued.add(job_id)
        finished = 1_700_000_000.0 if state == "succeeded" else None
        rows.append((job_id, "noop", "default", state, "{}", 1_700_000_000.0, 3, 1.0,
                     json.dumps(tags), 1_700_000_000.0, finished, 1_700_000_000.0))  # fmt: skip
    db.executemany(
        "INSERT INTO jobs (id, kind, queue, state, input, run_at, max_attempts, backoff_s, tags,"
        " created_at, finished_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.commit()
    db.close()
    return by_tag, queued


def test_a_version_1_file_gets_its_tags_indexed_on_open(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    by_tag, queued = version_1_database(path, 3000)
    clock = FakeClock(1_700_000_100.0)
    store = SqliteStore(path, clock=clock)
    try:
        latest = available("sqlite")[-1].version
        assert store._read("PRAGMA user_version") == [(latest,)]
        rare = store.list_jobs(JobFilter(tag="rare"))
        assert [j.id for j in rare.jobs] == sorted(by_tag["rare"], reverse=True)
        first = store.list_jobs(JobFilter(tag="customer-3"), limit=100)
        second = store.list_jobs(JobFilter(tag="customer-3"), cursor=first.next_cursor)
        newest = sorted(by_tag["customer-3"], reverse=True)
        assert [j.id for j in first.jobs + second.jobs] == newest[:150]
        [claimed] = store.claim(["default"], "w", 1, 30.0, tag="rare")
        assert claimed.id == min(by_tag["rare"])
        assert len(store.prune(1_700_000_050.0)) == 1500  # the succeeded half
        waiting = store.list_jobs(JobFilter(tag="customer-3"), limit=1000).jobs
        assert {j.id for j in waiting} == queued & set(by_tag["customer-3"])
        left = store._read("SELECT count(*) FROM job_tags")[0][0]
        assert left == 1500 + len(by_tag["rare"])  # nothing left of the pruned jobs
        indexes = {r[0] for r in store._read("SELECT name FROM sqlite_master WHERE type='index'")}
        assert "jobs_state" not in indexes and "jobs_state_queue_id" in indexes
    finally:
        store.close()


OPEN_AND_COUNT = """
import sys
from conveyor.models import JobFilter
from conveyor.store.sqlite import SqliteStore
store = SqliteStore(sys.argv[1], busy_timeout_s=0.05)
print(len(store.list_jobs(JobFilter(tag="rare"), limit=1000).jobs))
store.close()
"""


def test_processes_opening_an_old_file_at_once_all_see_it_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    by_tag, _ = version_1_database(path, 100_000)  # back-filled in far more than 50 ms
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": PYTHONPATH}
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_COUNT, str(path)], cwd=ROOT, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=100) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    assert [out.strip() for out, _ in outputs] == [str(len(by_tag["rare"]))] * 4
    db = sqlite3.connect(path)
    assert db.execute("SELECT count(*) FROM job_tags").fetchone()[0] == 100_000 + 100
    db.close()


def test_a_file_from_a_newer_conveyor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version = 999")
    db.close()
    with pytest.raises(errors.ConfigurationError, match="newer than this conveyor"):
        SqliteStore(path)
