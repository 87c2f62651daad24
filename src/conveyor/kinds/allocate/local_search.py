"""The original service's heuristic, kept as `method: "local_search"` for comparison.

Each run starts from random serial dictatorship (or a random assignment), then repeatedly
searches, breadth-first from every student, for chains of at most `maxDepth` moves — a
*shift* ending on a free seat (or on "unallocated"), or a *cycle* back to the first student's
seat — whose cost change is negative, and applies the best one found, until none improves.
As in the original, a chain is pruned as soon as its partial cost change is not negative, and
`steepest` takes the first improving chain found instead of the best of all students'. The best
of `numRuns` runs is returned. It is never proven optimal; the exact method is.

Changed from the original only where needed: project capacities above 1 (a full project's
occupants may each be pushed on), the load term measured against the mean over all
supervisors (as in the exact model), and each student is pushed on at most once per search.
Without that last bound the original's search is exponential in `maxDepth`: a port without
it took over 20 GB and 30 minutes on a 300-student instance before it was stopped.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from conveyor.kinds.allocate.models import AllocationConfig
from conveyor.kinds.allocate.problem import Instance, load_term, objective, pair_costs

EPS = 1e-9
Chain = list[tuple[int, int]]  # (student, new project) moves; -1 = unallocated


@dataclass(frozen=True, slots=True)
class SearchResult:
    assignment: list[int]
    objective: float
    runs: int
    elapsed: float
    stopped_early: bool  # the time limit cut the runs short


class _State:
    """One run's assignment with the counts needed to score and check moves quickly."""

    def __init__(self, inst: Instance, costs: dict[tuple[int, int], float]) -> None:
        self.inst = inst
        self.costs = costs
        self.assign = [-1] * inst.n_students
        self.occupants: list[set[int]] = [set() for _ in inst.projects]
        self.loads = [0] * len(inst.supervisors)
        # Per student: (project, cost) of every allowed move, "unallocated" (-1) last.
        self.moves = [
            [(inst.pairs[i].project, inst.pairs[i].cost) for i in members]
            + [(-1, inst.unalloc_cost[s])]
            for s, members in enumerate(inst.by_student)
        ]
        self.options = [[p for p, _ in moves[:-1]] for moves in self.moves]
        self.current = list(inst.unalloc_cost)  # cost of each student's current seat
        self.frozen = [False] * inst.n_students

    def cost(self, s: int, p: int) -> float:
        return self.inst.unalloc_cost[s] if p < 0 else self.costs[(s, p)]

    def place(self, s: int, p: int) -> None:
        old = self.assign[s]
        if old >= 0:
            self.occupants[old].discard(s)
            k = self.inst.project_supervisor[old]
            if k >= 0:
                self.loads[k] -= 1
        self.assign[s] = p
        self.current[s] = self.cost(s, p)
        if p >= 0:
            self.occupants[p].add(s)
            k = self.inst.project_supervisor[p]
            if k >= 0:
                self.loads[k] += 1

    def fits(self, p: int) -> bool:
        k = self.inst.project_supervisor[p]
        return len(self.occupants[p]) < self.inst.capacity[p] and (
            k < 0 or self.loads[k] < self.inst.limit[k]
        )

    def shift_delta(self, leaving: int, arriving: int) -> float | None:
        """Load-term change when one student leaves `leaving` and one enters `arriving`
        (project indices, -1 = none); None if `arriving`'s supervisor would be over limit."""
        inst = self.inst
        k_out = inst.project_supervisor[leaving] if leaving >= 0 else -1
        k_in = inst.project_supervisor[arriving] if arriving >= 0 else -1
        if k_in == k_out:
            return 0.0
        if k_in >= 0 and self.loads[k_in] + 1 > inst.limit[k_in]:
            return None
        if inst.load_weight == 0:
            return 0.0
        after = list(self.loads)
        if k_out >= 0:
            after[k_out] -= 1
        if k_in >= 0:
            after[k_in] += 1
        return load_term(inst, after) - load_term(inst, self.loads)


