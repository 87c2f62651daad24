"""Fixtures for the fault scenarios: one shared store (a file or a private server) per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.backends import BACKENDS, Backend

#: The stores other processes can open (workers are real processes).
STORES = [pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS if b.shared]
#: Only the stores behind a TCP server (what a proxy or a network fault can come between).
SERVER_STORES = [p for p in STORES if p.id != "sqlite"]
#: `STORES` with the server stores moved to the nightly tier (`soak`) to keep `make test` short.
SQLITE_IN_PR = [
    pytest.param(
        b, id=b.name, marks=(*b.marks, *(() if b.name == "sqlite" else (pytest.mark.soak,)))
    )
    for b in BACKENDS
    if b.shared
]


@pytest.fixture
def shared_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Parametrize indirectly with `STORES` or `SQLITE_IN_PR`."""
    backend: Backend = request.param
    with backend.prepare(request, tmp_path) as ready:
        yield ready


@dataclass(frozen=True)
class ModuleStore:
    """A store shared by the tests of one module (e.g. behind one API server), and the
    directory its data rests in on disk (database files and WAL, or the append-only file)."""

    name: str
    url: str
    data_dir: Path


@pytest.fixture(scope="module")
def module_store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> ModuleStore:
    """Parametrize indirectly, with `scope="module"`, by `STORES` or `SQLITE_IN_PR`."""
    backend: Backend = request.param
    if backend.name == "postgres":
        pg = request.getfixturevalue("postgres_server")
        return ModuleStore(backend.name, pg.create_schema(), pg.data)
    if backend.name == "redis":
        server = request.getfixturevalue("redis_server")
        client = server.client()
        try:
            client.flushall()
        finally:
            client.close()
        return ModuleStore(backend.name, server.url, server.root)
    data = tmp_path_factory.mktemp("db")
    return ModuleStore(backend.name, f"sqlite:///{data / 'conveyor.db'}", data)
