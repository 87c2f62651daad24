"""Solve an `Instance` exactly as a mixed-integer program, with HiGHS or OR-Tools CP-SAT.

Variables: one binary x[s,p] per allowed pair; for the load term, A = students on supervised
projects and one d_k ≥ |K·load_k - A| per supervisor (so |load_k - mean| = d_k / K). Rows:
each student at most one project, project capacities, supervisor load limits. Forced pairs are
fixed to 1. The objective is Σ x·(pair cost - unallocated cost) + Σ unallocated costs
+ load_weight/K · Σ d_k, which equals the checker's objective for every allocation.

Progress: the solvers call back on each improving solution (and HiGHS/CP-SAT periodically);
each call hands a `Snapshot` to the observer, which returns True to stop (cancellation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from conveyor.kinds.allocate.problem import InfeasibleError, Instance, objective, pair_costs

REL_GAP = 1e-9  # "proven optimal" means the solver closed the gap to this
ABS_GAP = 1e-6
INTERRUPT_EVERY_S = 0.2


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of a running solve."""

    objective: float | None
    bound: float | None
    elapsed: float

    def __post_init__(self) -> None:
        # Solvers report "none yet" as +-inf (HiGHS) or huge values; keep None instead.
        for name in ("objective", "bound"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and abs(value) < 1e30):
                object.__setattr__(self, name, None)

    @property
    def gap(self) -> float | None:
        return gap(self.objective, self.bound)


Observer = Callable[[Snapshot], bool]
"""Called with progress; returns True to stop the solve (the job was cancelled)."""


@dataclass(frozen=True, slots=True)
class Solution:
    assignment: list[int]  # per student: project index, or -1 for unallocated
    status: Literal["optimal", "time_limit"]
    objective: float
    bound: float | None
    solver: str
    elapsed: float

    @property
    def gap(self) -> float | None:
        return gap(self.objective, self.bound)


class SolveCancelled(Exception):
    """The observer asked the solver to stop."""


def _since(started: float) -> float:
    return time.monotonic() - started


def gap(objective: float | None, bound: float | None) -> float | None:
    """Relative optimality gap, as the solvers define it (0 when both are 0)."""
    if objective is None or bound is None:
        return None
    diff = max(0.0, objective - bound)
    return 0.0 if diff <= ABS_GAP else diff / max(abs(objective), 1e-9)


def _load_rows(inst: Instance) -> bool:
    return inst.load_weight > 0 and len(inst.supervisors) > 1


def _constant(inst: Instance) -> float:
    return sum(inst.unalloc_cost)


def _pair_costs(inst: Instance) -> list[float]:
    return [p.cost - inst.unalloc_cost[p.student] for p in inst.pairs]


def _groups(inst: Instance) -> tuple[list[list[int]], list[list[int]]]:
    by_project: list[list[int]] = [[] for _ in inst.projects]
    by_supervisor: list[list[int]] = [[] for _ in inst.supervisors]
    for i, pair in enumerate(inst.pairs):
        by_project[pair.project].append(i)
        k = inst.project_supervisor[pair.project]
        if k >= 0:
            by_supervisor[k].append(i)
    return by_project, by_supervisor


def start_assignment(inst: Instance) -> list[int]:
    """A feasible start for the solver: the forced pairs (build() checked they fit), then each
    student in turn takes their cheapest pair that still fits (serial dictatorship). Handed
    to the solver, it means a time limit hit before the first incumbent still returns a
    sensible allocation, not everyone unallocated."""
    out = [-1] * inst.n_students
    taken = [0] * len(inst.projects)
    load = [0] * len(inst.supervisors)

    def place(s: int, p: int) -> None:
        out[s] = p
        taken[p] += 1
        k = inst.project_supervisor[p]
        if k >= 0:
            load[k] += 1

    for pair in inst.pairs:
        if pair.forced:
            place(pair.student, pair.project)
    for s, members in enumerate(inst.by_student):
        if out[s] >= 0:
            continue
        for i in sorted(members, key=lambda i: inst.pairs[i].cost):
            p = inst.pairs[i].project
            k = inst.project_supervisor[p]
            if (
                inst.pairs[i].cost < inst.unalloc_cost[s]
                and taken[p] < inst.capacity[p]
                and (k < 0 or load[k] < inst.limit[k])
            ):
                place(s, p)
                break
    return out


