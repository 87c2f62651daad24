"""The CLI as users run it: real processes, exit codes, and messages instead of tracebacks."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, worker_env


def conveyor(home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = worker_env(home, COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, input=stdin, timeout=120,
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    text = " ".join(result.stderr.split())
    for word in words:
        assert word in text, text


def test_submit_wait_shows_result_and_progress(home: Path) -> None:
    submitted = conveyor(home, "submit", "demo.count", "-d", '{"to": 3, "delay": 0}', "--json")
    assert submitted.returncode == 0, submitted.stderr
    job = json.loads(submitted.stdout)
    assert job["state"] == "queued"
    worker = conveyor(home, "worker", "--burst", "-c", "1", "--log-level", "warning")
    assert worker.returncode == 0, worker.stderr
    shown = conveyor(home, "jobs", "show", job["id"], "--json", "--events")
    body = json.loads(shown.stdout)
    assert body["state"] == "succeeded"
    assert body["result"] == {"total": 3, "sum": 6}
    assert [e["data"]["state"] for e in body["events"] if e["type"] == "state"] == [
        "queued",
        "running",
        "succeeded",
    ]
    waited = conveyor(home, "jobs", "wait", job["id"])
    assert waited.returncode == 0
    assert json.loads(waited.stdout) == {"total": 3, "sum": 6}


def test_input_from_file_and_stdin(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "in.json"
    path.write_text('{"to": 2}')
    from_file = conveyor(home, "submit", "demo.count", "-d", f"@{path}", "--json")
    from_stdin = conveyor(home, "submit", "demo.count", "-d", "@-", "--json", stdin='{"to": 4}')
    assert json.loads(from_file.stdout)["input"] == {"to": 2}
    assert json.loads(from_stdin.stdout)["input"] == {"to": 4}


def test_user_mistakes_get_one_clear_line(home: Path) -> None:
    assert_clean_error(conveyor(home, "submit", "nope"), 1, "unknown kind 'nope'", "demo.count")
    assert_clean_error(
        conveyor(home, "submit", "demo.count", "-d", '{"to": "x"}'), 1, "input.to", "integer"
    )
    assert_clean_error(conveyor(home, "submit", "demo.count", "-d", "{bad"), 2, "not valid JSON")
    assert_clean_error(conveyor(home, "submit", "demo.count", "-d", "@/no/such"), 2, "cannot read")
    assert_clean_error(conveyor(home, "submit", "demo.count", "--priority", "x"), 2, "--priority")
    assert_clean_error(conveyor(home, "jobs", "show", "0000"), 1, "no job with id")
    assert_clean_error(conveyor(home, "prune", "--older-than", "soon"), 2, "duration")
    listed = conveyor(home, "jobs", "list", "--json")
    assert json.loads(listed.stdout)["jobs"] == [], "nothing was stored by the failed submits"


def test_corrupt_database_is_reported_not_overwritten(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    result = conveyor(home, "jobs", "list", "--store", f"sqlite:///{bad}")
    assert_clean_error(result, 1, "not a conveyor database")
    assert bad.read_bytes() == b"this is not sqlite" * 100


def test_locked_database_is_retryable_and_loses_nothing(home: Path) -> None:
    url = f"sqlite:///{home / 'conveyor.db'}"
    first = conveyor(home, "submit", "noop", "--store", url)
    assert first.returncode == 0
    lock = sqlite3.connect(home / "conveyor.db", isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        result = conveyor(home, "submit", "noop", "--store", f"{url}?busy_timeout=0.2")
        assert_clean_error(result, 1, "locked", "try again")
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    listed = json.loads(conveyor(home, "jobs", "list", "--json", "--store", url).stdout)
    assert [j["id"] for j in listed["jobs"]] == [first.stdout.strip()]


def test_cancel_retry_delete_and_prune(home: Path) -> None:
    job_id = conveyor(home, "submit", "noop", "--delay", "3600").stdout.strip()
    assert "cancelled" in conveyor(home, "jobs", "cancel", job_id).stdout
    assert "queued" in conveyor(home, "jobs", "retry", job_id).stdout
    assert_clean_error(conveyor(home, "jobs", "delete", job_id), 1, "only finished jobs")
    conveyor(home, "jobs", "cancel", job_id)
    assert "deleted" in conveyor(home, "jobs", "delete", job_id).stdout
    other = conveyor(home, "submit", "noop", "--delay", "3600").stdout.strip()
    conveyor(home, "jobs", "cancel", other)
    assert "deleted 1 finished" in conveyor(home, "prune", "--older-than", "0s").stdout


def test_help_is_helpful(home: Path) -> None:
    result = conveyor(home, "--help")
    assert result.returncode == 0
    for command in ("submit", "worker", "jobs", "kinds", "up", "prune"):
        assert command in result.stdout
    assert os.path.exists(ROOT / "README.md")


def test_worker_serves_every_repeated_queue(home: Path) -> None:
    """`-q a -q b` serves both queues (it used to serve only the last one)."""
    ids = [
        conveyor(home, "submit", "noop", "--queue", queue).stdout.strip()
        for queue in ("first", "second", "third")
    ]
    worker = conveyor(home, "worker", "--burst", "-c", "1", "-q", "first", "-q", "second,third")
    assert worker.returncode == 0, worker.stderr
    states = [json.loads(conveyor(home, "jobs", "show", i, "--json").stdout)["state"] for i in ids]
    assert states == ["succeeded"] * 3


def test_worker_without_queues_serves_its_kinds_queues(home: Path, tmp_path: Path) -> None:
    """A newcomer's kind declared with `queue="side"` runs under a plain `conveyor worker -i`."""
    (tmp_path / "sidekinds.py").write_text(
        "import conveyor\n\n"
        "@conveyor.task('side.echo', queue='side')\n"
        "def echo(data, ctx):\n"
        "    return data\n"
    )
    env = worker_env(home, COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])
    env["CONVEYOR_IMPORTS"] = "sidekinds,conveyor.kinds.demo"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    side = run("submit", "side.echo", "-d", '{"x": 1}').stdout.strip()
    plain = run("submit", "noop").stdout.strip()
    worker = run("worker", "--burst", "-c", "1")
    assert worker.returncode == 0, worker.stderr
    for job_id in (side, plain):
        assert json.loads(run("jobs", "show", job_id, "--json").stdout)["state"] == "succeeded"


