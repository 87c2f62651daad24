"""A real `conveyor api` process on a free loopback port, over a fresh SQLite store."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from conveyor.store import Store, open_store
from tests.integration.harness import start_server, start_worker, stop, worker_env


@dataclass
class ApiServer:
    url: str
    home: Path
    store_url: str
    process: subprocess.Popen[bytes]

    def open_store(self) -> Store:
        return open_store(self.store_url)

    def run_worker(self, *args: str, timeout: float = 60) -> None:
        """Run a burst worker until no job is waiting."""
        worker = start_worker(self.store_url, self.home, "--burst", "-c", "1", *args)
        try:
            worker.wait(timeout)
        finally:
            stop(worker)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def start_api(
    home: Path, *extra: str, env_extra: dict[str, str] | None = None, store_url: str | None = None
) -> ApiServer:
    """`conveyor api` on `store_url` (default: a new SQLite file in `home`)."""
    store_url = store_url or f"sqlite:///{home / 'conveyor.db'}"
    env = worker_env(home, **(env_extra or {}))
    url, process = start_server("api", store_url, home, *extra, env=env)
    return ApiServer(url, home, store_url, process)


@contextlib.contextmanager
def running_api(
    home: Path, *extra: str, env_extra: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    """`start_api`, stopped when the block ends."""
    server = start_api(home, *extra, env_extra=env_extra)
    try:
        yield server
    finally:
        stop(server.process)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One API server per test module (tests use their own jobs, not a clean store)."""
    with running_api(tmp_path_factory.mktemp("api")) as server:
        yield server


@pytest.fixture
def http(api: ApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def scoped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, httpx.Client]]:
    """Clients of one API server (per test module), each with a key of one scope: `admin`,
    `read`, `submit`, `work`."""
    from conveyor.api import auth

    with running_api(tmp_path_factory.mktemp("scoped")) as server:
        store = server.open_store()
        scopes = ("admin", "read", "submit", "work")
        keys = {name: auth.create_key(store, name, [name])[1] for name in scopes}
        store.close()
        made = {
            name: httpx.Client(
                base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {key}"}
            )
            for name, key in keys.items()
        }
        yield made
        for client in made.values():
            client.close()
