"""The SQLite store's blocked jobs: dependency edges, release and rewind (see store/deps.py).

Every function runs inside the caller's write transaction, so a release happens in the same
transaction as the change that makes its upstream final, with its events.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from conveyor.models import JobState
from conveyor.store import rules

CHUNK = 500
Event = tuple[Any, ...]
"""(job_id, at, type, data as JSON text): a row of the events table."""


def states(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, JobState]:
    """The states of the stored jobs among `ids`."""
    found: dict[str, JobState] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        for job_id, state in db.execute(f"SELECT id, state FROM jobs WHERE id IN ({marks})", chunk):
            found[job_id] = JobState(state)
    return found


def add_edges(db: sqlite3.Connection, edges: Sequence[tuple[str, str]]) -> None:
    """Record (upstream, dependent) edges; an edge already there (left by a dependent that was
    cancelled before its upstream ended, then rewound) is kept once."""
    db.executemany("INSERT OR IGNORE INTO job_deps (upstream, dependent) VALUES (?,?)", edges)


def release(db: sqlite3.Connection, final_ids: Sequence[str], now: float) -> list[Event]:
    """Jobs `final_ids` just became final: delete their edges and count their blocked
    dependents down, queuing (or scheduling) those that reach zero. Returns the state events
    of the released jobs (the caller writes them and wakes workers if any)."""
    dependents: Counter[str] = Counter()
    for start in range(0, len(final_ids), CHUNK):
        chunk = final_ids[start : start + CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = db.execute(
            f"DELETE FROM job_deps WHERE upstream IN ({marks}) RETURNING dependent", chunk
        ).fetchall()
        dependents.update(row[0] for row in rows)
    by_count: dict[int, list[str]] = {}
    for job_id, count in dependents.items():
        by_count.setdefault(count, []).append(job_id)
    events: list[Event] = []
    for count, ids in by_count.items():  # mostly one group: each dependent counted once
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            marks = ",".join("?" * len(chunk))
            # One statement decides and flips, so a job is released once whoever counts last.
            rows = db.execute(
                "UPDATE jobs SET pending = pending - ?1, updated_at = ?2,"
                " state = CASE WHEN pending - ?1 > 0 THEN state"
                "  WHEN run_at > ?2 THEN 'scheduled' ELSE 'queued' END"
                f" WHERE state = 'blocked' AND id IN ({marks}) RETURNING id, state, run_at",
                (count, now, *chunk),
            ).fetchall()
            for job_id, state, run_at in rows:
                if state != JobState.BLOCKED.value:
                    data = rules.released_event(JobState(state), run_at)
                    events.append((job_id, now, "state", orjson.dumps(data).decode()))
    return events


def rewind(
    db: sqlite3.Connection,
    jobs: Mapping[str, list[str]],
    now: float,
) -> dict[str, tuple[JobState, int]]:
    """Reset failed or cancelled jobs (id -> depends_on) to run again; returns each one's new
    state and pending count. The caller checked that they may be rewound."""
    rewound = set(jobs)
    outside = sorted({d for deps in jobs.values() for d in deps if d not in rewound})
    known = states(db, outside)
    out: dict[str, tuple[JobState, int]] = {}
    for job_id, deps in jobs.items():
        waits = rules.rewind_pending(deps, known, rewound)
        add_edges(db, [(up, job_id) for up in waits])
        state = JobState.BLOCKED if waits else JobState.QUEUED
        db.execute(
            "UPDATE jobs SET state = ?, pending = ?, attempt = 0, run_at = ?,"
            " cancel_requested = 0, finished_at = NULL, result = NULL, progress = NULL,"
            " lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = ?"
            " WHERE id = ?",
            (state.value, len(waits), now, now, job_id),
        )
        out[job_id] = (state, len(waits))
    return out