def test_job_ids_are_whole_at_80_columns_and_prefixes_work(home: Path) -> None:
    first = conveyor(home, "submit", "noop", "--delay", "3600").stdout.strip()
    second = conveyor(home, "submit", "noop", "--delay", "3600").stdout.strip()
    narrow = subprocess.run(
        [sys.executable, "-m", "conveyor", "jobs", "list"], env=worker_env(home, COLUMNS="80"),
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert first in narrow.stdout and second in narrow.stdout, narrow.stdout
    assert max(len(line) for line in narrow.stdout.splitlines()) <= 80
    # A unique start of an id names its job, in every job command.
    common = first[: next(i for i in range(len(first)) if first[i] != second[i])]
    unique = second[: len(common) + 1]
    shown = json.loads(conveyor(home, "jobs", "show", unique, "--json").stdout)
    assert shown["id"] == second
    assert "cancelled" in conveyor(home, "jobs", "cancel", first[:13]).stdout
    assert_clean_error(conveyor(home, "jobs", "show", common), 1, "several job ids")
    assert_clean_error(conveyor(home, "jobs", "show", "0123456789"), 1, "no job with id")


def test_submit_warns_when_no_worker_serves_the_job(home: Path) -> None:
    submitted = conveyor(home, "submit", "noop", "--queue", "nobody-here")
    assert submitted.returncode == 0
    text = " ".join(submitted.stderr.split())
    assert "warning: no live worker serves kind 'noop' in queue 'nobody-here'" in text, text
