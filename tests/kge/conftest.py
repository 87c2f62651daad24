"""The kge tests need the `kge` extra (torch + PyKEEN + hnswlib + rdflib), which is not part of
`.[dev]` (see docs/workloads/kge.md): without it they are reported as SKIPPED with this reason
in pytest's summary; `make test-kge` installs the extra and runs them."""

from __future__ import annotations

import importlib.util

import pytest

MISSING = [
    name
    for name in ("torch", "pykeen", "hnswlib", "rdflib")
    if importlib.util.find_spec(name) is None
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/kge/" in str(item.fspath):
            item.add_marker(pytest.mark.kge)
            if MISSING:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"KGE TESTS NOT RUN: the kge extra is not installed (missing"
                        f" {', '.join(MISSING)}); run `make test-kge`"
                    )
                )
