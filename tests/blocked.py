"""Tests that need a store with blocked jobs (store protocol v2, section 1) are strict xfails on
the backends that do not have them yet (the list the store conformance tests keep), so they
turn on by themselves, and must pass, as each store gets them."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.test_store_dependencies import NOT_YET


def needs_blocked(backend: str = "sqlite") -> Any:
    """A mark: strict xfail while `backend`'s store has no blocked jobs."""
    return pytest.mark.xfail(
        backend in NOT_YET, strict=True, reason=f"{backend}: blocked jobs not built yet"
    )


def require_blocked(request: pytest.FixtureRequest, backend: str) -> None:
    """The same, applied from inside a test parametrized over backends."""
    if backend in NOT_YET:
        request.node.add_marker(needs_blocked(backend))
