"""The `allocate` kind: student-project allocation, solved exactly (or by local search)."""

from __future__ import annotations

import time
from typing import Any

from conveyor.kinds.allocate import checker, csvio, exact, local_search
from conveyor.kinds.allocate.models import AllocateInput, AllocateOutput
from conveyor.kinds.allocate.problem import AllocationInputError, InfeasibleError, Instance, build
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, JobCancelled, PermanentError

LOG_EVERY_S = 0.5
EXAMPLE = {
    "pref": {"1": [[10, 1], [11, 2]], "2": [[10, 1], [12, 2]], "3": [[11, 1]]},
    "staff": {"10": "a", "11": "a", "12": "b"},
    "config": {"defaultLoad": 2, "timeLimit": 10},
}


class _Reporter:
    """Turns solver snapshots into `ctx.progress` (elapsed of the time limit) and log lines."""

    def __init__(self, ctx: Context, time_limit: float) -> None:
        self.ctx = ctx
        self.time_limit = time_limit
        self.best: float | None = None
        self.logged_at = 0.0

    def __call__(self, snap: exact.Snapshot) -> bool:
        if self.ctx.cancelled:
            return True
        gap = snap.gap
        text = (
            f"best {_fmt(snap.objective)}, bound {_fmt(snap.bound)},"
            f" gap {'-' if gap is None else f'{gap:.2%}'}, {snap.elapsed:.1f}s"
        )
        improved = snap.objective is not None and (
            self.best is None or snap.objective < self.best - 1e-9
        )
        now = time.monotonic()
        if improved and now - self.logged_at >= LOG_EVERY_S:
            self.ctx.log(f"new best allocation: {text}")
            self.logged_at = now
        if improved:
            self.best = snap.objective
        try:
            self.ctx.progress(round(min(snap.elapsed, self.time_limit), 2), self.time_limit, text)
        except JobCancelled:
            return True
        return False


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


class _SearchProgress:
    """Local search progress in percent: the larger of the runs done and the time used, so it
    rises during a long first run too (a run can take the whole time limit)."""

    EVERY_S = 0.2

    def __init__(self, ctx: Context, runs: int, time_limit: float) -> None:
        self.ctx, self.runs, self.time_limit = ctx, runs, time_limit
        self.started = self.last = time.monotonic()
        self.done, self.text = 0, "local search: first run"

    def report(self) -> bool:
        """Send the progress; True once the job is cancelled."""
        elapsed = time.monotonic() - self.started
        share = max(self.done / self.runs, min(1.0, elapsed / self.time_limit))
        try:
            self.ctx.progress(round(100 * share, 2), 100, self.text)
        except JobCancelled:
            return True
        return False

    def on_run(self, runs: int, best: float) -> bool:
        self.done, self.text = runs, f"local search run {runs}/{self.runs}, best {best:.4f}"
        self.ctx.log(self.text)
        return self.report()

    def stop(self) -> bool:
        """Polled between moves: reports every `EVERY_S` and says whether to stop."""
        now = time.monotonic()
        if now - self.last >= self.EVERY_S:
            self.last = now
            return self.report()
        return self.ctx.cancelled


def _solve(inp: AllocateInput, inst: Instance, ctx: Context) -> dict[str, Any]:
    config = inp.config
    if config.method == "local_search":
        meter = _SearchProgress(ctx, config.numRuns, config.timeLimit)
        found = local_search.search(inst, config, config.timeLimit, meter.on_run, meter.stop)
        ctx.check_cancelled()
        return {
            "assignment": found.assignment,
            "status": "heuristic",
            "solver": None,
            "bound": None,
            "gap": None,
            "elapsed": found.elapsed,
            "message": f"local search: best of {found.runs} run(s)"
            + (" (stopped at the time limit)" if found.stopped_early else "")
            + "; not proven optimal",
        }
    try:
        solution = exact.solve(
            inst, config.solver, config.timeLimit, _Reporter(ctx, config.timeLimit), config.seed
        )
    except exact.SolveCancelled:
        ctx.check_cancelled()
        raise
    proven = solution.status == "optimal"
    message = (
        f"proven optimal by {solution.solver} in {solution.elapsed:.2f}s"
        if proven
        else f"time limit of {config.timeLimit:g}s reached: best allocation found, NOT proven"
        f" optimal (gap {_gap_text(solution.gap)})"
    )
    return {
        "assignment": solution.assignment,
        "status": solution.status,
        "solver": solution.solver,
        "bound": solution.bound,
        "gap": solution.gap,
        "elapsed": solution.elapsed,
        "message": message,
    }


def _gap_text(gap: float | None) -> str:
    return "unknown" if gap is None else f"{gap:.4%}"


@task(
    "allocate",
    input=AllocateInput,
    output=AllocateOutput,
    max_attempts=2,
    retry_backoff=1.0,
    examples=[EXAMPLE],
)
def allocate(inp: AllocateInput, ctx: Context) -> AllocateOutput:
    """Allocate students to projects from ranked preferences under supervisor load limits.

    Solved exactly (HiGHS MIP, or CP-SAT) to proven optimality within `config.timeLimit`, or
    by the original service's local search (`config.method = "local_search"`). Writes
    `allocation.csv`. Infeasible constraints fail the job with the conflicting ones named.
    """
    ctx.progress(0, inp.config.timeLimit, "building the model")
    try:
        inst = build(inp)
    except (AllocationInputError, InfeasibleError) as exc:
        raise PermanentError(str(exc)) from None
    ctx.log(
        f"{inst.n_students} students, {len(inst.projects)} projects,"
        f" {len(inst.supervisors)} supervisors, {len(inst.pairs)} allowed pairs;"
        f" method {inp.config.method}"
    )
    try:
        solved = _solve(inp, inst, ctx)
    except InfeasibleError as exc:
        raise PermanentError(str(exc)) from None
    allocation = {
        inst.students[s]: (inst.projects[p] if p >= 0 else None)
        for s, p in enumerate(solved["assignment"])
    }
    # The reported figures are the checker's, recomputed from the raw input.
    report = checker.evaluate(inp, allocation)
    if report.violations:
        raise RuntimeError("the solver's allocation breaks constraints: " + "; ".join(
            report.violations[:10]))  # fmt: skip
    csvio.write_allocation(ctx.output_file("allocation.csv"), allocation, report.ranks, inp.staff)
    ctx.log(solved["message"])
    ctx.progress(inp.config.timeLimit, inp.config.timeLimit, solved["message"])
    return AllocateOutput(
        method=inp.config.method,
        solver=solved["solver"],
        status=solved["status"],
        proven_optimal=solved["status"] == "optimal",
        objective=report.objective,
        bound=solved["bound"],
        gap=exact.gap(report.objective, solved["bound"]),
        terms=report.terms,
        allocation=allocation,
        ranks=report.ranks,
        loads=report.loads,
        rank_histogram=report.histogram,
        unallocated=report.unallocated,
        elapsed_s=round(solved["elapsed"], 4),
        message=solved["message"],
    )
