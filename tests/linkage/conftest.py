"""Fixtures for the linkage tests: a real server, real workers, the real anonlink-client.

anonlink-client 0.1.5 pins pydantic<2, numpy<2 and cryptography<41 through blocklib and
clkhash, which clash with conveyor's own dependencies, so it lives in a venv of its own
(`.venv/linkage-client`, made by `make install`); the tests run its `anonlink` CLI and its
`RestClient` there as subprocesses, exactly as a data holder would on their own machine.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.harness import ROOT, start_worker, stop, worker_env
from tests.servers.conveyor_api import ServedApi, sqlite_api_in_thread

HERE = Path(__file__).resolve().parent
SCHEMA = HERE / "febrl-schema.json"
CLIENT_VENV = Path(
    os.environ.get("CONVEYOR_LINKAGE_CLIENT_VENV", ROOT / ".venv" / "linkage-client")
)
#: Entities per party taken from FEBRL 4 (5,000 in all); enough to be real, quick to hash.
FEBRL_ENTITIES = 1500


def client_bin(name: str) -> Path:
    path = CLIENT_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install` (it makes the anonlink-client venv)")
    return path


def client_run(*args: str | Path, timeout: float = 120) -> str:
    """Run the client venv's `anonlink` CLI; return its stdout (fail with its output)."""
    done = subprocess.run(
        [str(client_bin("anonlink")), *map(str, args)],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"anonlink {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def client_python(code: str, *args: str, timeout: float = 120) -> Any:
    """Run Python in the client venv; it prints one JSON value, returned here."""
    done = subprocess.run(
        [str(client_bin("python")), "-c", code, *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, f"client python failed:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@dataclass
class Febrl:
    """FEBRL 4 subset, hashed with the real `anonlink hash`: a.json / b.json, truth pairs."""

    folder: Path
    truth: set[tuple[int, int]]

    def clks(self, party: str) -> Path:
        return self.folder / f"{party}.json"


@pytest.fixture(scope="session")
def febrl(tmp_path_factory: pytest.TempPathFactory) -> Febrl:
    folder = tmp_path_factory.mktemp("febrl")
    subprocess.run(
        [str(client_bin("python")), str(HERE / "febrl.py"), str(folder), str(FEBRL_ENTITIES)],
        check=True, timeout=120,
    )  # fmt: skip
    for party in ("a", "b"):
        client_run("hash", folder / f"{party}.csv", "secret", SCHEMA, folder / f"{party}.json")
    truth = {(a, b) for a, b in json.loads((folder / "truth.json").read_text())}
    return Febrl(folder, truth)


class Env:
    """One API server on a SQLite store, and workers on demand."""

    def __init__(self, api: ServedApi) -> None:
        self.home, self.store_url, self.url, self.store = (
            api.home,
            api.store_url,
            api.url,
            api.store,
        )
        self.http = httpx.Client(base_url=api.url, timeout=30)
        self.workers: list[subprocess.Popen[bytes]] = []

    def worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        environ = worker_env(self.home, CONVEYOR_IMPORTS="conveyor.kinds.linkage", **env)
        process = start_worker(self.store_url, self.home, *args, env=environ)
        self.workers.append(process)
        return process

    def close(self) -> None:
        for process in self.workers:
            stop(process)
        self.http.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    # Small chunks, so that even a small run is split into several sub-jobs.
    monkeypatch.setenv("CONVEYOR_LINKAGE_CHUNK_COMPARISONS", "300000")
    with sqlite_api_in_thread(tmp_path) as api:
        env = Env(api)
        try:
            yield env
        finally:
            env.close()