def solve(
    inst: Instance,
    solver: str = "highs",
    time_limit: float = 60.0,
    observer: Observer | None = None,
    seed: int | None = None,
) -> Solution:
    """Solve to proven optimality or until `time_limit`; raise `SolveCancelled` if stopped."""
    if solver == "highs":
        return _solve_highs(inst, time_limit, observer, seed)
    if solver == "cpsat":
        return _solve_cpsat(inst, time_limit, observer, seed)
    raise ValueError(f"unknown solver {solver!r}")


# -- HiGHS -------------------------------------------------------------------------------------


def _highs_model(inst: Instance, time_limit: float, seed: int | None) -> Any:
    """A HiGHS instance holding the model, with a feasible start (forced pairs only)."""
    import highspy
    import numpy as np

    h = highspy.Highs()  # type: ignore[no-untyped-call]
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(time_limit))
    h.setOptionValue("mip_rel_gap", REL_GAP)
    h.setOptionValue("mip_abs_gap", ABS_GAP)
    if seed is not None:
        h.setOptionValue("random_seed", int(seed) % (2**31))
    n = len(inst.pairs)
    K = len(inst.supervisors)
    loads = _load_rows(inst)
    n_cols = n + (1 + K if loads else 0)
    cost = np.zeros(n_cols)
    cost[:n] = _pair_costs(inst)
    if loads:
        cost[n + 1 :] = inst.load_weight / K
    lower = np.zeros(n_cols)
    lower[[i for i, pair in enumerate(inst.pairs) if pair.forced]] = 1.0
    upper = np.full(n_cols, highspy.kHighsInf)
    upper[:n] = 1.0
    empty = np.zeros(0, dtype=np.int32)
    h.addCols(n_cols, cost, lower, upper, 0, empty, empty, np.zeros(0))
    h.changeObjectiveOffset(_constant(inst))
    h.changeColsIntegrality(
        n, np.arange(n, dtype=np.int32), np.full(n, highspy.HighsVarType.kInteger)
    )
    rows = _RowBuilder()
    by_project, by_supervisor = _groups(inst)
    inf = highspy.kHighsInf
    for members in inst.by_student:
        if len(members) > 1:
            rows.add(members, [1.0] * len(members), -inf, 1.0)
    for p, members in enumerate(by_project):
        if len(members) > inst.capacity[p]:
            rows.add(members, [1.0] * len(members), -inf, inst.capacity[p])
    for k, members in enumerate(by_supervisor):
        if len(members) > inst.limit[k]:
            rows.add(members, [1.0] * len(members), -inf, inst.limit[k])
    if loads:
        staffed = [i for members in by_supervisor for i in members]
        rows.add([n, *staffed], [1.0] + [-1.0] * len(staffed), 0.0, 0.0)  # A = sum staffed
        for k, members in enumerate(by_supervisor):
            d = n + 1 + k  # d_k >= K*load_k - A and d_k >= A - K*load_k
            rows.add([d, n, *members], [1.0, 1.0] + [-float(K)] * len(members), 0.0, inf)
            rows.add([d, n, *members], [1.0, -1.0] + [float(K)] * len(members), 0.0, inf)
    rows.flush(h, np)
    start = highspy.HighsSolution()
    start.col_value = _highs_start(inst, n_cols, loads, by_supervisor)
    start.value_valid = True
    h.setSolution(start)
    return h


def _subscribe_highs(h: Any, report: Callable[[float | None, float | None], bool]) -> None:
    """Improving solutions and periodic interrupt checks go to `report` (True = stop)."""
    state = {"stop": False, "last": 0.0}

    def improving(event: Any) -> None:
        out = event.data_out
        state["stop"] = state["stop"] or report(out.objective_function_value, out.mip_dual_bound)

    def interrupt(event: Any) -> None:
        now = time.monotonic()
        if now - state["last"] >= INTERRUPT_EVERY_S:
            state["last"] = now
            out = event.data_out
            primal = out.mip_primal_bound if abs(out.mip_primal_bound) < 1e30 else None
            state["stop"] = state["stop"] or report(primal, out.mip_dual_bound)
        if state["stop"]:
            event.interrupt()

    h.cbMipImprovingSolution.subscribe(improving)
    h.cbMipInterrupt.subscribe(interrupt)


