"""The allocation problem in solver form: indexed students, projects, supervisors and the
allowed (student, project) pairs with their weighted costs.

Both solvers (exact and local search) read an `Instance`; the checker does not (it recomputes
everything from the raw input), so a mistake here cannot hide itself.

Objective (the original's `getcurrentCost`, made exact):

    weightRank  · Σ rank(s, a(s))          rank of the project obtained; costUnalloc if none
  + weightStaff · Σ staff(s, a(s))         staff rank of s on a(s)'s list, else costNoStaffPref
  + weightUnfair· Σ unfair(s, a(s))        Σ over others t who ranked a(s) better: rank_s - rank_t
  + weightVarLoad · Σ_k |load_k - mean| / N   over all supervisors k, N = number of students
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field

from conveyor.kinds.allocate.models import AllocateInput, AllocationConfig


class AllocationInputError(ValueError):
    """The input names things that do not exist or contradicts itself."""


class InfeasibleError(ValueError):
    """The hard constraints cannot all hold; the message names the ones that conflict."""


@dataclass(frozen=True, slots=True)
class Pair:
    """A student that may get a project, with the weighted cost of that pair."""

    student: int
    project: int
    cost: float
    forced: bool = False


@dataclass(slots=True)
class Instance:
    students: list[str]
    projects: list[str]
    supervisors: list[str]
    project_supervisor: list[int]  # -1: no supervisor (no load limit), as originally
    capacity: list[int]
    limit: list[int]
    pairs: list[Pair]
    unalloc_cost: list[float]  # weighted cost of leaving each student unallocated
    load_weight: float  # weightVarLoad / N
    by_student: list[list[int]] = field(default_factory=list)  # pair indices per student

    @property
    def n_students(self) -> int:
        return len(self.students)


def unalloc_rank(config: AllocationConfig, listed: int) -> float:
    """The rank cost of an unallocated student (`costUnalloc`; -1 = their list length + 1)."""
    return float(listed + 1) if config.costUnalloc == -1 else float(config.costUnalloc)


def unfairness(pref: dict[str, list[tuple[str, int]]]) -> dict[tuple[str, str], float]:
    """For every ranked pair: Σ over other students who ranked the project better of the
    rank difference (the original's `costUnfair`, which is a per-pair constant)."""
    ranks: dict[str, list[int]] = defaultdict(list)
    for choices in pref.values():
        for project, rank in choices:
            ranks[project].append(rank)
    prefix: dict[str, tuple[list[int], list[int]]] = {}
    for project, values in ranks.items():
        values.sort()
        sums = [0]
        for value in values:
            sums.append(sums[-1] + value)
        prefix[project] = (values, sums)
    out: dict[tuple[str, str], float] = {}
    for student, choices in pref.items():
        for project, rank in choices:
            values, sums = prefix[project]
            below = bisect_left(values, rank)  # students with a strictly better rank
            out[(student, project)] = float(below * rank - sums[below])
    return out


def _disallowed(config: AllocationConfig) -> set[tuple[str, str]]:
    out = set()
    for student, projects in config.disallowedMatching.items():
        for project in [projects] if isinstance(projects, str) else projects:
            out.add((student, project))
    return out


def _check_names(inp: AllocateInput, projects: set[str]) -> None:
    config = inp.config
    problems = []
    for knob, mapping in (
        ("forcedMatching", config.forcedMatching),
        ("disallowedMatching", config.disallowedMatching),
        ("preferredStudent", config.preferredStudent),
    ):
        for student in mapping:
            if student not in inp.pref:
                problems.append(f"{knob} names student {student!r}, who has no preferences row")
    for student, project in {**config.forcedMatching, **config.preferredStudent}.items():
        if project not in projects:
            problems.append(f"project {project!r} (for student {student!r}) is not a known project")
    for student, project in config.preferredStudent.items():
        if student in inp.pref and project not in dict(inp.pref[student]):
            problems.append(
                f"preferredStudent: student {student!r} did not rank project {project!r}"
            )
    for project in config.projectCapacity:
        if project not in projects:
            problems.append(f"projectCapacity names unknown project {project!r}")
    if problems:
        raise AllocationInputError("; ".join(problems))


def build(inp: AllocateInput) -> Instance:
    """Index the input and compute pair costs; raise on bad names or infeasible forcing."""
    config = inp.config
    pref = {s: [(p, r) for p, r in choices] for s, choices in inp.pref.items()}
    project_set = set(inp.staff) | {p for choices in pref.values() for p, _ in choices}
    _check_names(inp, project_set)
    students = list(pref)
    projects = sorted(project_set)
    supervisors = sorted(set(inp.staff.values()))
    p_index = {p: i for i, p in enumerate(projects)}
    k_index = {k: i for i, k in enumerate(supervisors)}
    unfair = unfairness(pref)
    staff_rank = {
        (s, p): float(r) for p, choices in (inp.staffPref or {}).items() for s, r in choices
    }
    staff_lists = set(inp.staffPref or {})
    disallowed = _disallowed(config)
    # preferredStudent: others who ranked the project no better than the preferred student
    # lose it (the original's setPreferredStudent).
    reserved = {p: (s, dict(pref[s])[p]) for s, p in config.preferredStudent.items()}

    def cost(s: str, p: str, rank: float, unfair_cost: float) -> float:
        staff = staff_rank.get((s, p), config.costNoStaffPref) if p in staff_lists else 0.0
        return (
            config.weightRank * rank
            + config.weightStaff * staff
            + config.weightUnfair * unfair_cost
        )

    pairs: list[Pair] = []
    unalloc: list[float] = []
    for si, s in enumerate(students):
        unalloc.append(config.weightRank * unalloc_rank(config, len(pref[s])))
        forced = config.forcedMatching.get(s)
        if forced is not None:
            rank = dict(pref[s]).get(forced)
            # A forced project the student did not rank costs as much as no project.
            rank_cost = float(rank) if rank is not None else unalloc_rank(config, len(pref[s]))
            fair = unfair[(s, forced)] if rank is not None else 0.0
            pairs.append(Pair(si, p_index[forced], cost(s, forced, rank_cost, fair), True))
            continue
        for p, rank in pref[s]:
            if rank > config.maxRank or (s, p) in disallowed:
                continue
            holder = reserved.get(p)
            if holder is not None and holder[0] != s and rank >= holder[1]:
                continue
            pairs.append(Pair(si, p_index[p], cost(s, p, float(rank), unfair[(s, p)])))
    # Keep one pair per (student, project) even if a project was listed twice: the best rank.
    best: dict[tuple[int, int], Pair] = {}
    for pair in pairs:
        key = (pair.student, pair.project)
        if key not in best or pair.cost < best[key].cost:
            best[key] = pair
    pairs = list(best.values())
    instance = Instance(
        students=students,
        projects=projects,
        supervisors=supervisors,
        project_supervisor=[k_index[inp.staff[p]] if p in inp.staff else -1 for p in projects],
        capacity=[config.projectCapacity.get(p, 1) for p in projects],
        limit=[config.specialLoading.get(k, config.defaultLoad) for k in supervisors],
        pairs=pairs,
        unalloc_cost=unalloc,
        load_weight=config.weightVarLoad / max(1, len(students)),
    )
    instance.by_student = [[] for _ in students]
    for i, pair in enumerate(pairs):
        instance.by_student[pair.student].append(i)
    check_forced(instance, inp)
    return instance


def check_forced(instance: Instance, inp: AllocateInput) -> None:
    """Forced pairs are the only way the constraints can conflict (allocating nobody else is
    always allowed), so check them here and say exactly which constraints clash."""
    config = inp.config
    conflicts = []
    disallowed = _disallowed(config)
    for s, p in config.forcedMatching.items():
        if (s, p) in disallowed:
            conflicts.append(f"student {s!r} is both forced onto and disallowed from {p!r}")
    per_project: dict[int, list[str]] = defaultdict(list)
    per_supervisor: dict[int, list[str]] = defaultdict(list)
    for pair in instance.pairs:
        if pair.forced:
            per_project[pair.project].append(instance.students[pair.student])
            k = instance.project_supervisor[pair.project]
            if k >= 0:
                per_supervisor[k].append(instance.students[pair.student])
    for pi, names in sorted(per_project.items()):
        if len(names) > instance.capacity[pi]:
            conflicts.append(
                f"forcedMatching puts {len(names)} students ({', '.join(names)}) on project"
                f" {instance.projects[pi]!r}, which takes {instance.capacity[pi]}"
                f" (projectCapacity, default 1)"
            )
    for k, names in sorted(per_supervisor.items()):
        if len(names) > instance.limit[k]:
            supervisor = instance.supervisors[k]
            source = (
                f"specialLoading[{supervisor!r}]={instance.limit[k]}"
                if supervisor in config.specialLoading
                else f"defaultLoad={instance.limit[k]}"
            )
            conflicts.append(
                f"forcedMatching puts {len(names)} students ({', '.join(names)}) with supervisor"
                f" {supervisor!r}, whose load limit is {instance.limit[k]} ({source})"
            )
    if conflicts:
        raise InfeasibleError("infeasible: " + "; ".join(conflicts))


def pair_costs(inst: Instance) -> dict[tuple[int, int], float]:
    """(student, project) → weighted cost, for the allowed pairs."""
    return {(p.student, p.project): p.cost for p in inst.pairs}


def load_term(inst: Instance, loads: list[int]) -> float:
    """load_weight · Σ_k |load_k - mean| over all supervisors."""
    if not loads:
        return 0.0
    mean = sum(loads) / len(loads)
    return inst.load_weight * sum(abs(load - mean) for load in loads)


def objective(inst: Instance, assignment: list[int], costs: dict[tuple[int, int], float]) -> float:
    """The objective of an assignment (student → project index, -1 = none)."""
    total = 0.0
    loads = [0] * len(inst.supervisors)
    for s, p in enumerate(assignment):
        if p < 0:
            total += inst.unalloc_cost[s]
            continue
        total += costs[(s, p)]
        k = inst.project_supervisor[p]
        if k >= 0:
            loads[k] += 1
    return total + load_term(inst, loads)
