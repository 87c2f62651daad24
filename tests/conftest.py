"""Shared fixtures: one `store` fixture parametrized over every backend (see backends.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from conveyor.clock import FakeClock
from conveyor.store import Store
from tests.backends import BACKENDS, Backend

pytest_plugins = ["tests.servers.redis", "tests.servers.postgres"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=[pytest.param(b, id=b.name, marks=b.marks) for b in BACKENDS])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    backend: Backend = request.param
    with backend.prepare(request, tmp_path) as ready:
        yield ready


@pytest.fixture
def store(backend: Backend, clock: FakeClock) -> Iterator[Store]:
    opened = backend.open(clock)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private CONVEYOR_HOME for CLI and worker tests."""
    path = tmp_path / "home"
    monkeypatch.setenv("CONVEYOR_HOME", str(path))
    for name in list(os.environ):
        if name.startswith("CONVEYOR_") and name != "CONVEYOR_HOME":
            monkeypatch.delenv(name)
    return path
