"""`conveyor up --demo` serves what the dashboard's demo pages submit."""

from __future__ import annotations

import importlib.util

from conveyor.cli.serve import cli_settings


def test_demo_serves_the_allocation_solver_when_installed() -> None:
    imports = cli_settings(None, None, demo=True).import_list
    assert "conveyor.kinds.demo" in imports
    installed = all(importlib.util.find_spec(n) for n in ("highspy", "ortools"))
    assert ("conveyor.kinds.allocate" in imports) is installed
    assert "conveyor.kinds.allocate" not in cli_settings(None, None, demo=False).import_list
