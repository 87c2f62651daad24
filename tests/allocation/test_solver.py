"""The allocate kind's solvers against brute force, scipy's assignment solver and the checker."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest
from scipy.optimize import linear_sum_assignment

from conveyor.kinds.allocate import checker, exact, local_search
from conveyor.kinds.allocate.generate import instance
from conveyor.kinds.allocate.models import AllocateInput
from conveyor.kinds.allocate.problem import (
    AllocationInputError,
    InfeasibleError,
    Instance,
    build,
)

SOLVERS = ["highs", "cpsat"]


def named(inst: Instance, assignment: list[int]) -> dict[str, str | None]:
    return {
        inst.students[s]: (inst.projects[p] if p >= 0 else None) for s, p in enumerate(assignment)
    }


def solve(inp: AllocateInput, solver: str = "highs", limit: float = 60) -> tuple[Any, Any]:
    inst = build(inp)
    solution = exact.solve(inst, solver, limit)
    report = checker.evaluate(inp, named(inst, solution.assignment))
    return solution, report


def small_instance(rng: random.Random) -> dict[str, Any]:
    students, projects = rng.randint(3, 5), rng.randint(3, 5)
    supervisors = rng.randint(1, 3)
    staff = {f"p{j}": f"k{rng.randrange(supervisors)}" for j in range(projects)}
    pref = {}
    for i in range(students):
        picked = rng.sample(sorted(staff), rng.randint(1, projects))
        pref[f"s{i}"] = [[p, rank] for rank, p in enumerate(picked, start=1)]
    config: dict[str, Any] = {
        "defaultLoad": rng.randint(1, 3),
        "maxRank": rng.randint(2, 5),
        "costUnalloc": rng.choice([-1, 4, 100]),
        "weightVarLoad": rng.choice([0, 0.5, 5.0]),
        "weightUnfair": rng.choice([0, 0.1, 1.0]),
        "projectCapacity": {p: rng.randint(1, 2) for p in staff if rng.random() < 0.5},
    }
    if rng.random() < 0.4:
        config["disallowedMatching"] = {"s0": pref["s0"][0][0]}
    if rng.random() < 0.3:
        config["forcedMatching"] = {"s1": rng.choice(sorted(staff))}
    if rng.random() < 0.3:
        s = f"s{students - 1}"
        config["preferredStudent"] = {s: pref[s][-1][0]}
    staff_pref = None
    if rng.random() < 0.4:
        staff_pref = {"p0": [[f"s{i}", i + 1] for i in range(students) if rng.random() < 0.5]}
    return {"pref": pref, "staff": staff, "staffPref": staff_pref, "config": config}


def brute_force(inp: AllocateInput) -> float | None:
    """The best objective over every allocation the checker accepts (None: infeasible)."""
    options: list[str | None] = [None, *sorted(inp.staff)]
    students = sorted(inp.pref)
    best = None
    for combo in itertools.product(options, repeat=len(students)):
        report = checker.evaluate(inp, dict(zip(students, combo, strict=True)))
        if not report.violations and (best is None or report.objective < best):
            best = report.objective
    return best


@pytest.mark.parametrize("seed", range(40))
def test_small_instances_match_brute_force(seed: int) -> None:
    inp = AllocateInput.model_validate(small_instance(random.Random(seed)))
    best = brute_force(inp)
    try:
        inst = build(inp)
    except InfeasibleError:
        assert best is None, "build() called a feasible instance infeasible"
        return
    assert best is not None, "brute force found no feasible allocation but build() did"
    for solver in SOLVERS:
        solution = exact.solve(inst, solver, 30)
        report = checker.evaluate(inp, named(inst, solution.assignment))
        assert report.violations == []
        assert solution.status == "optimal"
        assert report.objective == pytest.approx(best, abs=1e-6), solver
        assert solution.objective == pytest.approx(report.objective, abs=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_unit_capacity_equals_linear_sum_assignment(seed: int) -> None:
    rng = random.Random(100 + seed)
    n, m = rng.randint(5, 40), rng.randint(5, 40)
    staff = {f"p{j}": f"k{j}" for j in range(m)}
    pref = {
        f"s{i}": [[p, r] for r, p in enumerate(rng.sample(sorted(staff), min(m, 6)), 1)]
        for i in range(n)
    }
    unalloc = rng.choice([7, 50])
    config = {"weightUnfair": 0, "weightVarLoad": 0, "weightStaff": 0, "maxRank": 6,
              "defaultLoad": n, "costUnalloc": unalloc}  # fmt: skip
    inp = AllocateInput.model_validate({"pref": pref, "staff": staff, "config": config})
    # Assignment matrix: students x (projects + one "unallocated" column per student).
    big = 10**9
    matrix = [[big] * (m + n) for _ in range(n)]
    for i in range(n):
        for p, r in pref[f"s{i}"]:
            matrix[i][int(p[1:])] = r
        matrix[i][m + i] = unalloc
    rows, cols = linear_sum_assignment(matrix)
    expected = sum(matrix[r][c] for r, c in zip(rows, cols, strict=True))
    for solver in SOLVERS:
        solution, report = solve(inp, solver)
        assert solution.status == "optimal"
        assert report.violations == []
        assert report.objective == pytest.approx(expected, abs=1e-6)


def test_300_students_proven_optimal_and_every_constraint_holds() -> None:
    inp = AllocateInput.model_validate(instance(300, 120, 40, seed=7))
    inp.config.forcedMatching = {"s0": "p5", "s1": "p6"}
    inp.config.disallowedMatching = {"s2": [p for p, _ in inp.pref["s2"][:3]]}
    inp.config.preferredStudent = {"s3": inp.pref["s3"][0][0]}
    inp.config.specialLoading = {"k0": 2, "k1": 0}
    solution, report = solve(inp, "highs", 120)
    assert solution.status == "optimal"
    assert solution.gap is not None and solution.gap <= 1e-6
    assert report.violations == []
    assert report.objective == pytest.approx(solution.objective, rel=1e-9, abs=1e-6)
    assert report.loads["k0"].load <= 2 and report.loads["k1"].load == 0
    assert sum(report.histogram.values()) == 300


GENERATED = [(60, 25, 8, seed, {}) for seed in range(5)] + [
    (300, 120, 40, 7, {"steepest": True}),
    (300, 120, 40, 8, {"weightVarLoad": 5.0, "steepest": True}),
]


def test_exact_never_worse_than_local_search() -> None:
    """Report the margin per instance (shown with -s); the exact objective must be <=."""
    margins = []
    for students, projects, supervisors, seed, extra in GENERATED:
        data = instance(students, projects, supervisors, seed=seed, numRuns=2, **extra)
        inp = AllocateInput.model_validate(data)
        inst = build(inp)
        optimum = exact.solve(inst, "highs", 60)
        heuristic = local_search.search(inst, inp.config, 60)
        heur_report = checker.evaluate(inp, named(inst, heuristic.assignment))
        assert heur_report.violations == []
        assert heur_report.objective == pytest.approx(heuristic.objective, abs=1e-6)
        assert optimum.status == "optimal"
        assert optimum.objective <= heuristic.objective + 1e-6
        margins.append((heuristic.objective - optimum.objective) / optimum.objective)
    print("local search above optimum:", ", ".join(f"{m:.2%}" for m in margins))


def test_infeasible_forcing_names_the_conflict() -> None:
    data = {
        "pref": {"a": [["p1", 1]], "b": [["p2", 1]], "c": [["p3", 1]]},
        "staff": {"p1": "smith", "p2": "smith", "p3": "jones"},
        "config": {"defaultLoad": 3, "specialLoading": {"smith": 1},
                   "forcedMatching": {"a": "p1", "b": "p2"}},
    }  # fmt: skip
    with pytest.raises(InfeasibleError) as info:
        build(AllocateInput.model_validate(data))
    text = str(info.value)
    assert "'smith'" in text and "specialLoading['smith']=1" in text
    assert "a, b" in text


def test_unknown_names_are_input_errors() -> None:
    data = {"pref": {"a": [["p1", 1]]}, "staff": {"p1": "k"},
            "config": {"forcedMatching": {"zed": "p1"}}}  # fmt: skip
    with pytest.raises(AllocationInputError, match="'zed'"):
        build(AllocateInput.model_validate(data))


@pytest.mark.parametrize(("solver", "limit"), [("highs", 0.02), ("cpsat", 0.5)])
def test_time_limit_returns_best_found_not_proven(solver: str, limit: float) -> None:
    inp = AllocateInput.model_validate(instance(1000, 400, 130, seed=3))
    inst = build(inp)
    solution = exact.solve(inst, solver, limit)
    assert solution.status == "time_limit"
    report = checker.evaluate(inp, named(inst, solution.assignment))
    assert report.violations == []
    assert report.objective == pytest.approx(solution.objective, rel=1e-6)
    assert solution.gap is None or solution.gap > 0


def test_observer_sees_progress_and_can_cancel() -> None:
    inst = build(AllocateInput.model_validate(instance(300, 120, 40, seed=5)))
    seen: list[exact.Snapshot] = []
    solution = exact.solve(inst, "highs", 60, lambda snap: seen.append(snap) is not None)
    assert seen and seen[-1].objective is not None
    assert seen[-1].objective >= solution.objective - 1e-6
    with pytest.raises(exact.SolveCancelled):
        exact.solve(inst, "cpsat", 60, lambda snap: True)
