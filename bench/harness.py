"""What the benchmarks share: real `conveyor` processes (API, worker) on free loopback ports.

    api, url = start_api(store_url, home, env=conveyor_env(home, imports="conveyor.kinds.demo"))
    try: ...
    finally: stop(api)

Each process writes its output to `<home>/<command>.log`; an API that does not come up is
stopped and its log raised.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def conveyor_env(home: Path, **settings: str) -> dict[str, str]:
    """This environment without its CONVEYOR_* settings, plus CONVEYOR_HOME=`home` and
    `settings` (`imports="a,b"` sets CONVEYOR_IMPORTS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["CONVEYOR_HOME"] = str(home)
    env.update({f"CONVEYOR_{name.upper()}": value for name, value in settings.items()})
    return env


def start(
    command: str, store_url: str, home: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m conveyor <command> --store <store_url> <args>`, logging to home/<command>.log."""
    with open(home / f"{command}.log", "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", command, "--store", store_url,
             "--log-level", "warning", *args],
            env=env or conveyor_env(home), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM (a graceful drain), then SIGKILL after `timeout` seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def start_api(
    store_url: str, home: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> tuple[subprocess.Popen[bytes], str]:
    """`conveyor api` on a free loopback port; returns once /readyz answers 200."""
    port = free_port()
    process = start("api", store_url, home, "--port", str(port), *args, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    stop(process)
    raise SystemExit(f"the API did not start:\n{(home / 'api.log').read_text()}")


@contextlib.contextmanager
def postgres_database(dsn: str | None) -> Iterator[str]:
    """`dsn` itself, or (None) a fresh schema on a private throwaway PostgreSQL started in a
    temp dir (the test fixture's server) and removed afterwards."""
    if dsn:
        yield dsn
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # the tests package
    from tests.servers.postgres import running_server

    with running_server() as server:
        yield server.create_schema()
