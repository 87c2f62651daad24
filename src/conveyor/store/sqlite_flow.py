"""SQLite side of flow control (#20): the queries behind limits, paused queues, token buckets,
unique jobs and the cancel strategies. Every function runs inside the caller's transaction
(`db` is the store's connection with a `BEGIN IMMEDIATE` open), so what it reads and writes
commits or rolls back with the enqueue or claim it belongs to.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Sequence
from typing import Any

from conveyor.models import UniqueScope
from conveyor.store.base import JobSpec
from conveyor.store.limits import (
    KEY_SCAN,
    Admission,
    BucketLoader,
    Candidate,
    LimitSet,
    Scope,
    Strategies,
    choose,
    decide_strategies,
    running_counts,
    stored_limit,
    unique_duplicates,
)

WAITING = "('queued', 'scheduled')"
#: The states a unique key's scope covers (`blocked` is #19's: waiting for other jobs).
UNIQUE_STATES = {
    "waiting": "('queued', 'scheduled', 'blocked')",
    "active": "('queued', 'scheduled', 'blocked', 'running')",
}


def limit_set(db: sqlite3.Connection, cached: LimitSet) -> LimitSet:
    """The limits and paused queues; re-read only when their version moved."""
    version = int(db.execute("SELECT version FROM limits_version").fetchone()[0])
    if version == cached.version:
        return cached
    limits = {
        row[0]: stored_limit(row)
        for row in db.execute(
            "SELECT target, max_running, rate, per_s, strategy, updated_at FROM limits"
        )
    }
    paused = frozenset(row[0] for row in db.execute("SELECT queue FROM paused_queues"))
    return LimitSet(version, limits, paused)


def bump(db: sqlite3.Connection) -> None:
    db.execute("UPDATE limits_version SET version = version + 1")


def running(db: sqlite3.Connection) -> Counter[Scope]:
    return running_counts(
        db.execute(
            "SELECT queue, kind, concurrency_key, count(*) FROM jobs WHERE state = 'running'"
            " GROUP BY queue, kind, concurrency_key"
        )
    )


def bucket_loader(db: sqlite3.Connection) -> BucketLoader:
    def load(keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        marks = ",".join("?" * len(keys))
        rows = db.execute(f"SELECT key, tokens, at FROM buckets WHERE key IN ({marks})", keys)
        return {key: (tokens, at) for key, tokens, at in rows}

    return load


def write_buckets(db: sqlite3.Connection, rows: Sequence[tuple[str, float, float]]) -> None:
    db.executemany("INSERT OR REPLACE INTO buckets (key, tokens, at) VALUES (?,?,?)", rows)


def admission(db: sqlite3.Connection, limits: LimitSet, now: float) -> Admission:
    return Admission(limits, running(db), bucket_loader(db), now)


# -- claims --------------------------------------------------------------------------------------


def pick(
    db: sqlite3.Connection,
    limits: LimitSet,
    queues: Sequence[str],
    n: int,
    now: float,
    kinds: Sequence[str] | None,
    tag: str | None,
) -> list[str]:
    """The ids of up to n waiting jobs of `queues` the limits admit, in the order to claim
    them; takes their rate slots and moves their keys' turns (see limits.choose)."""
    admit = admission(db, limits, now)
    # Queues and kinds a limit closes entirely are left out of the reads below.
    open_queues = [q for q in queues if admit.blocked(q, "", None) is None]
    if not open_queues:
        return []
    closed_kinds = [
        lim.name
        for lim in limits.limits.values()
        if lim.scope == "kind" and admit.closed(lim, ("kind", lim.name))
    ]
    where = f"state IN {WAITING} AND queue IN ({','.join('?' * len(open_queues))}) AND run_at <= ?"
    params: list[Any] = [*open_queues, now]
    if kinds:
        where += f" AND kind IN ({','.join('?' * len(kinds))})"
        params.extend(kinds)
    if closed_kinds:
        where += f" AND kind NOT IN ({','.join('?' * len(closed_kinds))})"
        params.extend(closed_kinds)
    if tag is not None:
        where += " AND id IN (SELECT job_id FROM job_tags WHERE tag = ?)"
        params.append(tag)
    keyed = [k for k in limits.keyed_kinds() if k not in closed_kinds and (not kinds or k in kinds)]
    plain_where = where
    if keyed:
        plain_where += (
            f" AND NOT (concurrency_key IS NOT NULL AND kind IN ({','.join('?' * len(keyed))}))"
        )
    candidates = [
        Candidate(*row)
        for row in db.execute(
            "SELECT id, queue, kind, concurrency_key, priority, run_at FROM jobs"
            f" WHERE {plain_where} ORDER BY priority DESC, run_at, id LIMIT ?",
            [*params, *keyed, n],
        )
    ]
    last_started: dict[tuple[str, str], float] = {}
    for kind in keyed:
        candidates += _keyed_candidates(db, admit, limits, kind, where, params, n, last_started)
    chosen = choose(candidates, n, admit, last_started)
    write_buckets(db, admit.changed_buckets())
    db.executemany(
        "UPDATE limit_keys SET last_started = ? WHERE kind = ? AND key = ?",
        [(now, c.kind, c.key) for c in chosen if c.key is not None and c.kind in keyed],
    )
    return [c.id for c in chosen]


