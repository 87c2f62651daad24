"""Figures from the fault scenarios as rows in `bench/results/reliability.json`.

The file is shared with the security scenarios (`security_results.py`): a JSON array of rows
keyed by `(scenario, store)`; a rerun replaces its row, so the file holds the latest figures
of real runs. The same lock file keeps concurrent test processes from losing each other's rows.
`bench/reliability_table.py` renders the rows into `docs/reliability.md`.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"


def read_rows(path: Path = RESULTS) -> list[dict[str, Any]]:
    """All rows (the file may be missing, empty, a JSON array or JSON lines)."""
    if not path.exists() or not path.read_text().strip():
        return []
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(data) if isinstance(data, list) else [data]


def record_fault_run(
    scenario: str,
    store: str,
    *,
    jobs: int,
    faults: str,
    lost: int,
    duplicate_completions: int,
    duplicate_executions: int,
    inflight_bound: int,
    max_recovery_s: float | None = None,
    recovery_bound_s: float | None = None,
    notes: str = "",
) -> None:
    """Write (or replace) the row of one fault scenario on one store."""
    row: dict[str, Any] = {
        "scenario": scenario,
        "store": store,
        "kind": "fault",
        "jobs": jobs,
        "faults": faults,
        "lost": lost,
        "duplicate_completions": duplicate_completions,
        "duplicate_executions": duplicate_executions,
        "inflight_bound": inflight_bound,
        "max_recovery_s": None if max_recovery_s is None else round(max_recovery_s, 2),
        "recovery_bound_s": recovery_bound_s,
        "tier": os.environ.get("CHAOS_TIER", "pr"),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "notes": notes,
    }
    write_row(row)


def write_row(row: dict[str, Any]) -> None:
    """Add a row, replacing the one with the same (scenario, store), under a file lock."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    key = (row.get("scenario"), row.get("store"))
    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [r for r in read_rows() if (r.get("scenario"), r.get("store")) != key]
        rows.append(row)
        rows.sort(key=lambda r: (str(r.get("scenario")), str(r.get("store"))))
        tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        os.replace(tmp, RESULTS)
