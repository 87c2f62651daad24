"""Fixtures for the fault scenarios: one shared store (a file or a private server) per test."""

from __future__ import annotations

from collections.abc import Iterator
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
