"""deploy/healthcheck.py, the image's HEALTHCHECK, against a real API and a real worker."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from conveyor.api.app import create_app
from conveyor.models import JobState, NewJob
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import wait_for
from tests.servers.http import free_port, serve_in_thread

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "healthcheck.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("conveyor_healthcheck", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


healthcheck = load()


def test_option_parsing() -> None:
    args = ["api", "--host", "0.0.0.0", "--port=9000"]
    assert healthcheck.option(args, "--port", "8000") == "9000"
    assert healthcheck.option(["api", "--port", "81"], "--port", "8000") == "81"
    assert healthcheck.option(["api"], "--port", "8000") == "8000"


def test_api_role_probes_healthz(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, store="memory://")
    with serve_in_thread(create_app(settings)) as url:
        port = url.rsplit(":", 1)[1]
        assert healthcheck.check_http(["api", "--port", port]) is None
    problem = healthcheck.check_http(["api", "--port", str(free_port())])
    assert problem is not None and "/healthz" in problem


@pytest.fixture
def worker_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name in list(os.environ):
        if name.startswith("CONVEYOR_"):
            monkeypatch.delenv(name)
    env = {
        "CONVEYOR_HOME": str(tmp_path),
        "CONVEYOR_IMPORTS": "conveyor.kinds.demo",
        "CONVEYOR_HEARTBEAT_S": "0.5",
        "CONVEYOR_LEASE_S": "3",
        "CONVEYOR_HEALTH_STALE_S": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # The check runs `conveyor`: the one of this virtualenv.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return env


def test_worker_role_follows_the_supervisors_heartbeats(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'conveyor.db'}")
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    from conveyor.kinds.registry import import_kinds

    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    job = service.submit_many([NewJob(kind="demo.sleep", input={"seconds": 60})])[0]
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "conveyor"), "worker", "--concurrency", "1"],
        env=os.environ.copy(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: service.get(job.id).state is JobState.RUNNING,
            interval=0.1,
            what="the job to run",
        )
        # Healthy while it works, even past CONVEYOR_HEALTH_STALE_S: its record or its
        # lease renewals say it is alive.
        time.sleep(1.5)  # past the 1 s staleness limit, on purpose
        assert healthcheck.check_worker(worker.pid) is None
        # A wedged supervisor (stopped, so no heartbeat and no renewal) turns unhealthy once
        # its lease runs out.
        os.kill(worker.pid, signal.SIGSTOP)
        problem = wait_for(
            lambda: healthcheck.check_worker(worker.pid), interval=0.1, what="the check to fail"
        )
        assert "no live lease" in problem
        assert "no heartbeat" in healthcheck.check_worker(worker.pid + 100_000)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        store.close()
