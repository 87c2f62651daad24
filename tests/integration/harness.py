"""Run real `conveyor worker` processes against a store and wait on job states."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from conveyor.models import Job, JobState
from conveyor.store import Store
from tests.servers.procfs import live_processes

ROOT = Path(__file__).resolve().parents[2]
#: For child processes: this checkout's code (src/, before an editable install elsewhere) and
#: its tests package.
PYTHONPATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T], timeout: float = 60.0, interval: float = 0.02, what: str = ""
) -> T:
    """Poll until `predicate()` is truthy and return its value; fail after `timeout` seconds,
    saying `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or predicate}")
        time.sleep(interval)


def wait_state(store: Store, job_id: str, states: Iterable[JobState], timeout: float = 60) -> Job:
    wanted = set(states)
    return wait_for(lambda: (j := store.get(job_id)).state in wanted and j, timeout)


def worker_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(
        CONVEYOR_HOME=str(home),
        CONVEYOR_IMPORTS="conveyor.kinds.demo,tests.testkinds",
        PYTHONPATH=PYTHONPATH,
    )
    env.update(extra)
    return env


def start_worker(
    store_url: str,
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `conveyor worker`; `prefix` wraps the command (e.g. `ip netns exec <ns>`, which
    execs, so the returned process is still the supervisor itself)."""
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / f"worker-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        [*prefix, sys.executable, "-m", "conveyor", "worker", "--store", store_url, "--log-level",
         "warning", *args],
        env=env or worker_env(home),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )  # fmt: skip


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(5)


def children(pid: int) -> list[int]:
    """PIDs whose parent is `pid` (the supervisor's worker children)."""
    return [
        child.pid for child in live_processes()
        if child.ppid == pid and "resource_tracker" not in child.cmdline()
    ]  # fmt: skip


def start_server(
    command: str,
    store_url: str,
    home: Path,
    *args: str,
    env: dict[str, str] | None = None,
    log_name: str = "api.log",
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start `conveyor api|up` on a free loopback port; return its URL once /healthz answers."""
    import httpx

    from tests.servers.http import free_port

    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = open(home / log_name, "wb")  # noqa: SIM115 - the child writes to it
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", command, "--port", str(port), "--store", store_url,
         "--log-level", "warning", *args],
        env=env or worker_env(home), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
    )  # fmt: skip
    log.close()
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            if process.poll() is not None:
                raise RuntimeError((home / log_name).read_text()) from None
            return False

    try:
        wait_for(healthy, timeout=30, interval=0.05)
    except BaseException:
        stop(process)
        raise
    return url, process
