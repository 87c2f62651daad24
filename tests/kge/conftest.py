"""Tests marked `kge` need the `kge` extra (torch + PyKEEN + hnswlib + rdflib), which is not
part of `.[dev]` (see docs/workloads/kge.md): without it they are reported as SKIPPED with this
reason in pytest's summary; `make test-kge` installs the extra and runs them. The API fuzz test
needs only numpy and always runs."""

from __future__ import annotations

import importlib.util

import pytest

MISSING = [
    name
    for name in ("torch", "pykeen", "hnswlib", "rdflib")
    if importlib.util.find_spec(name) is None
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not MISSING:
        return
    skip = pytest.mark.skip(
        reason=f"KGE TESTS NOT RUN: the kge extra is not installed (missing {', '.join(MISSING)});"
        " run `make test-kge`"
    )
    for item in items:
        if item.get_closest_marker("kge") is not None:
            item.add_marker(skip)
