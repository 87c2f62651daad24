"""Figures from the security scenarios (S11, S16-S19) as rows in `bench/results/reliability.json`.

The file is shared with the fault-injection scenarios: a JSON array of rows
`{scenario, store, kind, cases, failures, tier, at, notes}`. A rerun replaces the row with the same
`(scenario, store)`, so the file always holds the latest figures. A lock file keeps two test
processes from overwriting each other's rows.
"""

from __future__ import annotations

from datetime import UTC, datetime

from tests.reliability.fault_results import write_row


def record(
    scenario: str,
    cases: int,
    failures: int,
    notes: str,
    *,
    store: str = "sqlite",
    tier: str = "pr",
) -> None:
    """Write (or replace) this scenario's row."""
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    row = {
        "scenario": scenario,
        "store": store,
        "kind": "security",
        "cases": cases,
        "failures": failures,
        "tier": tier,
        "at": at,
        "notes": notes,
    }
    write_row(row)
