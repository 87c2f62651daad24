"""The CLI over HTTP (`--url`), and `conveyor up` as one process: API, workers, drain."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from conveyor.client import Client
from conveyor.models import JobState
from tests.api.conftest import ApiServer
from tests.integration.harness import ROOT, stop, wait_for, worker_env
from tests.servers.http import free_port


def cli(
    api: ApiServer | str, *args: str, home: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    url = api if isinstance(api, str) else api.url
    env = worker_env(home, CONVEYOR_URL=url, CONVEYOR_STORE="sqlite:////nonexistent/never.db")
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_remote_submit_wait_list_show_download(api: ApiServer, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("payload")
    submitted = cli(
        api,
        "submit",
        "demo.count",
        "-d",
        '{"to": 2, "delay": 0, "write_file": true}',
        "--file",
        f"data={source}",
        "--json",
        home=tmp_path,
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["id"]
    api.run_worker()
    waited = cli(api, "jobs", "wait", job_id, home=tmp_path)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout) == {"total": 2, "sum": 3}
    listed = cli(api, "jobs", "list", "--json", "--kind", "demo.count", home=tmp_path)
    assert job_id in [j["id"] for j in json.loads(listed.stdout)["jobs"]]
    shown = cli(api, "jobs", "show", job_id, "--events", "--json", home=tmp_path)
    assert json.loads(shown.stdout)["events"][-1]["data"]["state"] == "succeeded"
    out = tmp_path / "out"
    out.mkdir()
    fetched = cli(api, "jobs", "download", job_id, "-o", str(out), home=tmp_path)
    assert fetched.returncode == 0, fetched.stderr
    assert (out / "numbers.txt").read_text().split() == ["1", "2"]
    with Client(api.url) as client:
        inputs = {f["name"] for f in client.files(job_id) if f["direction"] == "in"}
    assert inputs == {"data"}


def test_remote_wait_shows_failure_and_exit_code(api: ApiServer, tmp_path: Path) -> None:
    with Client(api.url) as client:
        job = client.submit("demo.fail", max_attempts=1)
    api.run_worker()
    waited = cli(api, "jobs", "wait", job.id, home=tmp_path)
    assert waited.returncode == 1
    assert "always fails" in waited.stderr
    missing = cli(api, "jobs", "show", "nope", home=tmp_path)
    assert missing.returncode == 1
    assert "no job with id" in missing.stderr
    for command in (["kinds", "--json"], ["queues", "--json"], ["workers", "--json"]):
        result = cli(api, *command, home=tmp_path)
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout)


def test_up_serves_runs_and_drains(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "up"
    home.mkdir()
    log = open(home / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "up",
            "--demo",
            "--port",
            str(port),
            "-c",
            "1",
            "--log-level",
            "warning",
        ],
        env=worker_env(home),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=30, interval=0.1)
        with Client(url) as client:
            job = client.submit("demo.sleep", {"seconds": 1})
            wait_for(lambda: client.get(job.id).state is JobState.RUNNING, timeout=30)
            proc.send_signal(signal.SIGINT)  # Ctrl-C: drain
            assert proc.wait(60) == 0
        text = (home / "up.log").read_text()
        assert f"{url}/docs" in text
        assert "conveyor.db" in text
        from conveyor.store import open_store

        store = open_store(f"sqlite:///{home / 'conveyor.db'}")
        try:
            # Drained cleanly: the job finished or was handed back, never left running on a
            # lease. (Whether it finishes within the grace period is the worker's contract.)
            final = store.get(job.id)
            assert final.state in (JobState.SUCCEEDED, JobState.QUEUED), final
            assert final.lease is None
        finally:
            store.close()
    finally:
        stop(proc)


def test_dead_url_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for args in (("jobs", "list"), ("submit", "noop")):
        result = cli(dead, *args, home=tmp_path)
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot reach the conveyor API at {dead}" in lines[0], lines
        assert "conveyor up" in lines[0]


def test_up_restarts_a_killed_webhook_dispatcher(tmp_path: Path) -> None:
    """Killed, the dispatcher under `conveyor up` is reaped, restarted and the log says so
    (it used to stay a zombie while webhooks silently stopped)."""
    from tests.servers.procfs import live_processes, process

    port = free_port()
    home = tmp_path / "up"
    home.mkdir()
    log = open(home / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "up", "--demo", "--port", str(port), "-c", "1",
         "--log-level", "warning"],
        env=worker_env(home), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip

    def dispatcher() -> int | None:
        for found in live_processes():
            if found.ppid == proc.pid and "webhooks run" in found.cmdline():
                return found.pid
        return None

    try:
        first = wait_for(dispatcher, timeout=60, what="the webhook dispatcher")
        os.kill(first, signal.SIGKILL)
        second = wait_for(
            lambda: (pid := dispatcher()) and pid != first and pid, timeout=60,
            what="a restarted dispatcher",
        )  # fmt: skip
        assert process(first) is None, "the killed dispatcher was never reaped"
        text = (home / "up.log").read_text()
        assert f"webhook dispatcher (pid {first}) ended (killed by SIGKILL)" in text, text
        assert f"webhook dispatcher restarted (pid {second})" in text, text
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        wait_for(lambda: process(second) is None, timeout=30, what="the dispatcher to stop")
    finally:
        stop(proc)


def test_up_demo_serves_every_installed_workload(tmp_path: Path) -> None:
    """`make run` (`conveyor up --demo`) serves the built-in workloads, each in its queue: the
    kge kinds in `kge`, render in `render`... (their jobs waited forever in `default`)."""
    import importlib.util

    expected = {"noop": "default", "text.stats": "default"}
    if importlib.util.find_spec("weasyprint"):
        expected["render"] = "render"
    if importlib.util.find_spec("highspy") and importlib.util.find_spec("ortools"):
        expected["allocate"] = "default"
    if importlib.util.find_spec("pykeen"):
        expected["kge.train"] = "kge"
    port = free_port()
    home = tmp_path / "up"
    home.mkdir()
    log = open(home / "up.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "up", "--demo", "--port", str(port), "-c", "1",
         "--log-level", "warning"],
        env=worker_env(home, CONVEYOR_IMPORTS=""), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def workers() -> list[dict[str, object]]:
            try:
                return list(httpx.get(f"{url}/v1/workers", timeout=5).json())
            except (httpx.TransportError, ValueError):
                return []

        worker = wait_for(lambda: workers(), timeout=180, interval=0.5, what="the worker")[0]
        kinds = {k["name"]: k["queue"] for k in httpx.get(f"{url}/v1/kinds", timeout=5).json()}
        for kind, queue in expected.items():
            assert kinds.get(kind) == queue, (kind, kinds)
            assert kind in worker["kinds"] and queue in worker["queues"], (kind, worker)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
    finally:
        stop(proc)
