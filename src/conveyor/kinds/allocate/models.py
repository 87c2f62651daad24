"""Input, config and output of the `allocate` kind.

The input keeps the original Project Allocation API's JSON shape (`pref`, `staff`, `config`)
and its config knobs with their original camelCase names and defaults, so a request that
worked against the Flask service works here unchanged. Ids may be JSON strings or integers;
they are kept as strings inside.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator


def _to_id(value: Any) -> Any:
    # Ints are accepted because the original API used integer ids; bools are not ids.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


Id = Annotated[
    str,
    BeforeValidator(_to_id),
    Field(min_length=1, max_length=200),
    WithJsonSchema({"type": ["string", "integer"], "description": "An id (string or integer)."}),
]
"""A student, project or supervisor id."""

Rank = Annotated[int, Field(ge=0, le=1_000_000)]
Choice = tuple[Id, Rank]
"""One preference: `[project, rank]` (for staff preferences `[student, rank]`); 1 = best."""


class AllocationConfig(BaseModel):
    """The solver's knobs; names and defaults are the original service's `Config`."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["exact", "local_search"] = Field(
        "exact", description="`exact` (MIP, proven optimal) or the original `local_search`."
    )
    solver: Literal["highs", "cpsat"] = Field(
        "highs", description="Exact solver: HiGHS MIP (default, faster here) or OR-Tools CP-SAT."
    )
    timeLimit: float = Field(
        60.0, gt=0, le=86_400, description="Seconds; then the best allocation found is returned."
    )
    maxRank: int = Field(8, ge=1, description="Preferences ranked worse than this are ignored.")
    defaultLoad: int = Field(5, ge=0, description="Most students a supervisor takes.")
    specialLoading: dict[Id, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Per-supervisor load limits overriding defaultLoad."
    )
    forcedMatching: dict[Id, Id] = Field(
        default_factory=dict, description="student → project pairs that must be allocated."
    )
    disallowedMatching: dict[Id, Id | list[Id]] = Field(
        default_factory=dict, description="student → project(s) that must not be allocated."
    )
    preferredStudent: dict[Id, Id] = Field(
        default_factory=dict,
        description="student → project: only students who ranked the project strictly better"
        " may take it instead of this student.",
    )
    projectCapacity: dict[Id, Annotated[int, Field(ge=0)]] = Field(
        default_factory=dict, description="Students a project takes (default 1, as originally)."
    )
    costUnalloc: float = Field(
        100, ge=-1, description="Rank cost of leaving a student unallocated; -1 = their list + 1."
    )
    costNoStaffPref: float = Field(
        10, ge=0, description="Staff cost of a student a project's staff list does not name."
    )
    weightStaff: float = Field(10, ge=0, description="Weight of the staff-preference cost.")
    weightRank: float = Field(1, ge=0, description="Weight of the students' rank cost.")
    weightUnfair: float = Field(0.1, ge=0, description="Weight of the unfairness (envy) cost.")
    weightVarLoad: float = Field(
        0.01, ge=0, description="Weight of the supervisors' load deviation from the mean."
    )
    # Local search only (the original's heuristic).
    maxDepth: int = Field(10, ge=1, le=50, description="local_search: longest move chain.")
    numRuns: int = Field(20, ge=1, le=10_000, description="local_search: restarts.")
    steepest: bool = Field(False, description="local_search: take the first improving move.")
    preAssignType: Literal["RSD", "Random"] = Field(
        "RSD", description="local_search: start from random serial dictatorship or random."
    )
    seed: int | None = Field(None, description="Random seed (local_search, solver).")


class AllocateInput(BaseModel):
    """Students' ranked preferences, the project → supervisor map, and the config."""

    model_config = ConfigDict(extra="forbid")

    pref: dict[Id, list[Choice]] = Field(
        description="student → [[project, rank], …] (rank 1 = first choice)."
    )
    staff: dict[Id, Id] = Field(description="project → supervisor.")
    staffPref: dict[Id, list[Choice]] | None = Field(
        None, description="Optional staff preferences: project → [[student, rank], …]."
    )
    config: AllocationConfig = Field(default_factory=AllocationConfig)

    @model_validator(mode="after")
    def _consistent_preferences(self) -> AllocateInput:
        problems = preference_problems(self.pref, set(self.staff))
        if problems:
            shown = "; ".join(problems[:MAX_NAMED])
            more = f" (and {len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
            raise ValueError(f"inconsistent preferences: {shown}{more}")
        return self


MAX_NAMED = 20


def preference_problems(
    pref: dict[str, list[Choice]], projects: set[str], rows: dict[str, str] | None = None
) -> list[str]:
    """What is wrong with each student's list: a project missing from the project data, the
    same project twice, the same rank twice (the original took all three silently and could
    allocate a student to a project nobody supervises). `rows` names where each student is
    (a CSV line); by default the student's id."""
    found = []
    for student, choices in pref.items():
        where = (rows or {}).get(student) or f"student {student!r}"
        names = [p for p, _ in choices]
        ranks = [r for _, r in choices]
        unknown = sorted({p for p in names if p not in projects})
        if unknown:
            found.append(f"{where}: project(s) {', '.join(map(repr, unknown))} not in the projects")
        twice = sorted({p for p in names if names.count(p) > 1})
        if twice:
            found.append(f"{where}: project(s) {', '.join(map(repr, twice))} ranked twice")
        same = sorted({r for r in ranks if ranks.count(r) > 1})
        if same:
            found.append(f"{where}: rank(s) {', '.join(map(str, same))} given twice")
    return found


class ObjectiveTerms(BaseModel):
    """The weighted parts of the objective (they add up to `objective`)."""

    rank: float
    staff: float
    unfair: float
    load: float


class SupervisorLoad(BaseModel):
    load: int
    limit: int


class AllocateOutput(BaseModel):
    """The allocation and how good it is."""

    method: str
    solver: str | None = None
    status: Literal["optimal", "time_limit", "heuristic"] = Field(
        description="`optimal`: proven; `time_limit`: best found when time ran out (not proven);"
        " `heuristic`: local search (never proven)."
    )
    proven_optimal: bool
    objective: float
    bound: float | None = Field(None, description="Best lower bound the solver proved.")
    gap: float | None = Field(None, description="(objective - bound) / |objective|.")
    terms: ObjectiveTerms
    allocation: dict[str, str | None] = Field(description="student → project (null: none).")
    ranks: dict[str, int | None] = Field(description="student → rank of the project obtained.")
    loads: dict[str, SupervisorLoad]
    rank_histogram: dict[str, int] = Field(description='rank → students ("unallocated" too).')
    unallocated: list[str]
    elapsed_s: float
    message: str
