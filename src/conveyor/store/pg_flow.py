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
from dataclasses import dataclass
from datetime import datetime
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
    return running_counts(conn.execute(RUNNING.encode()).fetchall())


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
        conn.execute(WRITE_BUCKETS.encode(), _bucket_params(rows))


def admission(conn: Conn, limits: LimitSet, now: float) -> Admission:
    return Admission(limits, running(conn), bucket_loader(conn), now)


# -- claims --------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """What a claim under limits reads first, in one round trip (`snapshot`)."""

    version: int
    now: float
    running: Counter[Scope]
    buckets: dict[str, tuple[float, float]]
    keys: dict[str, list[tuple[str, float | None]]]  # kind -> its keys in turn order


def snapshot(conn: Conn, limits: LimitSet, now: datetime | None) -> Snapshot:
    """Begin the claim's transaction, take LIMITS_LOCK and read the limits' version, the
    time, the running counts, the rate buckets and the keys of each per-key-limited kind, all
    in one round trip (for the limits the caller believes current: check `version`)."""
    keyed = limits.keyed_kinds()
    rated = any(limit.rate is not None for limit in limits.limits.values())
    with conn.pipeline():
        conn.execute(b"BEGIN")
        conn.execute(b"SELECT pg_advisory_xact_lock(%s)", (LIMITS_LOCK,))
        version_cur = conn.execute(VERSION.encode())
        now_cur = conn.execute(
            b"SELECT extract(epoch FROM coalesce(%(now)s::timestamptz,"
            b" statement_timestamp()))::float8",
            {"now": now},
        )
        running_cur = conn.execute(RUNNING.encode())
        bucket_cur = rated and conn.execute(
            b"SELECT key, tokens, at FROM conveyor_buckets WHERE key >= 'limit:' AND key < 'limit;'"
        )
        key_curs = [
            (kind, conn.execute(
                b"SELECT key, last_started FROM conveyor_limit_keys WHERE kind = %(kind)s"
                b" ORDER BY last_started NULLS FIRST, key LIMIT %(scan)s",
                {"kind": kind, "scan": KEY_SCAN},
            ))
            for kind in keyed
        ]  # fmt: skip
    [(version,)] = version_cur.fetchall()
    [(at,)] = now_cur.fetchall()
    buckets = {k: (t, a) for k, t, a in bucket_cur.fetchall()} if bucket_cur else {}
    return Snapshot(
        int(version), float(at), running_counts(running_cur.fetchall()), buckets,
        {kind: [(k, t) for k, t in cur.fetchall()] for kind, cur in key_curs},
    )  # fmt: skip


Statements = list[tuple[str, dict[str, Any] | None]]


def pick(
    conn: Conn,
    limits: LimitSet,
    snap: Snapshot,
    queues: Sequence[str],
    n: int,
    kinds: Sequence[str] | None,
    tag: str | None,
) -> tuple[list[str], Statements]:
    """The ids of up to n waiting jobs of `queues` the limits admit, in the order to claim
    them (limits.choose), and the writes that take their rate slots and move their keys'
    turns, to commit with the claim. The caller holds LIMITS_LOCK (`snapshot`)."""
    now = snap.now
    admit = Admission(limits, snap.running,
                      lambda keys: {k: snap.buckets[k] for k in keys if k in snap.buckets},
                      now)  # fmt: skip
    open_queues = [q for q in queues if admit.blocked(q, "", None) is None]
    if not open_queues:
        return [], []
    closed = [
        lim.name
        for lim in limits.limits.values()
        if lim.scope == "kind" and admit.closed(lim, ("kind", lim.name))
    ]
    keyed = [k for k in limits.keyed_kinds() if k not in closed and (not kinds or k in kinds)]
    # One queue: an equality keeps the ready index's order (ANY would sort every waiting job).
    queue = "queue = %(queue)s" if len(open_queues) == 1 else "queue = ANY(%(queues)s::text[])"
    where = (
        f"state IN {WAITING} AND {queue} AND run_at <= to_timestamp(%(now)s)"
        " AND NOT kind = ANY(%(closed)s::text[])"
    )
    params: dict[str, Any] = {"queues": open_queues, "queue": open_queues[0], "now": now,
                              "closed": closed, "keyed": keyed, "n": n}  # fmt: skip
    where += claim_filter(kinds, tag, params)
    last_started: dict[tuple[str, str], float] = {}
    writes: Statements = []
    candidates = _candidates(conn, admit, snap, keyed, where, params, last_started, writes)
    chosen = choose(candidates, n, admit, last_started)
    changed = admit.changed_buckets()
    if changed:
        writes.append((WRITE_BUCKETS, _bucket_params(changed)))
    turns = [c for c in chosen if c.key is not None and c.kind in keyed]
    if turns:
        writes.append((
            "UPDATE conveyor_limit_keys k SET last_started = %(now)s"
            " FROM unnest(%(kind)s::text[], %(key)s::text[]) AS t(kind, key)"
            " WHERE k.kind = t.kind AND k.key = t.key",
            {"now": now, "kind": [c.kind for c in turns], "key": [c.key for c in turns]},
        ))  # fmt: skip
    return [c.id for c in chosen], writes


