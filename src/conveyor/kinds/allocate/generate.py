"""Random allocation instances for tests, benchmarks and demos (seeded, reproducible)."""

from __future__ import annotations

import itertools
import random
from typing import Any


def instance(
    students: int,
    projects: int,
    supervisors: int,
    choices: int = 10,
    seed: int = 0,
    seats_per_student: float = 1.2,
    load_slack: float = 1.1,
    **config: Any,
) -> dict[str, Any]:
    """An `allocate` input: skewed project popularity, each student ranks `choices` projects.

    Project capacities are drawn so the seats total about `seats_per_student` x students, and
    `defaultLoad` lets supervisors take about `load_slack` x their fair share, so the load
    limits bind for the popular supervisors.
    """
    rng = random.Random(seed)
    project_ids = [f"p{i}" for i in range(projects)]
    staff = {p: f"k{rng.randrange(supervisors) if i >= supervisors else i}"
             for i, p in enumerate(project_ids)}  # fmt: skip
    popularity = [1.0 / (1 + i) ** 0.7 for i in range(projects)]
    rng.shuffle(popularity)
    cumulative = list(itertools.accumulate(popularity))
    pref: dict[str, list[list[Any]]] = {}
    for s in range(students):
        picked: list[str] = []
        while len(picked) < min(choices, projects):
            project = rng.choices(project_ids, cum_weights=cumulative)[0]
            if project not in picked:
                picked.append(project)
        pref[f"s{s}"] = [[p, rank] for rank, p in enumerate(picked, start=1)]
    seats = max(1, round(seats_per_student * students / projects))
    capacity = {p: rng.randint(max(1, seats - 1), seats + 1) for p in project_ids}
    default_load = max(1, -(-int(load_slack * students) // supervisors))
    cfg: dict[str, Any] = {"defaultLoad": default_load, "projectCapacity": capacity,
                           "maxRank": choices}  # fmt: skip
    cfg.update(config)
    return {"pref": pref, "staff": staff, "config": cfg}
