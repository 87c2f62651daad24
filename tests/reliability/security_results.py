"""Figures from the security scenarios (S11, S16-S19) as rows in `bench/results/reliability.json`.

The file is shared with the fault-injection scenarios: a JSON array of rows
`{scenario, store, kind, cases, failures, tier, at, notes}`. A rerun replaces the row with the same
`(scenario, store)`, so the file always holds the latest figures. A lock file keeps two test
processes from overwriting each other's rows.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "reliability.json"
LOCK = Path(tempfile.gettempdir()) / "conveyor-reliability-json.lock"


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists() or not path.read_text().strip():
        return []
    text = path.read_text()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # JSON lines, if a writer chose that
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return list(data) if isinstance(data, list) else [data]


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
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = [
            r for r in _read(RESULTS)
            if (r.get("scenario"), r.get("store")) != (scenario, store)
        ]  # fmt: skip
        rows.append(row)
        rows.sort(key=lambda r: (str(r.get("scenario")), str(r.get("store"))))
        tmp = RESULTS.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rows, indent=1) + "\n")
        os.replace(tmp, RESULTS)