def _candidates(
    conn: Conn,
    admit: Admission,
    snap: Snapshot,
    keyed: Sequence[str],
    where: str,
    params: dict[str, Any],
    last_started: dict[tuple[str, str], float],
    writes: Statements,
) -> list[Candidate]:
    """The claim's candidates: each per-key-limited kind's next jobs, key batch by key batch
    in turn order, and the jobs no per-key limit orders (among the first n waiting jobs, or
    all of them when the keyed kinds do not give n). The first key batch of every kind and the
    first plain read share one round trip."""
    n = int(params["n"])
    rooms = {kind: key_rooms(admit, kind, snap.keys.get(kind, []), n, last_started)
             for kind in keyed}  # fmt: skip
    step = max(n, 50)
    keyed_sql = _KEYED.replace("{where}", where).encode()
    pending = {kind: list(r) for kind, r in rooms.items()}
    found: dict[str, list[Candidate]] = {kind: [] for kind in keyed}
    plain: list[Candidate] | None = None
    while True:
        batches = {kind: keys[:step] for kind, keys in pending.items()
                   if keys and len(found[kind]) < n}  # fmt: skip
        for kind in batches:
            pending[kind] = pending[kind][step:]
        with conn.pipeline():
            curs = [(kind, part, conn.execute(keyed_sql, {
                **params, "kind": kind, "keys": part, "room": [rooms[kind][k] for k in part],
            })) for kind, part in batches.items()]  # fmt: skip
            plain_cur = None
            if plain is None:
                plain_cur = conn.execute(_plain_sql(where, False, bool(keyed)), params)
        if plain_cur is not None:
            plain = [Candidate(*row[:6]) for row in plain_cur.fetchall()]
        for kind, part, cur in curs:
            rows = cur.fetchall()
            found[kind].extend(Candidate(*row) for row in rows)
            seen = {row[3] for row in rows}
            idle = [k for k in part if k not in seen and admit.running["key", kind, k] == 0]
            if idle:  # keys with no unfinished job left leave the turn order
                writes.append((_DROP_KEYS, {"kind": kind, "keys": idle}))
        if not batches:
            break
    keyed_found = [c for cands in found.values() for c in cands]
    if keyed and len(keyed_found) < n:  # not enough keyed jobs: every plain one may go
        plain = [
            Candidate(*row[:6])
            for row in conn.execute(_plain_sql(where, True, True), params).fetchall()
        ]
    assert plain is not None
    plain.sort(key=lambda c: (-c.priority, c.run_at, c.id))
    return keyed_found + plain


def _bucket_params(rows: Sequence[tuple[str, float, float]]) -> dict[str, Any]:
    return {"k": [r[0] for r in rows], "t": [r[1] for r in rows], "a": [r[2] for r in rows]}


def _plain_sql(where: str, full: bool, keyed: bool) -> bytes:
    """Waiting jobs in claim order that no per-key limit orders, at most n. Unless `full`,
    only among the first n waiting jobs: when the keyed kinds give a claim enough jobs, the
    jobs behind a long keyed backlog are younger than what it takes anyway, and walking the
    whole backlog for them would cost every claim."""
    plain = "NOT (concurrency_key IS NOT NULL AND kind = ANY(%(keyed)s::text[]))"
    order = "ORDER BY priority DESC, run_at, id"
    if full or not keyed:
        sql = f"SELECT {_CANDIDATE} FROM conveyor_jobs WHERE {where} AND {plain} {order}"
        return (sql + " LIMIT %(n)s").encode()
    return (
        f"SELECT * FROM (SELECT {_CANDIDATE}, {plain} AS plain FROM conveyor_jobs"
        f" WHERE {where} {order} LIMIT %(n)s) w WHERE plain"
    ).encode()


_KEYED = (
    "SELECT j.* FROM unnest(%(keys)s::text[], %(room)s::int[]) WITH ORDINALITY"
    " AS k(key, room, ord) CROSS JOIN LATERAL ("
    f" SELECT {_CANDIDATE} FROM conveyor_jobs WHERE kind = %(kind)s"
    "  AND concurrency_key = k.key AND finished_at IS NULL AND {where}"
    "  ORDER BY priority DESC, run_at, id LIMIT k.room) j ORDER BY k.ord"
)
_DROP_KEYS = (
    "DELETE FROM conveyor_limit_keys k WHERE kind = %(kind)s"
    " AND key = ANY(%(keys)s::text[]) AND NOT EXISTS (SELECT 1 FROM conveyor_jobs"
    "  WHERE kind = k.kind AND concurrency_key = k.key AND finished_at IS NULL)"
)
RUNNING = (
    "SELECT queue, kind, concurrency_key, count(*)::int FROM conveyor_jobs"
    " WHERE state = 'running' GROUP BY queue, kind, concurrency_key"
)
WRITE_BUCKETS = (
    "INSERT INTO conveyor_buckets (key, tokens, at)"
    " SELECT * FROM unnest(%(k)s::text[], %(t)s::float8[], %(a)s::float8[])"
    " ON CONFLICT (key) DO UPDATE SET tokens = excluded.tokens, at = excluded.at"
)


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


def claim_filter(kinds: Sequence[str] | None, tag: str | None, params: dict[str, Any]) -> str:
    """The SQL a claim adds for `kinds` / `tag` (empty when neither), its values put in
    `params`: one text for the plain claim and the limited one."""
    where = ""
    if kinds:
        where += " AND kind = ANY(%(kinds)s::text[])"
        params["kinds"] = list(kinds)
    if tag is not None:
        where += " AND id IN (SELECT job_id FROM conveyor_job_tags WHERE tag = %(tag)s)"
        params["tag"] = tag
    return where