def _solve_highs(
    inst: Instance, time_limit: float, observer: Observer | None, seed: int | None
) -> Solution:
    import highspy

    started = time.monotonic()
    h = _highs_model(inst, time_limit, seed)
    stopped: list[bool] = []

    def report(objective: float | None, bound: float | None) -> bool:
        snap = Snapshot(objective, bound, time.monotonic() - started)
        if observer is not None and not stopped and observer(snap):
            stopped.append(True)
        return bool(stopped)

    _subscribe_highs(h, report)
    h.run()
    status = h.getModelStatus()
    if stopped:
        raise SolveCancelled()
    if status == highspy.HighsModelStatus.kInfeasible:
        raise InfeasibleError("infeasible: the solver proved the constraints cannot all hold")
    info = h.getInfo()
    values = h.getSolution().col_value
    bound = float(info.mip_dual_bound)
    bound_or_none = bound if math.isfinite(bound) else None
    optimal = status == highspy.HighsModelStatus.kOptimal
    if not optimal and (info.primal_solution_status == 0 or len(values) < len(inst.pairs)):
        # Stopped before it even took the start: the start is the best allocation known.
        start = start_assignment(inst)
        value = objective(inst, start, pair_costs(inst))
        return Solution(start, "time_limit", value, bound_or_none, "highs", _since(started))
    if len(values) < len(inst.pairs):
        raise RuntimeError(f"HiGHS returned no solution (status {h.modelStatusToString(status)})")
    assignment = [-1] * inst.n_students
    for i, pair in enumerate(inst.pairs):
        if values[i] > 0.5:
            assignment[pair.student] = pair.project
    return Solution(
        assignment=assignment,
        status="optimal" if optimal else "time_limit",
        objective=float(info.objective_function_value),
        bound=bound_or_none,
        solver="highs",
        elapsed=_since(started),
    )


def _highs_start(
    inst: Instance, n_cols: int, loads: bool, by_supervisor: list[list[int]]
) -> list[float]:
    values = [0.0] * n_cols
    n = len(inst.pairs)
    chosen = start_assignment(inst)
    for i, pair in enumerate(inst.pairs):
        if chosen[pair.student] == pair.project:
            values[i] = 1.0
    if loads:
        K = len(inst.supervisors)
        per_k = [sum(values[i] for i in members) for members in by_supervisor]
        total = sum(per_k)
        values[n] = total
        for k, load in enumerate(per_k):
            values[n + 1 + k] = abs(K * load - total)
    return values


class _RowBuilder:
    """Collects rows in CSR form and adds them to HiGHS in one call."""

    def __init__(self) -> None:
        self.lower: list[float] = []
        self.upper: list[float] = []
        self.starts: list[int] = []
        self.index: list[int] = []
        self.value: list[float] = []

    def add(self, cols: list[int], coefs: list[float], lo: float, hi: float) -> None:
        self.starts.append(len(self.index))
        self.index.extend(cols)
        self.value.extend(coefs)
        self.lower.append(lo)
        self.upper.append(hi)

    def flush(self, h: Any, np: Any) -> None:
        if not self.lower:
            return
        h.addRows(
            len(self.lower),
            np.array(self.lower, dtype=np.float64),
            np.array(self.upper, dtype=np.float64),
            len(self.index),
            np.array(self.starts, dtype=np.int32),
            np.array(self.index, dtype=np.int32),
            np.array(self.value, dtype=np.float64),
        )


# -- CP-SAT ------------------------------------------------------------------------------------