def _keyed_candidates(
    db: sqlite3.Connection,
    admit: Admission,
    limits: LimitSet,
    kind: str,
    where: str,
    params: list[Any],
    n: int,
    last_started: dict[tuple[str, str], float],
) -> list[Candidate]:
    """The next jobs of a per-key-limited kind's keys, least recently started key first,
    until n are found: each key gives at most what its limit leaves it."""
    limit = limits.limits[f"key:{kind}"]
    found: list[Candidate] = []
    gone: list[tuple[str, str]] = []
    keys = db.execute(
        "SELECT key, last_started FROM limit_keys WHERE kind = ? ORDER BY last_started, key"
        " LIMIT ?",
        (kind, KEY_SCAN),
    ).fetchall()
    if limit.rate is not None:
        admit.prefetch(("key", kind, key) for key, _ in keys)
    # Each key gives its share of n, so one claim takes from n keys before a second job of any.
    share = -(-n // max(1, len(keys)))
    for key, started in keys:
        if len(found) >= n:
            break
        if started is not None:
            last_started[kind, key] = started
        scope = ("key", kind, key)
        room = share
        if limit.max_running is not None:
            room = min(room, limit.max_running - admit.running[scope])
        if limit.rate is not None:
            room = min(room, int(admit.tokens(limit, scope)))
        if room <= 0:
            continue
        rows = db.execute(
            "SELECT id, queue, kind, concurrency_key, priority, run_at FROM jobs"
            f" WHERE kind = ? AND concurrency_key = ? AND finished_at IS NULL AND {where}"
            " ORDER BY priority DESC, run_at, id LIMIT ?",
            [kind, key, *params, room],
        ).fetchall()
        found.extend(Candidate(*row) for row in rows)
        if not rows and admit.running[scope] == 0 and not _unfinished(db, kind, key):
            gone.append((kind, key))
    db.executemany("DELETE FROM limit_keys WHERE kind = ? AND key = ?", gone)
    return found


def _unfinished(db: sqlite3.Connection, kind: str, key: str) -> bool:
    row = db.execute(
        "SELECT 1 FROM jobs WHERE kind = ? AND concurrency_key = ? AND finished_at IS NULL LIMIT 1",
        (kind, key),
    ).fetchone()
    return row is not None


def register_keys(db: sqlite3.Connection, pairs: Sequence[tuple[str, str]]) -> None:
    """Enter (kind, key) pairs that now have unfinished jobs (submit, retry)."""
    db.executemany("INSERT OR IGNORE INTO limit_keys (kind, key) VALUES (?,?)", pairs)


# -- submits -------------------------------------------------------------------------------------


def unique_matches(db: sqlite3.Connection, specs: Sequence[JobSpec], now: float) -> dict[str, str]:
    """spec id -> the id of the job a unique spec duplicates (see limits.unique_duplicates)."""

    def find(key: str, scope: UniqueScope, window_s: float | None) -> str | None:
        sql = (
            "SELECT id FROM jobs WHERE unique_key = ? AND finished_at IS NULL"
            f" AND state IN {UNIQUE_STATES[scope]}"
        )
        params: list[Any] = [key]
        if window_s is not None:
            sql += " AND created_at > ?"
            params.append(now - window_s)
        row = db.execute(sql + " ORDER BY created_at DESC LIMIT 1", params).fetchone()
        return None if row is None else str(row[0])

    return unique_duplicates(specs, find)


def apply_strategies(
    db: sqlite3.Connection, specs: Sequence[JobSpec], limits: LimitSet
) -> Strategies:
    """The cancel strategies' decisions for new specs (see limits.decide_strategies)."""

    def active(kind: str, key: str) -> list[tuple[str, bool, bool]]:
        return [
            (row[0], row[1] == "running", bool(row[2]))
            for row in db.execute(
                "SELECT id, state, cancel_requested FROM jobs WHERE kind = ?"
                " AND concurrency_key = ? AND finished_at IS NULL"
                " AND state IN ('queued', 'scheduled', 'running') ORDER BY created_at, id",
                (kind, key),
            )
        ]

    return decide_strategies(specs, limits, active)
