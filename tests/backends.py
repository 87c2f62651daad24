"""The store backends every conformance test runs against.

Each backend knows how to get a fresh, empty store (a temp file, or a private throwaway server
started by a fixture) and the URL other processes can open it by.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from conveyor.clock import Clock
from conveyor.store import Store, open_store


@dataclass(frozen=True)
class Backend:
    name: str
    url: str = ""
    shared: bool = True  # other processes can open `url`
    marks: tuple[Any, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @contextlib.contextmanager
    def prepare(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
        if self.name == "sqlite":
            yield replace(self, url=f"sqlite:///{tmp_path / 'conveyor.db'}")
        elif self.name == "memory":
            yield replace(self, url="memory://")
        else:
            # Server backends provide a fixture named "<name>_url" that yields a fresh URL.
            yield replace(self, url=request.getfixturevalue(f"{self.name}_url"))

    def open(self, clock: Clock | None = None) -> Store:
        return open_store(self.url, clock=clock)


BACKENDS = [
    Backend("sqlite"),
    Backend("memory", shared=False),
    Backend("redis", marks=(pytest.mark.redis,)),
    Backend("postgres", marks=(pytest.mark.postgres,)),
]