def _cpsat_model(inst: Instance) -> tuple[Any, list[Any]]:
    """The same model for CP-SAT (float objective coefficients; CP-SAT scales them)."""
    from ortools.sat.python import cp_model

    m = cp_model.CpModel()
    x = [m.new_bool_var(f"x{i}") for i in range(len(inst.pairs))]
    for i, pair in enumerate(inst.pairs):
        if pair.forced:
            m.add(x[i] == 1)
    by_project, by_supervisor = _groups(inst)
    for members in inst.by_student:
        if len(members) > 1:
            m.add_at_most_one(x[i] for i in members)
    for p, members in enumerate(by_project):
        if len(members) > inst.capacity[p]:
            m.add(sum(x[i] for i in members) <= inst.capacity[p])
    for k, members in enumerate(by_supervisor):
        if len(members) > inst.limit[k]:
            m.add(sum(x[i] for i in members) <= inst.limit[k])
    terms: list[Any] = list(x)
    coefs: list[float] = _pair_costs(inst)
    if _load_rows(inst):
        K, N = len(inst.supervisors), inst.n_students
        a = m.new_int_var(0, N, "A")
        m.add(a == sum(x[i] for members in by_supervisor for i in members))
        for k, members in enumerate(by_supervisor):
            d = m.new_int_var(0, K * N, f"d{k}")
            load = sum(x[i] for i in members)
            m.add(d >= K * load - a)
            m.add(d >= a - K * load)
            terms.append(d)
            coefs.append(inst.load_weight / K)
    m.minimize(cp_model.LinearExpr.weighted_sum(terms, coefs) + _constant(inst))
    chosen = start_assignment(inst)
    for i, pair in enumerate(inst.pairs):
        m.add_hint(x[i], chosen[pair.student] == pair.project)
    return m, x


def _solve_cpsat(
    inst: Instance, time_limit: float, observer: Observer | None, seed: int | None
) -> Solution:
    from ortools.sat.python import cp_model

    started = time.monotonic()
    m, x = _cpsat_model(inst)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = 8
    solver.parameters.log_search_progress = True  # routed to log_callback: the cancel poll
    solver.parameters.log_to_stdout = False
    if seed is not None:
        solver.parameters.random_seed = int(seed) % (2**31)
    state: dict[str, Any] = {"stop": False, "objective": None, "bound": None, "last": 0.0}

    def report() -> None:
        if observer is None or state["stop"]:
            return
        if observer(Snapshot(state["objective"], state["bound"], time.monotonic() - started)):
            state["stop"] = True
            solver.stop_search()

    class Callback(cp_model.CpSolverSolutionCallback):
        def on_solution_callback(self) -> None:
            state["objective"] = self.objective_value
            state["bound"] = self.best_objective_bound
            report()

    def on_bound(bound: float) -> None:
        state["bound"] = bound
        report()

    def on_log(_line: str) -> None:
        if time.monotonic() - state["last"] >= INTERRUPT_EVERY_S:
            state["last"] = time.monotonic()
            report()

    solver.best_bound_callback = on_bound
    solver.log_callback = on_log
    status = solver.solve(m, Callback())
    if state["stop"]:
        raise SolveCancelled()
    return _cpsat_solution(inst, solver, status, x, started)


def _cpsat_solution(
    inst: Instance, solver: Any, status: Any, x: list[Any], started: float
) -> Solution:
    from ortools.sat.python import cp_model

    if status == cp_model.INFEASIBLE:
        raise InfeasibleError("infeasible: the solver proved the constraints cannot all hold")
    bound = float(solver.best_objective_bound)
    bound_or_none = bound if math.isfinite(bound) else None
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        # Stopped before its first solution: the start is the best allocation known.
        start = start_assignment(inst)
        value = objective(inst, start, pair_costs(inst))
        return Solution(start, "time_limit", value, bound_or_none, "cpsat", _since(started))
    assignment = [-1] * inst.n_students
    for i, pair in enumerate(inst.pairs):
        if solver.boolean_value(x[i]):
            assignment[pair.student] = pair.project
    return Solution(
        assignment=assignment,
        status="optimal" if status == cp_model.OPTIMAL else "time_limit",
        objective=float(solver.objective_value),
        bound=bound_or_none,
        solver="cpsat",
        elapsed=time.monotonic() - started,
    )
