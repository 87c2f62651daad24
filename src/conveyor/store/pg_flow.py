"""PostgreSQL side of flow control (#20): the queries behind limits, paused queues, token
buckets, unique jobs and the cancel strategies. Every function runs inside the caller's open
transaction on `conn`.

Claims under limits hold one transaction-level advisory lock (`LIMITS_LOCK`) from reading the
running counts to committing what they took, so two hosts never both admit the last free
place of a limit; claims when nothing is limited never take it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg

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

Conn = psycopg.Connection[Any]

#: The advisory lock limited claims serialize on (an arbitrary constant of conveyor's).
LIMITS_LOCK = 0x636F6E76_6C696D
WAITING = "('queued', 'scheduled')"
UNIQUE_STATES = {
    "waiting": "('queued', 'scheduled', 'blocked')",
    "active": "('queued', 'scheduled', 'blocked', 'running')",
}
_CANDIDATE = "id, queue, kind, concurrency_key, priority, extract(epoch FROM run_at)::float8"


VERSION = "SELECT version FROM conveyor_limits_version"


def version(conn: Conn) -> int:
    row = conn.execute(VERSION.encode()).fetchone()
    return int(row[0]) if row else 0


def limit_set(conn: Conn, cached: LimitSet) -> LimitSet:
    """The limits and paused queues; re-read only when their version moved."""
    current = version(conn)
    if current == cached.version:
        return cached
    rows = conn.execute(
        b"SELECT target, max_running, rate, per_s, strategy, updated_at FROM conveyor_limits"
    ).fetchall()
    paused = conn.execute(b"SELECT queue FROM conveyor_paused_queues").fetchall()
    return LimitSet(current, {row[0]: stored_limit(row) for row in rows},
                    frozenset(row[0] for row in paused))  # fmt: skip


BUMP = "UPDATE conveyor_limits_version SET version = version + 1"


def running(conn: Conn) -> Counter[Scope]:
    return running_counts(
        conn.execute(
            b"SELECT queue, kind, concurrency_key, count(*)::int FROM conveyor_jobs"
            b" WHERE state = 'running' GROUP BY queue, kind, concurrency_key"
        ).fetchall()
    )


def bucket_loader(conn: Conn) -> BucketLoader:
    def load(keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        rows = conn.execute(
            b"SELECT key, tokens, at FROM conveyor_buckets WHERE key = ANY(%(keys)s::text[])",
            {"keys": list(keys)},
        ).fetchall()
        return {key: (tokens, at) for key, tokens, at in rows}

    return load


def write_buckets(conn: Conn, rows: Sequence[tuple[str, float, float]]) -> None:
    if rows:
        conn.execute(
            b"INSERT INTO conveyor_buckets (key, tokens, at)"
            b" SELECT * FROM unnest(%(k)s::text[], %(t)s::float8[], %(a)s::float8[])"
            b" ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at",
            {"k": [r[0] for r in rows], "t": [r[1] for r in rows], "a": [r[2] for r in rows]},
        )


def admission(conn: Conn, limits: LimitSet, now: float) -> Admission:
    return Admission(limits, running(conn), bucket_loader(conn), now)


# -- claims --------------------------------------------------------------------------------------


def pick(
    conn: Conn,
    limits: LimitSet,
    queues: Sequence[str],
    n: int,
    now: float,
    kinds: Sequence[str] | None,
    tag: str | None,
) -> list[str]:
    """The ids of up to n waiting jobs of `queues` the limits admit, in the order to claim
    them; takes their rate slots and moves their keys' turns (see limits.choose). The caller
    holds LIMITS_LOCK."""
    admit = admission(conn, limits, now)
    open_queues = [q for q in queues if admit.blocked(q, "", None) is None]
    if not open_queues:
        return []
    closed = [
        lim.name
        for lim in limits.limits.values()
        if lim.scope == "kind" and admit.closed(lim, ("kind", lim.name))
    ]
    keyed = [k for k in limits.keyed_kinds() if k not in closed and (not kinds or k in kinds)]
    where = (
        f"state IN {WAITING} AND queue = ANY(%(queues)s::text[])"
        " AND run_at <= to_timestamp(%(now)s) AND NOT kind = ANY(%(closed)s::text[])"
    )
    params: dict[str, Any] = {"queues": open_queues, "now": now, "closed": closed,
                              "keyed": keyed, "n": n}  # fmt: skip
    if kinds:
        where += " AND kind = ANY(%(kinds)s::text[])"
        params["kinds"] = list(kinds)
    if tag is not None:
        where += " AND id IN (SELECT job_id FROM conveyor_job_tags WHERE tag = %(tag)s)"
        params["tag"] = tag
    last_started: dict[tuple[str, str], float] = {}
    candidates: list[Candidate] = []
    for kind in keyed:
        candidates += _keyed_candidates(conn, admit, kind, where, params, n, last_started)
    candidates += _plain_candidates(conn, where, params, n, full=len(candidates) < n)
    chosen = choose(candidates, n, admit, last_started)
    write_buckets(conn, admit.changed_buckets())
    turns = [c for c in chosen if c.key is not None and c.kind in keyed]
    if turns:
        conn.execute(
            b"UPDATE conveyor_limit_keys k SET last_started = %(now)s"
            b" FROM unnest(%(kind)s::text[], %(key)s::text[]) AS t(kind, key)"
            b" WHERE k.kind = t.kind AND k.key = t.key",
            {"now": now, "kind": [c.kind for c in turns], "key": [c.key for c in turns]},
        )
    return [c.id for c in chosen]


def _plain_candidates(
    conn: Conn, where: str, params: dict[str, Any], n: int, full: bool
) -> list[Candidate]:
    """Up to n waiting jobs in claim order that no per-key limit orders. Unless `full`, only
    among the first n waiting jobs: when the keyed kinds give a claim enough jobs, the jobs
    behind a long keyed backlog are younger than what it takes anyway, and walking the whole
    backlog for them would cost every claim."""
    plain = "NOT (concurrency_key IS NOT NULL AND kind = ANY(%(keyed)s::text[]))"
    order = "ORDER BY priority DESC, run_at, id"
    if full or not params["keyed"]:
        sql = (
            f"SELECT {_CANDIDATE} FROM conveyor_jobs WHERE {where} AND {plain} {order} LIMIT %(n)s"
        )
    else:
        sql = (
            f"SELECT * FROM (SELECT {_CANDIDATE}, concurrency_key IS NOT NULL"
            f" AND kind = ANY(%(keyed)s::text[]) AS keyed FROM conveyor_jobs WHERE {where}"
            f" {order} LIMIT %(n)s) w WHERE NOT keyed"
        )
    found = [Candidate(*row[:6]) for row in conn.execute(sql.encode(), params).fetchall()]
    found.sort(key=lambda c: (-c.priority, c.run_at, c.id))
    return found


def _keyed_candidates(
    conn: Conn,
    admit: Admission,
    kind: str,
    where: str,
    params: dict[str, Any],
    n: int,
    last_started: dict[tuple[str, str], float],
) -> list[Candidate]:
    """The next jobs of a per-key-limited kind's keys in turn order (limits.key_rooms), a
    batch of keys per statement, until n are found."""
    keys = conn.execute(
        b"SELECT key, last_started FROM conveyor_limit_keys WHERE kind = %(kind)s"
        b" ORDER BY last_started NULLS FIRST, key LIMIT %(scan)s",
        {"kind": kind, "scan": KEY_SCAN},
    ).fetchall()
    rooms = key_rooms(admit, kind, keys, n, last_started)
    found: list[Candidate] = []
    sql = (
        f"SELECT j.* FROM unnest(%(keys)s::text[], %(room)s::int[]) WITH ORDINALITY"
        " AS k(key, room, ord) CROSS JOIN LATERAL ("
        f" SELECT {_CANDIDATE} FROM conveyor_jobs WHERE kind = %(kind)s"
        f"  AND concurrency_key = k.key AND finished_at IS NULL AND {where}"
        "  ORDER BY priority DESC, run_at, id LIMIT k.room) j ORDER BY k.ord"
    ).encode()
    batch = list(rooms)
    for start in range(0, len(batch), max(n, 50)):
        if len(found) >= n:
            break
        part = batch[start : start + max(n, 50)]
        rows = conn.execute(
            sql, {**params, "kind": kind, "keys": part, "room": [rooms[k] for k in part]}
        ).fetchall()
        found.extend(Candidate(*row) for row in rows)
        seen = {row[3] for row in rows}
        idle = [k for k in part if k not in seen and admit.running["key", kind, k] == 0]
        if idle:  # keys with no unfinished job left leave the turn order
            conn.execute(
                b"DELETE FROM conveyor_limit_keys k WHERE kind = %(kind)s"
                b" AND key = ANY(%(keys)s::text[]) AND NOT EXISTS (SELECT 1 FROM conveyor_jobs"
                b"  WHERE kind = k.kind AND concurrency_key = k.key AND finished_at IS NULL)",
                {"kind": kind, "keys": idle},
            )
    return found


REGISTER_KEYS = (
    "INSERT INTO conveyor_limit_keys (kind, key)"
    " SELECT DISTINCT * FROM unnest(%(rk_kind)s::text[], %(rk_key)s::text[])"
    " ON CONFLICT DO NOTHING"
)


# -- submits -------------------------------------------------------------------------------------


def unique_matches(conn: Conn, specs: Sequence[JobSpec], now: float) -> dict[str, str]:
    """spec id -> the id of the job a unique spec duplicates (see limits.unique_duplicates);
    the caller holds the advisory locks of the unique keys."""

    def find(key: str, scope: UniqueScope, window_s: float | None) -> str | None:
        row = conn.execute(
            "SELECT id FROM conveyor_jobs WHERE unique_key = %(key)s AND finished_at IS NULL"
            f" AND state IN {UNIQUE_STATES[scope]}"
            " AND (%(since)s::float8 IS NULL OR created_at > to_timestamp(%(since)s))"
            " ORDER BY created_at DESC LIMIT 1".encode(),
            {"key": key, "since": None if window_s is None else now - window_s},
        ).fetchone()
        return None if row is None else str(row[0])

    return unique_duplicates(specs, find)


def apply_strategies(conn: Conn, specs: Sequence[JobSpec], limits: LimitSet) -> Strategies:
    """The cancel strategies' decisions for new specs (see limits.decide_strategies); the
    caller holds the advisory locks of the specs' keys."""

    def active(kind: str, key: str) -> list[tuple[str, bool, bool]]:
        rows = conn.execute(
            b"SELECT id, state = 'running', cancel_requested FROM conveyor_jobs"
            b" WHERE kind = %(kind)s AND concurrency_key = %(key)s AND finished_at IS NULL"
            b" AND state IN ('queued', 'scheduled', 'running') ORDER BY created_at, id",
            {"kind": kind, "key": key},
        ).fetchall()
        return [(row[0], bool(row[1]), bool(row[2])) for row in rows]

    return decide_strategies(specs, limits, active)


def lock_names(specs: Sequence[JobSpec]) -> list[str]:
    """Advisory lock names (beside idempotency keys) a submit of these specs takes: its
    unique keys and its concurrency keys, so concurrent submits decide one after another."""
    names = {f"\x1funique:{s.unique_key}" for s in specs if s.unique_key is not None}
    names |= {
        f"\x1fkey:{s.kind}:{s.concurrency_key}" for s in specs if s.concurrency_key is not None
    }
    return sorted(names)