def _pre_assign(state: _State, rng: random.Random, kind: str) -> None:
    inst = state.inst
    for pair in inst.pairs:
        if pair.forced:
            state.place(pair.student, pair.project)
            state.frozen[pair.student] = True
    order = [s for s in range(inst.n_students) if not state.frozen[s]]
    rng.shuffle(order)
    for s in order:
        # RSD: best-ranked project that still fits (options are in preference order).
        choices = sorted(state.options[s], key=lambda p: state.costs[(s, p)])
        if kind == "Random":
            choices = [*choices, -1]
            rng.shuffle(choices)
        for p in choices:
            if p < 0:
                break
            if state.fits(p):
                state.place(s, p)
                break


def _bfs(state: _State, s: int, config: AllocationConfig, rng: random.Random) -> list[
    tuple[Chain, float]
]:  # fmt: skip
    """Improving chains starting at student `s` (the first one unless `steepest`)."""
    found: list[tuple[Chain, float]] = []
    start_seat = state.assign[s]
    queue: deque[tuple[int, int, float, Chain]] = deque([(s, 0, 0.0, [])])
    seen = {s}  # each student is pushed on at most once per search: keeps it polynomial
    while queue:
        x, depth, partial, path = queue.popleft()
        depth += 1
        if depth > config.maxDepth:
            continue
        moves = state.moves[x]
        seat = state.assign[x]
        base = partial - state.current[x]
        offset = rng.randrange(len(moves))  # a random rotation instead of a full shuffle
        for j in range(len(moves)):
            q, cost = moves[(j + offset) % len(moves)]
            total = base + cost
            # The original's pruning: partial sums must keep improving.
            if total >= -EPS or q == seat or (q >= 0 and any(q == t for _, t in path)):
                continue
            chain = [*path, (x, q)]
            if q >= 0 and q == start_seat and x != s:
                found.append((chain, total))  # a cycle: x takes the seat s left
            elif q < 0 or len(state.occupants[q]) < state.inst.capacity[q]:
                delta = state.shift_delta(start_seat, q)
                if delta is None or total + delta >= -EPS:
                    continue
                found.append((chain, total + delta))
            else:
                for y in state.occupants[q]:
                    if y not in seen and not state.frozen[y]:
                        seen.add(y)
                        queue.append((y, depth, total, chain))
                continue
            if not config.steepest:
                return found
    return found


def _improve(
    state: _State,
    config: AllocationConfig,
    rng: random.Random,
    deadline: float,
    stop: Callable[[], bool],
) -> bool:
    """Apply improving chains until none is left; False if the deadline or `stop` cut it short."""
    while True:
        if time.monotonic() > deadline or stop():
            return False
        best: tuple[Chain, float] | None = None
        for s in range(state.inst.n_students):
            if state.frozen[s]:
                continue
            chains = _bfs(state, s, config, rng)
            if chains and config.steepest:
                best = chains[0]
                break
            for chain in chains:
                if best is None or chain[1] < best[1]:
                    best = chain
        if best is None:
            return True
        # Apply from the end so every seat is freed before it is taken.
        for student, project in reversed(best[0]):
            state.place(student, project)


def search(
    inst: Instance,
    config: AllocationConfig,
    time_limit: float,
    on_run: Callable[[int, float], bool] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> SearchResult:
    """Run the heuristic `numRuns` times (or until `time_limit`); keep the best.

    `on_run(runs_done, best_objective)` is called after each run; True stops the search, as
    does `stop()` (polled between moves: cancellation).
    """
    started = time.monotonic()
    deadline = started + time_limit
    rng = random.Random(config.seed)
    costs = pair_costs(inst)
    best: list[int] | None = None
    best_value = float("inf")
    runs = 0
    cut = False
    for _ in range(config.numRuns):
        state = _State(inst, costs)
        _pre_assign(state, rng, config.preAssignType)
        finished = _improve(state, config, rng, deadline, stop)
        value = objective(inst, state.assign, costs)
        runs += 1
        if value < best_value - EPS:
            best, best_value = list(state.assign), value
        if not finished:
            cut = True
            break
        if on_run is not None and on_run(runs, best_value):
            break
        if time.monotonic() > deadline:
            cut = runs < config.numRuns
            break
    assert best is not None
    return SearchResult(best, best_value, runs, time.monotonic() - started, cut)
