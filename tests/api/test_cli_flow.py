"""`conveyor schedules|limits|queues` as users run them, on the local store and through the
API (`--url`): one code path, the same answers, clean errors."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.api.conftest import ApiServer
from tests.integration.harness import ROOT, worker_env

Run = Callable[..., subprocess.CompletedProcess[str]]


def runner(request: pytest.FixtureRequest, tmp_path: Path, where: str) -> Run:
    home = tmp_path / "home"
    extra = {"COLUMNS": "200"}
    if where == "remote":
        api: ApiServer = request.getfixturevalue("api")
        extra.update(CONVEYOR_URL=api.url, CONVEYOR_STORE="sqlite:////nonexistent/never.db")

    def conveyor(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "conveyor", *args], env=worker_env(home, **extra), cwd=ROOT,
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    return conveyor


@pytest.fixture
def run(request: pytest.FixtureRequest, tmp_path: Path) -> Run:
    """The CLI talking to an API (each call a process: the machine's load makes them slow,
    so the full tour runs once, remotely, which covers the client too)."""
    return runner(request, tmp_path, "remote")


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    for word in words:
        assert word in text, text


def test_schedules_commands(run: Run, tmp_path: Path) -> None:
    sid = f"cli-{tmp_path.name[-6:]}"  # the remote server is shared by the module
    made = json.loads(ok(run("schedules", "create", sid, "-k", "demo.count", "--cron",
                             "0 12 * * *", "--tz", "Europe/Zurich", "-d", '{"to": 2}',
                             "--overlap", "forbid", "--json")))  # fmt: skip
    assert made["cron"] == "0 12 * * *" and made["input"] == {"to": 2}
    assert sid in ok(run("schedules", "list"))
    runs = json.loads(ok(run("schedules", "next", sid, "-n", "3", "--json")))
    assert len(runs) == 3
    ok(run("schedules", "pause", sid))
    assert json.loads(ok(run("schedules", "show", sid, "--json")))["paused"] is True
    ok(run("schedules", "resume", sid))
    replaced = json.loads(ok(run("schedules", "create", sid, "-k", "noop", "--every", "60",
                                 "--replace", "--json")))  # fmt: skip
    assert replaced["every_s"] == 60 and replaced["cron"] is None
    refused(run("schedules", "create", sid, "-k", "noop", "--every", "5"), 1, "already exists")
    refused(run("schedules", "create", "x", "-k", "noop", "--cron", "61 * * * *"), 2, "Bad minute")
    refused(run("schedules", "create", "x", "-k", "noop"), 2, "exactly one of")
    ok(run("schedules", "delete", sid))
    refused(run("schedules", "show", sid), 1, "no schedule")


def test_limits_and_queue_commands(run: Run, tmp_path: Path) -> None:
    queue = f"q{tmp_path.name[-6:]}"
    ok(run("limits", "set", f"queue:{queue}", "--max-running", "3", "--rate", "10", "--per", "1m"))
    shown = {v["target"]: v for v in json.loads(ok(run("limits", "list", "--json")))}
    assert shown[f"queue:{queue}"]["rate"] == 10 and shown[f"queue:{queue}"]["per_s"] == 60
    assert shown[f"queue:{queue}"]["source"] == "admin"
    refused(run("limits", "set", "planet:x", "--rate", "1"), 2, "pattern")
    refused(run("limits", "set", f"queue:{queue}"), 2, "max_running, rate or both")
    ok(run("limits", "delete", f"queue:{queue}"))
    refused(run("limits", "delete", f"queue:{queue}"), 1, "no limit")

    job = json.loads(ok(run("submit", "noop", "--queue", queue, "--json")))
    ok(run("queues", "pause", queue))
    table = ok(run("queues"))
    assert f"{queue} (paused)" in table
    assert json.loads(ok(run("jobs", "show", job["id"], "--json")))["waiting_reason"] == (
        "queue_paused"
    )
    ok(run("queues", "resume", queue))
    assert "1 waiting jobs cancelled" in ok(run("queues", "purge", queue, "--yes"))
    assert json.loads(ok(run("jobs", "show", job["id"], "--json")))["state"] == "cancelled"


def test_submit_unique_key(run: Run, tmp_path: Path) -> None:
    key = f"u{tmp_path.name[-6:]}"
    first = ok(run("submit", "noop", "--unique-key", key)).strip()
    again = ok(run("submit", "noop", "--unique-key", key, "--unique-window", "1h")).strip()
    assert first == again
    refused(run("submit", "noop", "--unique-key", key, "--unique-scope", "always"), 2, "waiting")


def test_the_same_commands_work_on_the_local_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    run = runner(request, tmp_path, "local")
    ok(run("schedules", "create", "loc", "-k", "noop", "--every", "60"))
    assert "every 60s" in ok(run("schedules", "list"))
    ok(run("limits", "set", "kind:noop", "--max-running", "1"))
    assert "local" in ok(run("limits", "list"))
