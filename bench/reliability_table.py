"""Render `bench/results/reliability.json` into the figures tables of `docs/reliability.md`.

The reliability tests (`tests/reliability/`) each write or replace one row per
(scenario, store) when they run; `make chaos` runs them all and then this script. The tables
go between the `<!-- reliability-figures:start -->` and `<!-- reliability-figures:end -->`
markers, so the rest of the page is prose kept by hand. Run: `python bench/reliability_table.py`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "reliability.json"
PAGE = ROOT / "docs" / "reliability.md"
DASH = "\N{EN DASH}"
START, END = "<!-- reliability-figures:start -->", "<!-- reliability-figures:end -->"


def _cell(value: Any) -> str:
    return DASH if value is None or value == "" else str(value).replace("|", "\\|")


def fault_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| Scenario | Store | Jobs | Faults injected | Lost | Duplicate completions "
        "| Duplicate executions (≤ in-flight bound) | Max recovery (bound) | Tier, run at "
        "| Notes |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        recovery = DASH if r.get("max_recovery_s") is None else (
            f"{r['max_recovery_s']:.2f} s (≤ {r['recovery_bound_s']:g} s)"
            if r.get("recovery_bound_s") is not None else f"{r['max_recovery_s']:.2f} s"
        )  # fmt: skip
        lines.append(
            f"| {_cell(r['scenario'])} | {r['store']} | {r['jobs']:,} | {_cell(r['faults'])} "
            f"| {r['lost']} | {r['duplicate_completions']} "
            f"| {r['duplicate_executions']} (≤ {r['inflight_bound']}) | {recovery} "
            f"| {r.get('tier', '')}, {r.get('at', '')} | {_cell(r.get('notes'))} |"
        )
    return lines


def case_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| Scenario | Store | Cases | Failures | Notes |", "|---|---|---:|---:|---|"]
    lines += [
        f"| {_cell(r['scenario'])} | {r.get('store', '')} | {r.get('cases', '')} "
        f"| {r.get('failures', '')} | {_cell(r.get('notes'))} |"
        for r in rows
    ]
    return lines


def render(rows: list[dict[str, Any]]) -> str:
    faults = [r for r in rows if r.get("kind") == "fault"]
    cases = [r for r in rows if r.get("kind") != "fault"]
    out = [START, "", "**Fault scenarios** (ledger checker, §2.3 of the plan):", ""]
    out += fault_table(faults)
    if cases:
        out += ["", "**Security and protocol scenarios**:", "", *case_table(cases)]
    return "\n".join([*out, "", END])


def main() -> int:
    rows = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    page = PAGE.read_text()
    if START not in page or END not in page:
        print(f"{PAGE} has no figure markers", file=sys.stderr)
        return 1
    head, rest = page.split(START, 1)
    tail = rest.split(END, 1)[1]
    PAGE.write_text(head + render(rows) + tail)
    print(f"{len(rows)} rows -> {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
