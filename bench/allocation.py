"""Allocation solvers: time to proven optimum and gap at 1, 10, 60 s, exact vs local search.

For 300 / 1,000 / 3,000 students (projects = 0.4 x students, supervisors = students / 7.5,
generated with `conveyor.kinds.allocate.generate`), runs:

- HiGHS (the default exact solver) and OR-Tools CP-SAT, each once with a 60 s limit, recording
  every (objective, bound) the solver reports; the gap at t is read off that trace;
- the original's local search with time limits of 1, 10 and 60 s (its gap is measured against
  the proven optimum, or against the best bound when nothing was proven).

Prints a table and writes bench/results/allocation.json. About 8 minutes with the defaults;
`--sizes 300 --limit 10` for a quick look.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

from conveyor.kinds.allocate import exact, local_search
from conveyor.kinds.allocate.generate import instance
from conveyor.kinds.allocate.models import AllocateInput
from conveyor.kinds.allocate.problem import build

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTS = (1.0, 10.0, 60.0)


def run_exact(inst: Any, solver: str, limit: float) -> dict[str, Any]:
    trace: list[tuple[float, float | None, float | None]] = []

    def observe(snap: exact.Snapshot) -> bool:
        trace.append((snap.elapsed, snap.objective, snap.bound))
        return False

    started = time.monotonic()
    solution = exact.solve(inst, solver, limit, observe, seed=1)
    wall = time.monotonic() - started
    trace.append((wall, solution.objective, solution.bound))
    return {
        "solver": solver,
        "status": solution.status,
        "objective": solution.objective,
        "bound": solution.bound,
        "seconds": round(wall, 3),
        "proven_at_s": round(wall, 3) if solution.status == "optimal" else None,
        "trace": trace,
    }


def gap_at(trace: list[tuple[float, float | None, float | None]], t: float) -> float | None:
    """The relative gap known at time t (best objective and bound reported so far)."""
    best = bound = None
    for at, objective, b in trace:
        if at > t:
            break
        if objective is not None:
            best = objective if best is None else min(best, objective)
        if b is not None:
            bound = b if bound is None else max(bound, b)
    return exact.gap(best, bound)


def run_local(inst: Any, inp: AllocateInput, limit: float) -> dict[str, Any]:
    config = inp.config.model_copy(update={"numRuns": 10_000, "seed": 1})
    found = local_search.search(inst, config, limit)
    return {"limit_s": limit, "objective": found.objective, "runs": found.runs,
            "seconds": round(found.elapsed, 3)}  # fmt: skip


def fmt_gap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300, 1000, 3000])
    parser.add_argument("--limit", type=float, default=60.0, help="Longest run, seconds.")
    parser.add_argument("--solvers", nargs="+", default=["highs", "cpsat"])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "allocation.json"))
    args = parser.parse_args()
    checkpoints = [t for t in CHECKPOINTS if t <= args.limit] or [args.limit]
    rows: list[dict[str, Any]] = []
    for n in args.sizes:
        data = instance(n, n * 2 // 5, max(2, round(n / 7.5)), seed=42)
        inp = AllocateInput.model_validate(data)
        inst = build(inp)
        size = {"students": n, "projects": len(inst.projects),
                "supervisors": len(inst.supervisors), "pairs": len(inst.pairs)}  # fmt: skip
        exact_runs = [run_exact(inst, solver, args.limit) for solver in args.solvers]
        proven = [r["objective"] for r in exact_runs if r["status"] == "optimal"]
        reference = min(proven) if proven else max(r["bound"] or 0.0 for r in exact_runs)
        for r in exact_runs:
            r["gap_at"] = {str(t): gap_at(r["trace"], t) for t in checkpoints}
            r["trace"] = [[round(a, 3), o, b] for a, o, b in r["trace"]][-200:]
            rows.append({**size, "method": r["solver"], **r})
            print(f"{n:>6} {r['solver']:<12} proven at {r['proven_at_s'] or '-':>7}s  "
                  + "  ".join(f"gap@{t:g}s {fmt_gap(r['gap_at'][str(t)]):>8}" for t in checkpoints),
                  flush=True)  # fmt: skip
        for t in checkpoints:
            r = run_local(inst, inp, t)
            r["gap_vs_optimum"] = exact.gap(r["objective"], reference)
            rows.append({**size, "method": "local_search", **r})
            print(
                f"{n:>6} {'local_search':<12} limit {t:>5g}s  runs {r['runs']:>4}  "
                f"gap {fmt_gap(r['gap_vs_optimum']):>8}",
                flush=True,
            )
    result = {"machine": platform.platform(), "python": platform.python_version(),
              "limit_s": args.limit, "rows": rows}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
