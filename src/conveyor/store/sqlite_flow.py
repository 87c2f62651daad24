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

import orjson

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
    key_rooms,
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
    last_started: dict[tuple[str, str], float] = {}
    candidates: list[Candidate] = []
    for kind in keyed:
        candidates += _keyed_candidates(db, admit, kind, where, params, n, last_started)
    candidates += _plain_candidates(db, where, params, keyed, n, full=len(candidates) < n)
    chosen = choose(candidates, n, admit, last_started)
    write_buckets(db, admit.changed_buckets())
    for kind in keyed:
        turned = [c.key for c in chosen if c.kind == kind and c.key is not None]
        if turned:
            db.execute(
                "UPDATE limit_keys SET last_started = ? WHERE kind = ?"
                " AND key IN (SELECT value FROM json_each(?))",
                (now, kind, _json(turned)),
            )
    return [c.id for c in chosen]


def _json(values: Sequence[str]) -> str:
    return orjson.dumps(list(values)).decode()


def _plain_candidates(
    db: sqlite3.Connection,
    where: str,
    params: list[Any],
    keyed: Sequence[str],
    n: int,
    full: bool,
) -> list[Candidate]:
    """Up to n waiting jobs in claim order that no per-key limit orders. Unless `full`, only
    among the first n waiting jobs: when the keyed kinds give a claim enough jobs, the jobs
    behind a long keyed backlog are younger than what it takes anyway, and walking the whole
    backlog for them would cost every claim."""
    keyed_sql = ""
    if keyed:
        keyed_sql = f" NOT (concurrency_key IS NOT NULL AND kind IN ({','.join('?' * len(keyed))}))"
    columns = "id, queue, kind, concurrency_key, priority, run_at"
    order = "ORDER BY priority DESC, run_at, id"
    if full or not keyed:
        sql = f"SELECT {columns} FROM jobs WHERE {where}{' AND' + keyed_sql if keyed else ''}"
        rows = db.execute(f"{sql} {order} LIMIT ?", [*params, *keyed, n])
    else:
        window = f"SELECT {columns} FROM jobs WHERE {where} {order} LIMIT ?"
        rows = db.execute(f"SELECT * FROM ({window}) WHERE{keyed_sql}", [*params, n, *keyed])
    found = [Candidate(*row) for row in rows]
    found.sort(key=lambda c: (-c.priority, c.run_at, c.id))
    return found


def _keyed_candidates(
    db: sqlite3.Connection,
    admit: Admission,
    kind: str,
    where: str,
    params: list[Any],
    n: int,
    last_started: dict[tuple[str, str], float],
) -> list[Candidate]:
    """The next jobs of a per-key-limited kind's keys, least recently started key first,
    until n are found: each key gives at most what its limit leaves it."""
    found: list[Candidate] = []
    gone: list[tuple[str, str]] = []
    keys = db.execute(
        "SELECT key, last_started FROM limit_keys WHERE kind = ? ORDER BY last_started, key"
        " LIMIT ?",
        (kind, KEY_SCAN),
    ).fetchall()
    rooms = key_rooms(admit, kind, keys, n, last_started)
    share = max(rooms.values(), default=0)
    # The keys' next jobs, a batch of keys per statement (each key's from the keyed index),
    # until n are found.
    batch = list(rooms)
    sql = (
        "SELECT j.id, j.queue, j.kind, j.concurrency_key, j.priority, j.run_at"
        " FROM json_each(?) AS k CROSS JOIN jobs AS j WHERE j.id IN (SELECT id FROM jobs"
        f"  WHERE kind = ? AND concurrency_key = k.value AND finished_at IS NULL AND {where}"
        "  ORDER BY priority DESC, run_at, id LIMIT ?)"
    )
    for start in range(0, len(batch), max(n, 50)):
        if len(found) >= n:
            break
        part = batch[start : start + max(n, 50)]
        rows = db.execute(sql, [_json(part), kind, *params, share]).fetchall()
        taken: dict[str, int] = {}
        for row in rows:
            if taken.get(row[3], 0) < rooms[row[3]]:
                taken[row[3]] = taken.get(row[3], 0) + 1
                found.append(Candidate(*row))
        for key in part:
            idle = key not in taken and admit.running["key", kind, key] == 0
            if idle and not _unfinished(db, kind, key):
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
