"""Blocked jobs, the part every backend shares: which dependencies a new job waits for.

A job waits for a dependency through an edge (upstream -> dependent) and a `pending` counter
on the dependent; an edge lives from the moment it is counted until its upstream becomes
final, when the store deletes it and counts the dependent down (queuing it at zero) in the
same transaction. The backends keep the edges (SQL tables, Redis sets); the decisions are here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace

from conveyor import errors
from conveyor.models import FINAL_STATES, JobState
from conveyor.store.base import JobSpec

StateLookup = Callable[[list[str]], Mapping[str, JobState]]
"""Reads the states of stored jobs by id (missing ids are absent from the answer)."""


def plan(
    specs: Sequence[JobSpec],
    alias: Mapping[str, str],
    stored_states: StateLookup,
    final_in_batch: Iterable[str] = (),
) -> dict[str, list[str]]:
    """The dependencies each spec of a batch waits for, by spec id (specs with none absent).

    `specs` are the specs being inserted; `alias` maps the ids of specs that were not inserted
    (an idempotency key or unique key found their job) to the stored job they stand for;
    `final_in_batch` are inserted specs that start final (cancelled at submit). A dependency
    in the batch waits unless it starts final; a stored one waits unless it is final. An id
    that is neither raises `JobNotFoundError`, before anything is written.
    """
    done = set(final_in_batch)
    wanted = {
        s.id: [alias.get(d, d) for d in dict.fromkeys(s.depends_on)]
        for s in specs
        if s.depends_on and s.id not in done  # a job that starts final waits for nothing
    }
    if not wanted:
        return {}
    batch = {s.id for s in specs}
    outside = sorted({d for deps in wanted.values() for d in deps if d not in batch})
    states = stored_states(outside) if outside else {}
    for dep in outside:
        if dep not in states:
            raise errors.JobNotFoundError(f"no job with id {dep!r} to depend on", job_id=dep)
    pending: dict[str, list[str]] = {}
    for job_id, deps in wanted.items():
        waits = [
            d
            for d in dict.fromkeys(deps)
            if (d not in done if d in batch else states[d] not in FINAL_STATES)
        ]
        if waits:
            pending[job_id] = waits
    return pending


def as_children(parent_id: str, specs: Sequence[JobSpec]) -> list[JobSpec]:
    """The specs a WAIT spawns, each with `parent_id` set to the job that spawned it."""
    return [s if s.parent_id == parent_id else replace(s, parent_id=parent_id) for s in specs]


def edges(pending: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """(upstream, dependent) pairs of a plan."""
    return [(up, job_id) for job_id, ups in pending.items() for up in ups]
