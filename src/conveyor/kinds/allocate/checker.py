"""Check an allocation against the raw input and recompute its objective from scratch.

Nothing here uses the solver's `Instance` or its pair costs: ranks, loads, the unfairness
term and the load deviation are recomputed straight from `pref`, `staff` and `config`, so the
tests can hold the solvers to an independent account, and the kind's output (ranks, loads,
histogram, objective) is always the checker's, never the solver's own claim.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from conveyor.kinds.allocate.models import AllocateInput, ObjectiveTerms, SupervisorLoad


@dataclass
class Evaluation:
    """What an allocation is worth and which hard constraints it breaks (if any)."""

    objective: float
    terms: ObjectiveTerms
    ranks: dict[str, int | None]
    loads: dict[str, SupervisorLoad]
    histogram: dict[str, int]
    unallocated: list[str]
    violations: list[str] = field(default_factory=list)


def _listed_rank(inp: AllocateInput, student: str, project: str) -> int | None:
    ranks = [r for p, r in inp.pref[student] if p == project]
    return min(ranks) if ranks else None


def _forced_and_banned(inp: AllocateInput, alloc: dict[str, str | None]) -> list[str]:
    config = inp.config
    out = [
        f"forced {student}->{project} not honoured"
        for student, project in config.forcedMatching.items()
        if alloc.get(student) != project
    ]
    for student, banned in config.disallowedMatching.items():
        for project in [banned] if isinstance(banned, str) else banned:
            if alloc.get(student) == project:
                out.append(f"disallowed {student}->{project} allocated")
    return out


def _ranked_within_limit(inp: AllocateInput, alloc: dict[str, str | None]) -> list[str]:
    config = inp.config
    out = []
    for student, got in alloc.items():
        if got is None or student in config.forcedMatching:
            continue
        rank = _listed_rank(inp, student, got) if student in inp.pref else None
        if rank is None:
            out.append(f"{student} got {got}, which they did not rank")
        elif rank > config.maxRank:
            out.append(f"{student} got {got} at rank {rank} > maxRank {config.maxRank}")
    return out


def _reserved(inp: AllocateInput, alloc: dict[str, str | None]) -> list[str]:
    config = inp.config
    out = []
    for preferred, project in config.preferredStudent.items():
        theirs = _listed_rank(inp, preferred, project)
        for student, got in alloc.items():
            if got != project or student == preferred or student in config.forcedMatching:
                continue
            rank = _listed_rank(inp, student, project)
            if theirs is not None and rank is not None and rank >= theirs:
                out.append(f"{student} took {project} reserved for preferred {preferred}")
    return out


def _violations(inp: AllocateInput, alloc: dict[str, str | None]) -> list[str]:
    out = []
    if set(alloc) != set(inp.pref):
        out.append("the allocation does not cover exactly the students with preferences")
    out += _forced_and_banned(inp, alloc)
    out += _ranked_within_limit(inp, alloc)
    out += _reserved(inp, alloc)
    takers = Counter(p for p in alloc.values() if p is not None)
    for project, n in takers.items():
        if n > inp.config.projectCapacity.get(project, 1):
            out.append(f"project {project} has {n} students")
    return out


def _loads(inp: AllocateInput, alloc: dict[str, str | None]) -> dict[str, SupervisorLoad]:
    """Students per supervisor (every supervisor in the project map, even with none)."""
    config = inp.config
    load: Counter[str] = Counter()
    for project in alloc.values():
        if project is not None and project in inp.staff:
            load[inp.staff[project]] += 1
    return {
        k: SupervisorLoad(load=load[k], limit=config.specialLoading.get(k, config.defaultLoad))
        for k in sorted(set(inp.staff.values()))
    }


def _histogram(alloc: dict[str, str | None], ranks: dict[str, int | None]) -> dict[str, int]:
    counts = Counter(
        str(r) if r is not None else "unallocated" if alloc[s] is None else "unranked"
        for s, r in ranks.items()
    )
    ordered = {k: counts[k] for k in sorted((k for k in counts if k.isdigit()), key=int)}
    for label in ("unranked", "unallocated"):
        if label in counts:
            ordered[label] = counts[label]
    return ordered


def _costs(
    inp: AllocateInput, alloc: dict[str, str | None]
) -> tuple[dict[str, int | None], float, float, float]:
    """Ranks obtained and the unweighted rank, staff and unfairness sums."""
    config = inp.config
    ranks: dict[str, int | None] = {}
    rank_cost = staff_cost = unfair_cost = 0.0
    staff_lists = inp.staffPref or {}
    ranked_by: dict[str, list[tuple[str, int]]] = {}
    for other, choices in inp.pref.items():
        for p, r in choices:
            ranked_by.setdefault(p, []).append((other, r))
    for student, project in alloc.items():
        listed = inp.pref.get(student, [])
        rank = None
        if project is not None and student in inp.pref:
            rank = _listed_rank(inp, student, project)
        ranks[student] = rank
        if project is None or rank is None:  # none, or a forced project they did not rank
            rank_cost += len(listed) + 1 if config.costUnalloc == -1 else config.costUnalloc
        else:
            rank_cost += rank
            better = [r for o, r in ranked_by[project] if o != student and r < rank]
            unfair_cost += len(better) * rank - sum(better)
        if project is not None and project in staff_lists:
            named = [r for s, r in staff_lists[project] if s == student]
            staff_cost += min(named) if named else config.costNoStaffPref
    return ranks, rank_cost, staff_cost, unfair_cost


def evaluate(inp: AllocateInput, alloc: dict[str, str | None]) -> Evaluation:
    """Recompute ranks, loads, the rank histogram and the objective of `alloc`."""
    config = inp.config
    violations = _violations(inp, alloc)
    ranks, rank_cost, staff_cost, unfair_cost = _costs(inp, alloc)
    loads = _loads(inp, alloc)
    violations += [
        f"supervisor {k} has {v.load} students, limit {v.limit}"
        for k, v in loads.items()
        if v.load > v.limit
    ]
    mean = sum(v.load for v in loads.values()) / len(loads) if loads else 0.0
    deviation = sum(abs(v.load - mean) for v in loads.values()) / max(1, len(alloc))
    terms = ObjectiveTerms(
        rank=config.weightRank * rank_cost,
        staff=config.weightStaff * staff_cost,
        unfair=config.weightUnfair * unfair_cost,
        load=config.weightVarLoad * deviation,
    )
    return Evaluation(
        objective=terms.rank + terms.staff + terms.unfair + terms.load,
        terms=terms,
        ranks=ranks,
        loads=loads,
        histogram=_histogram(alloc, ranks),
        unallocated=sorted(s for s, p in alloc.items() if p is None),
        violations=violations,
    )
