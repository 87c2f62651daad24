"""The PostgreSQL store's blocked jobs: dependency edges, release and rewind (store/deps.py).

Exactly once under concurrency rests on two things. A new edge's upstream is read `FOR SHARE`
in the transaction that adds the edge, so a settlement of that upstream either commits first
(the reader then sees it final and adds no edge) or waits until the edge is committed (its
release, a later statement of its own transaction, then sees the edge). And a release counts a
dependent down and flips it in one UPDATE of its row: concurrent releases of the same
dependent serialize on the row lock, and only the one that reaches zero queues it. Dependents
are locked in id order first, so two releases cannot deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from conveyor.models import JobState
from conveyor.store.pg_listen import CHANNEL

NOW = "coalesce(%(now)s::timestamptz, statement_timestamp())"
Statement = tuple[str, dict[str, Any] | None]

ADD_EDGES = (
    "INSERT INTO conveyor_job_deps (upstream, dependent)"
    " SELECT * FROM unnest(%(up)s::text[], %(down)s::text[]) ON CONFLICT DO NOTHING"
)

RELEASE = (
    "WITH gone AS ("
    " DELETE FROM conveyor_job_deps d USING conveyor_jobs u"
    " WHERE d.upstream = ANY(%(final)s::text[]) AND u.id = d.upstream"
    "  AND u.state IN ('succeeded', 'failed', 'cancelled') RETURNING d.dependent"
    "), counts AS (SELECT dependent, count(*)::int AS n FROM gone GROUP BY dependent"
    "), locked AS MATERIALIZED ("
    " SELECT j.id, c.n FROM conveyor_jobs j JOIN counts c ON c.dependent = j.id"
    "  WHERE j.state = 'blocked' ORDER BY j.id FOR UPDATE OF j"
    "), released AS ("
    f" UPDATE conveyor_jobs j SET pending = j.pending - l.n, updated_at = {NOW},"
    "  state = CASE WHEN j.pending - l.n > 0 THEN j.state"
    f"   WHEN j.run_at > {NOW} THEN 'scheduled' ELSE 'queued' END"
    " FROM locked l WHERE j.id = l.id AND j.state = 'blocked'"
    " RETURNING j.id, j.state, j.run_at, j.queue"
    "), events AS ("
    " INSERT INTO conveyor_events (job_id, at, type, data)"
    f" SELECT id, {NOW}, 'state', (jsonb_build_object('state', state, 'released', true)"
    "  || CASE WHEN state = 'scheduled' THEN jsonb_build_object('run_at',"
    "  extract(epoch FROM run_at)) ELSE '{}'::jsonb END)::json"
    "  FROM released WHERE state <> 'blocked' ORDER BY id"
    f") SELECT pg_notify('{CHANNEL}', q)"
    " FROM (SELECT DISTINCT queue AS q FROM released WHERE state = 'queued') s"
)


def release(final_ids: Sequence[str], now: Any) -> Statement:
    """The statement that releases the dependents of jobs that just became final (run it
    after the statements that made them final, in the same transaction). Ids of jobs that
    are not final (a settlement whose lease was stale) release nothing."""
    return RELEASE, {"final": list(final_ids), "now": now}


def add_edges(edges: Sequence[tuple[str, str]]) -> Statement:
    return ADD_EDGES, {"up": [e[0] for e in edges], "down": [e[1] for e in edges]}


def states(conn: psycopg.Connection[Any], ids: Sequence[str]) -> dict[str, JobState]:
    """The states of the stored jobs among `ids`, their rows share-locked until commit (so
    none of them can end unseen before an edge to it is committed)."""
    if not ids:
        return {}
    rows = conn.execute(
        b"SELECT id, state FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])"
        b" ORDER BY id FOR SHARE",
        {"ids": sorted(ids)},
    ).fetchall()
    return {job_id: JobState(state) for job_id, state in rows}


WAIT = (
    "WITH kids AS MATERIALIZED ("
    " SELECT id FROM conveyor_jobs WHERE id = ANY(%(kids)s::text[])"
    "  AND state NOT IN ('succeeded', 'failed', 'cancelled')"
    "), edges AS ("
    " INSERT INTO conveyor_job_deps (upstream, dependent) SELECT id, %(id)s FROM kids"
    "  ON CONFLICT DO NOTHING"
    "), waiting AS ("
    " UPDATE conveyor_jobs SET continuation = %(continuation)s::json,"
    "  pending = (SELECT count(*) FROM kids),"
    "  state = CASE WHEN EXISTS (SELECT 1 FROM kids) THEN 'blocked' ELSE 'queued' END"
    " WHERE id = %(id)s AND state = 'blocked' RETURNING state, attempt, pending, queue"
    "), events AS ("
    " INSERT INTO conveyor_events (job_id, at, type, data)"
    f" SELECT %(id)s, {NOW}, 'state', CASE WHEN state = 'blocked'"
    "  THEN json_build_object('state', state, 'attempt', attempt, 'pending', pending)"
    "  ELSE json_build_object('state', state, 'attempt', attempt) END FROM waiting"
    f") SELECT pg_notify('{CHANNEL}', queue) FROM waiting WHERE state = 'queued'"
)


def wait(job_id: str, children: Sequence[str], continuation: str, now: Any) -> Statement:
    """After a WAIT's settle update (which leaves the job `blocked`) and its children's
    insert: block the job on the children that are not final, or queue it if none is."""
    return WAIT, {"id": job_id, "kids": list(children), "continuation": continuation, "now": now}


REWIND = (
    "UPDATE conveyor_jobs j SET state = u.state, pending = u.pending, attempt = 0,"
    f" run_at = {NOW}, cancel_requested = false, finished_at = NULL, result = NULL,"
    " progress = NULL, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
    f" updated_at = {NOW}"
    " FROM unnest(%(id)s::text[], %(state)s::text[], %(pending)s::int[]) AS u(id, state, pending)"
    " WHERE j.id = u.id"
)
