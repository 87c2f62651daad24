"""PostgreSQL store: many machines share one database.

Semantics mirror the SQLite reference store exactly (the decisions come from `store.rules`);
what differs is how concurrency is handled:

- Claims pick rows with `FOR UPDATE SKIP LOCKED` inside a materialized CTE, so concurrent
  workers never wait on each other and `LIMIT` is honoured (the planner cannot turn the pick
  into a nested loop that updates more rows than asked).
- No global lock: event seqs may commit out of order under concurrency, so `feed()` reads in
  (transaction id, seq) order up to the oldest running transaction: a gap-free outbox.
  Statements of a transaction are pipelined (one round trip), except in settle/cancel/retry,
  which read the row `FOR UPDATE`, decide with `store.rules`, then write.
- Time is the database server's clock (`statement_timestamp()`), never a worker's, unless a
  clock is injected (tests); then every timestamp comes from it.
- A lost connection raises `StoreUnavailableError` (callers retry); the pool replaces broken
  connections in the background with backoff.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from conveyor import errors
from conveyor.clock import Clock
from conveyor.models import (
    Job,
    JobError,
    JobEvent,
    JobFilter,
    JobPage,
    JobState,
    KindInfo,
    Lease,
    Limit,
    Progress,
    QueueStats,
    WorkerInfo,
)
from conveyor.store import deps, pg_deps, pg_flow, pg_migrations, rules
from conveyor.store.base import Beat, BeatStatus, JobSpec, Settlement, batch_keys, read_kinds
from conveyor.store.limits import (
    LimitSet,
    QuietReads,
    Strategies,
    limited_error,
    purged_error,
    take,
)
from conveyor.store.pg_deadline import CallDeadlines
from conveyor.store.pg_listen import CHANNEL, Listener
from conveyor.store.rules import Outcome

log = logging.getLogger(__name__)

Conn = psycopg.Connection[Any]
Row = tuple[Any, ...]

JOB_COLUMNS = (
    "id, kind, queue, state, input, priority, run_at, attempt, max_attempts, timeout_s, "
    "backoff_s, progress, result, error, tags, idempotency_key, webhook, lease_owner, "
    "lease_token, lease_expires_at, cancel_requested, created_at, started_at, finished_at, "
    "updated_at, concurrency_key, unique_key, schedule_id, schedule_tick, depends_on, "
    "workflow_id, step, parent_id, continuation"
)
#: The clock of every statement: the injected one if any, else the server's.
NOW = "coalesce(%(now)s::timestamptz, statement_timestamp())"
#: Serializes enqueues that share an idempotency key (and nothing else).
KEY_LOCKS = (
    "SELECT pg_advisory_xact_lock(hashtextextended(k, %(salt)s))"
    " FROM unnest(%(keys)s::text[]) AS k ORDER BY k"
)
NOTIFY = f"SELECT pg_notify('{CHANNEL}', q) FROM unnest(%(queues)s::text[]) AS q"
#: Wake the workers of every queue that has waiting jobs (a limit was raised or removed).
_NOTIFY_ALL = (
    f"SELECT pg_notify('{CHANNEL}', queue) FROM (SELECT DISTINCT queue FROM conveyor_jobs"
    " WHERE state = 'queued') q"
)
INSERT_EVENTS = (
    "INSERT INTO conveyor_events (job_id, at, type, data)"
    " SELECT e.job_id, e.at, e.type, e.data::json FROM unnest(%(ev_job)s::text[],"
    " %(ev_at)s::timestamptz[], %(ev_type)s::text[], %(ev_data)s::text[])"
    " WITH ORDINALITY AS e(job_id, at, type, data, ord) ORDER BY e.ord"
)
_OPTIONS = {"pool_size", "migrate", "call_timeout"}  # conveyor's own URL options, not libpq's
_DEFAULTS = {
    "connect_timeout": "5",
    # Notice a dead server or a silent network cut within seconds, not hours.
    "keepalives": "1",
    "keepalives_idle": "3",
    "keepalives_interval": "1",
    "keepalives_count": "2",
    "tcp_user_timeout": "5000",
    "application_name": "conveyor",
}
_SESSION_SETUP = (
    "SET TIME ZONE 'UTC'; SET idle_in_transaction_session_timeout = '60s';"
    " SET lock_timeout = '30s'; SET jit = off"
)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _dt(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def row_to_job(row: Sequence[Any]) -> Job:
    """Build a Job from a row selected with JOB_COLUMNS (no validation: the store wrote it)."""
    lease = None
    if row[18] is not None and row[3] == "running":
        lease = Lease.model_construct(owner=row[17], token=row[18], expires_at=row[19])
    progress, error = row[11], row[13]
    return Job.model_construct(
        id=row[0],
        kind=row[1],
        queue=row[2],
        state=JobState(row[3]),
        input=row[4],
        priority=row[5],
        run_at=row[6],
        attempt=row[7],
        max_attempts=row[8],
        timeout_s=row[9],
        backoff_s=row[10],
        progress=None if progress is None else Progress.model_construct(**progress),
        result=row[12],
        error=None if error is None else JobError.model_construct(**error),
        tags=row[14],
        idempotency_key=row[15],
        webhook=row[16],
        lease=lease,
        cancel_requested=row[20],
        created_at=row[21],
        started_at=row[22],
        finished_at=row[23],
        updated_at=row[24],
        concurrency_key=row[25],
        unique_key=row[26],
        schedule_id=row[27],
        schedule_tick=row[28],
        depends_on=row[29] or [],
        workflow_id=row[30],
        step=row[31],
        parent_id=row[32],
        continuation=row[33],
    )


@dataclass
class _Insert:
    """What `PostgresStore._insert` prepared: statements, whether a transaction is open, and
    the ids of the jobs the specs stand for, in order."""

    statements: list[tuple[str, dict[str, Any] | None]]
    began: bool
    order: list[str]

    def jobs(self, results: list[list[Row]]) -> list[Job]:
        """The jobs, from the rows the statements returned."""
        found = {row[0]: row_to_job(row) for rows in results for row in rows if len(row) > 20}
        return [found[i] for i in self.order]


class _Events:
    """Event rows collected in Python, inserted with one statement (`INSERT_EVENTS`)."""

    def __init__(self) -> None:
        self.job: list[str] = []
        self.at: list[datetime | None] = []
        self.type: list[str] = []
        self.data: list[str] = []

    def add(self, job_id: str, at: datetime | None, type_: str, data: dict[str, Any]) -> None:
        self.job.append(job_id)
        self.at.append(at)
        self.type.append(type_)
        self.data.append(_dumps(data))

    def params(self) -> dict[str, Any]:
        return {"ev_job": self.job, "ev_at": self.at, "ev_type": self.type, "ev_data": self.data}


class PostgresStore:
    """A `Store` on a PostgreSQL database, shared by any number of processes and hosts."""

    def __init__(
        self,
        conninfo: str,
        *,
        clock: Clock | None = None,
        pool_size: int = 10,
        migrate: bool = True,
        call_timeout_s: float = 60.0,
    ) -> None:
        self.clock = clock
        self._limit_set = LimitSet()  # cached; pg_flow.limit_set re-reads on a new version
        self._quiet_reads = QuietReads()
        self._deadlines = CallDeadlines(call_timeout_s)
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise errors.ConfigurationError(f"invalid PostgreSQL URL: {exc}") from exc
        for key, value in _DEFAULTS.items():
            params.setdefault(key, value)
        self.conninfo = make_conninfo("", **params)
        self.where = f"{params.get('host', 'localhost')}:{params.get('port', 5432)}"
        if migrate:
            self.migrate()
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            self.conninfo,
            kwargs={"autocommit": True},
            min_size=1,
            max_size=max(1, pool_size),
            configure=_configure,
            timeout=2.0,  # a request waits at most this long for a connection, then 503
            # A lost connection is retried once after 1 s, then the pool stops trying and
            # regrows on demand: the next request that finds no connection connects at once.
            # (A long reconnect_timeout backs off up to 8 s, so after an outage requests kept
            # failing for seconds while the server was long back.)
            reconnect_timeout=1.0,
            name="conveyor",
            open=True,
        )
        self._listener = Listener(self.conninfo, {})

    @classmethod
    def from_url(
        cls, url: str, clock: Clock | None = None, *, migrate: bool | None = None
    ) -> PostgresStore:
        """`postgresql://user:pass@host:port/db?sslmode=…`; conveyor options: `pool_size=10`,
        `migrate=false` (do not apply pending migrations on open; use `conveyor db migrate`),
        `call_timeout=60` (seconds a call may wait for the server before it is broken off).
        The `migrate` argument, when given, overrides the URL option.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        ours = {k: v for k, v in query if k in _OPTIONS}
        rest = [(k, v) for k, v in query if k not in _OPTIONS]
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(rest)))
        try:
            pool_size = int(ours.get("pool_size", "10"))
        except ValueError as exc:
            raise errors.ConfigurationError("pool_size must be a whole number") from exc
        try:
            call_timeout_s = float(ours.get("call_timeout", "60"))
        except ValueError as exc:
            raise errors.ConfigurationError("call_timeout must be a number of seconds") from exc
        if migrate is None:
            migrate = ours.get("migrate", "true").lower() not in {"0", "false", "no", "off"}
        return cls(conninfo, clock=clock, pool_size=pool_size, migrate=migrate,
                   call_timeout_s=call_timeout_s)  # fmt: skip

    # -- plumbing ---------------------------------------------------------------------------

    def migrate(self) -> list[pg_migrations.Migration]:
        """Apply pending schema migrations (safe while other processes do the same)."""
        try:
            with psycopg.connect(self.conninfo, autocommit=True) as conn:
                applied = pg_migrations.migrate(conn)
                _warn_if_not_durable(conn)
                return applied
        except psycopg.OperationalError as exc:
            raise errors.StoreUnavailableError(
                f"cannot reach PostgreSQL at {self.where}: {_first_line(exc)}"
            ) from exc

    def schema_version(self) -> tuple[int, int]:
        """(the database's schema version, the newest this conveyor knows)."""
        with self._conn() as conn:
            return pg_migrations.current_version(conn), pg_migrations.latest_version()

    @contextmanager
    def _conn(self) -> Iterator[Conn]:
        """A pooled connection; driver and connection errors become conveyor errors."""
        try:
            with self._pool.connection() as conn, self._deadlines.watch(conn):
                try:
                    yield conn
                except BaseException:
                    _rollback(conn)
                    raise
        except PoolTimeout as exc:
            raise errors.StoreUnavailableError(
                f"no connection to PostgreSQL at {self.where} (is it running?)"
            ) from exc
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise errors.StoreUnavailableError(
                f"PostgreSQL at {self.where}: {_first_line(exc)}; try again"
            ) from exc
        except psycopg.DataError as exc:
            raise errors.InvalidInputError(f"the database refused a value: {exc}") from exc
        except psycopg.IntegrityError as exc:
            raise errors.InvalidInputError(f"conflicting write: {_first_line(exc)}") from exc

    def _now_param(self) -> datetime | None:
        return None if self.clock is None else _dt(self.clock())

    @staticmethod
    def _pipeline(
        conn: Conn, statements: Sequence[tuple[str, dict[str, Any] | None]], *, begin: bool
    ) -> list[list[Row]]:
        """Run statements (and COMMIT) in one round trip; the rows each returned."""
        with conn.pipeline():
            if begin:
                conn.execute("BEGIN")
            cursors = [conn.execute(sql.encode(), params) for sql, params in statements]
            conn.execute("COMMIT")
        return [cur.fetchall() if cur.description else [] for cur in cursors]

    def _read(self, sql: str, params: dict[str, Any] | None = None) -> list[Row]:
        with self._conn() as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def now(self) -> float:
        if self.clock is not None:
            return self.clock()
        row = self._read("SELECT extract(epoch FROM statement_timestamp())::float8")
        return float(row[0][0])

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        self._listener.close()
        self._pool.close()

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(self, specs: Sequence[JobSpec]) -> list[Job]:
        if not specs:
            return []
        with self._conn() as conn:
            insert = self._insert(conn, specs, began=False)
            results = self._pipeline(conn, insert.statements, begin=not insert.began)
        return insert.jobs(results)

    def _insert(self, conn: Conn, specs: Sequence[JobSpec], *, began: bool) -> _Insert:
        """The statements that insert `specs` (enqueue, or the children of a WAIT). Reads
        that must come first (idempotency keys, unique and concurrency keys, dependencies)
        run now, in a transaction begun here unless `began`."""
        keys = batch_keys(specs)
        now = self._now_param()
        # Unique and concurrency keys are decided under advisory locks of their own too.
        flow_locks = pg_flow.lock_names(specs)
        with_deps = any(s.depends_on for s in specs)
        existing: dict[str | None, str] = {}
        if keys or flow_locks or with_deps:
            with conn.pipeline():
                if not began:
                    conn.execute("BEGIN")
                    began = True
                names = sorted([*keys, *flow_locks])
                if names:
                    conn.execute(
                        KEY_LOCKS.encode(), {"keys": names, "salt": pg_migrations.LOCK_KEY}
                    )
                cur = conn.execute(
                    "SELECT key, job_id, request_hash FROM conveyor_idempotency"
                    f" WHERE key = ANY(%(keys)s::text[]) AND expires_at > {NOW}".encode(),
                    {"keys": list(keys), "now": now},
                )
            for key, job_id, request_hash in cur.fetchall():
                if request_hash != keys[key]:
                    raise errors.IdempotencyConflictError(idempotency_key=key, job_id=job_id)
                existing[key] = job_id
        new = [s for s in specs if s.idempotency_key not in existing]
        statements: list[tuple[str, dict[str, Any] | None]] = []
        duplicates: dict[str, str] = {}
        flow = Strategies()
        if flow_locks:
            duplicates, flow = self._flow_on_submit(conn, new, statements)
            new = [s for s in new if s.id not in duplicates]
        alias = {s.id: existing[s.idempotency_key] for s in specs if s.idempotency_key in existing}
        alias.update(duplicates)
        waits = deps.plan(new, alias, lambda ids: pg_deps.states(conn, ids), flow.cancelled_specs)
        params = _insert_params(new, now, flow.cancelled_specs, waits)
        statements.append((_INSERT_JOBS, params))
        if waits:
            statements.append(pg_deps.add_edges(deps.edges(waits)))
        if flow.cancel_waiting:
            statements.append(pg_deps.release(flow.cancel_waiting, now))
        statements.append((NOTIFY, {"queues": sorted({s.queue for s in new})}))
        keyed = [s for s in new if s.concurrency_key is not None]
        if keyed:
            pairs = {"rk_kind": [s.kind for s in keyed],
                     "rk_key": [s.concurrency_key for s in keyed]}  # fmt: skip
            statements.append((pg_flow.REGISTER_KEYS, pairs))
        known = list(dict.fromkeys([*existing.values(), *duplicates.values()]))
        if known:
            statements.append(
                (f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])",
                 {"ids": known})
            )  # fmt: skip
        order = [duplicates.get(s.id, existing.get(s.idempotency_key, s.id)) for s in specs]
        return _Insert(statements, began, order)

    def _flow_on_submit(
        self,
        conn: Conn,
        specs: Sequence[JobSpec],
        statements: list[tuple[str, dict[str, Any] | None]],
    ) -> tuple[dict[str, str], Strategies]:
        """Unique duplicates (spec id -> existing job id) and the cancel strategies' decisions
        for new specs; the strategies' changes to stored jobs join `statements`."""
        now = self._epoch(conn)
        duplicates = pg_flow.unique_matches(conn, specs, now)
        fresh = [s for s in specs if s.id not in duplicates]
        limits = self._limits_in(conn)
        flow = Strategies()
        if any(limits.strategy_limit(s.kind, s.concurrency_key) for s in fresh):
            flow = pg_flow.apply_strategies(conn, fresh, limits)
            params = {"now": self._now_param(), "waiting": flow.cancel_waiting,
                      "running": flow.stop_running,
                      "error": limited_error("a newer job of its key took its place")
                      .model_dump_json()}  # fmt: skip
            statements.append((_CANCEL_FOR_LIMIT, params))
        return duplicates, flow

    def _epoch(self, conn: Conn) -> float:
        """The store's time now, in epoch seconds."""
        if self.clock is not None:
            return self.clock()
        row = conn.execute(b"SELECT extract(epoch FROM statement_timestamp())::float8").fetchone()
        assert row is not None
        return float(row[0])

    def _limits_in(self, conn: Conn) -> LimitSet:
        self._limit_set = pg_flow.limit_set(conn, self._limit_set)
        return self._limit_set

    # -- the lease life cycle ---------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str],
        owner: str,
        n: int,
        lease_s: float,
        *,
        kinds: Sequence[str] | None = None,
        tag: str | None = None,
    ) -> list[Job]:
        if n <= 0 or not queues or kinds == []:
            return []
        cached = self._limit_set
        if cached.limits:
            return self._claim_limited(queues, owner, n, lease_s, kinds, tag)
        open_queues = [q for q in queues if q not in cached.paused]
        if not open_queues:
            return []
        # Believing nothing is limited, claim as if so, unless the version of the limits
        # (read in the same statement) says otherwise; then claim again knowing them.
        params: dict[str, Any] = {"now": self._now_param(), "owner": owner, "n": n,
                                  "lease": lease_s, "version": cached.version}  # fmt: skip
        if len(open_queues) == 1:  # an equality keeps the ready index's order: no sort at all
            where = "queue = %(queue)s"
            params["queue"] = open_queues[0]
        else:
            where = "queue = ANY(%(queues)s::text[])"
            params["queues"] = list(open_queues)
        where += pg_flow.claim_filter(kinds, tag, params)
        picked = (
            "SELECT id FROM conveyor_jobs"
            f" WHERE state IN ('queued', 'scheduled') AND {where} AND run_at <= {NOW}"
            " AND EXISTS (SELECT 1 FROM conveyor_limits_version WHERE version = %(version)s)"
            " ORDER BY priority DESC, run_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED"
        )
        with self._conn() as conn:
            [rows, [(version,)]] = self._pipeline(
                conn, [(_claim_sql(picked), params), (pg_flow.VERSION, None)], begin=True
            )
        if version != cached.version:  # limits or pauses changed: read them
            with self._conn() as conn:
                self._limits_in(conn)
            if not rows:
                return self.claim(queues, owner, n, lease_s, kinds=kinds, tag=tag)
        return [row_to_job(r) for r in rows]

    def _claim_limited(
        self,
        queues: Sequence[str],
        owner: str,
        n: int,
        lease_s: float,
        kinds: Sequence[str] | None,
        tag: str | None,
    ) -> list[Job]:
        """A claim under limits: holding LIMITS_LOCK, read the limits, the running counts and
        the buckets, choose (pg_flow.pick), claim the chosen jobs and commit."""
        with self._conn() as conn:
            snap = pg_flow.snapshot(conn, self._limit_set, self._now_param())
            if snap.version != self._limit_set.version:  # changed: read them, then the rest
                conn.execute(b"ROLLBACK")
                limits = self._limits_in(conn)
                snap = pg_flow.snapshot(conn, limits, self._now_param())
            limits = self._limit_set
            open_queues = [q for q in queues if q not in limits.paused]
            ids: list[str] = []
            writes: pg_flow.Statements = []
            if limits.limits and open_queues:
                ids, writes = pg_flow.pick(conn, limits, snap, open_queues, n, kinds, tag)
            if ids:
                params = {"now": self._now_param(), "owner": owner, "lease": lease_s, "ids": ids}
                picked = (
                    "SELECT id FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])"
                    " AND state IN ('queued', 'scheduled') FOR UPDATE SKIP LOCKED"
                )
                writes.append((_claim_sql(picked), params))
            results = self._pipeline(conn, writes, begin=False)  # and COMMIT
        if not limits.limits and open_queues:  # nothing limited after all
            return self.claim(open_queues, owner, n, lease_s, kinds=kinds, tag=tag)
        if not ids:
            return []
        rows = results[-1]
        place = {job_id: i for i, job_id in enumerate(ids)}
        return [row_to_job(r) for r in sorted(rows, key=lambda r: place[r[0]])]

    def heartbeat(self, beats: Sequence[Beat], lease_s: float) -> dict[str, BeatStatus]:
        if not beats:
            return {}
        beats = sorted(beats, key=lambda b: b.job_id)  # lock rows in one order everywhere
        now = self._now_param()
        events = _Events()
        tokens: list[str] = []
        for beat in beats:
            if beat.progress is not None:
                events.add(beat.job_id, now, "progress", beat.progress.model_dump())
                tokens.append(beat.token)
            for line in beat.logs:
                events.add(beat.job_id, now, "log", {"line": line})
                tokens.append(beat.token)
        update = (
            "UPDATE conveyor_jobs j SET"
            f" lease_expires_at = {NOW} + make_interval(secs => %(lease)s), updated_at = {NOW},"
            " progress = coalesce(b.progress::json, j.progress)"
            " FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(progress)s::text[])"
            "  AS b(id, token, progress)"
            " WHERE j.id = b.id AND j.lease_token = b.token AND j.state = 'running'"
            " RETURNING j.id, j.cancel_requested"
        )
        statements: list[tuple[str, dict[str, Any] | None]] = [(update, {
            "now": now, "lease": lease_s, "ids": [b.job_id for b in beats],
            "tokens": [b.token for b in beats],
            "progress": [None if b.progress is None else b.progress.model_dump_json()
                         for b in beats],
        })]  # fmt: skip
        if events.job:
            # Events only for leases that matched: join on the (unchanged) token.
            statements.append((
                "INSERT INTO conveyor_events (job_id, at, type, data)"
                f" SELECT e.job_id, {NOW}, e.type, e.data::json FROM unnest(%(ev_job)s::text[],"
                " %(ev_token)s::text[], %(ev_type)s::text[], %(ev_data)s::text[])"
                "  WITH ORDINALITY AS e(job_id, token, type, data, ord)"
                " JOIN conveyor_jobs j ON j.id = e.job_id AND j.lease_token = e.token"
                "  AND j.state = 'running' ORDER BY e.ord",
                {**events.params(), "ev_token": tokens, "now": now},
            ))  # fmt: skip
        with self._conn() as conn:
            rows = self._pipeline(conn, statements, begin=True)[0]
        alive = {job_id: cancel for job_id, cancel in rows}
        return {
            b.job_id: (BeatStatus.LOST if b.job_id not in alive
                       else BeatStatus.CANCEL if alive[b.job_id] else BeatStatus.OK)
            for b in beats
        }  # fmt: skip

    def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        ids = sorted({s.job_id for s in settlements})
        if len(ids) == len(settlements) and all(
            s.outcome is Outcome.SUCCEEDED for s in settlements
        ):
            return self._settle_succeeded(settlements)
        with self._conn() as conn:
            with conn.pipeline():
                conn.execute("BEGIN")
                now_cur = conn.execute(f"SELECT {NOW}".encode(), {"now": self._now_param()})
                cur = conn.execute(
                    b"SELECT id, lease_token, attempt, max_attempts, backoff_s, cancel_requested,"
                    b" queue FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])"
                    b" AND state = 'running' ORDER BY id FOR UPDATE",
                    {"ids": ids},
                )
            [(now,)] = now_cur.fetchall()
            current = {row[0]: row[1:] for row in cur.fetchall()}
            applied, update, events, wake = _decide_all(settlements, current, now)
            if not update["id"]:
                conn.execute("ROLLBACK")
                return applied
            inserts, waits = self._spawn(conn, settlements, update, now)
            finals = [i for i, f in zip(update["id"], update["finished"], strict=True) if f]
            self._pipeline(
                conn,
                [*inserts, (_SETTLE, {**update, "now": now}), *waits,
                 (INSERT_EVENTS, events.params()), pg_deps.release(finals, now),
                 (NOTIFY, {"queues": sorted(wake)})],
                begin=False,
            )  # fmt: skip
        return applied

    def _spawn(
        self,
        conn: Conn,
        settlements: Sequence[Settlement],
        update: dict[str, list[Any]],
        now: datetime,
    ) -> tuple[list[tuple[str, dict[str, Any] | None]], list[tuple[str, dict[str, Any] | None]]]:
        """For the WAITs among applied settlements: the statements inserting their children
        (to run before the settle update) and those blocking them on the children (after)."""
        inserts: list[tuple[str, dict[str, Any] | None]] = []
        waits: list[tuple[str, dict[str, Any] | None]] = []
        spawns = {s.job_id: s for s in settlements if s.outcome is Outcome.WAIT}
        for job_id, state in zip(update["id"], update["state"], strict=True):
            if state != JobState.BLOCKED.value:
                continue
            wait = spawns[job_id]
            insert = self._insert(conn, deps.as_children(job_id, wait.spawn), began=True)
            inserts += insert.statements
            kids = list(dict.fromkeys(insert.order))
            waits.append(pg_deps.wait(job_id, kids, _dumps(wait.continuation), now))
        return inserts, waits

    def _settle_succeeded(self, settlements: Sequence[Settlement]) -> list[bool]:
        """The common case in one round trip: `rules.decide` sends a succeeded lease to
        SUCCEEDED whatever the row holds, so there is nothing to read first.
        """
        params = {
            "now": self._now_param(),
            "id": [s.job_id for s in settlements],
            "token": [s.token for s in settlements],
            "result": [_dumps(s.result) for s in settlements],
        }
        release = pg_deps.release([s.job_id for s in settlements], self._now_param())
        with self._conn() as conn:
            [rows, _] = self._pipeline(conn, [(_SETTLE_SUCCEEDED, params), release], begin=True)
        done = {row[0] for row in rows}
        return [s.job_id in done for s in settlements]

    def rescue(self, owner: str | None = None) -> list[str]:
        params = {"now": self._now_param(), "owner": owner}
        find = f"lease_expires_at < {NOW}" if owner is None else "lease_owner = %(owner)s"
        promote = (
            "WITH due AS ("
            f" UPDATE conveyor_jobs SET state = 'queued', updated_at = {NOW}"
            " WHERE id IN (SELECT id FROM conveyor_jobs WHERE state = 'scheduled'"
            f"  AND run_at <= {NOW} ORDER BY run_at LIMIT 10000 FOR UPDATE SKIP LOCKED)"
            " RETURNING id, queue, updated_at"
            "), events AS ("
            " INSERT INTO conveyor_events (job_id, at, type, data)"
            " SELECT id, updated_at, 'state', '{\"state\":\"queued\"}'::json FROM due ORDER BY id"
            f") SELECT q, pg_notify('{CHANNEL}', q) FROM (SELECT DISTINCT queue AS q FROM due) s"
        )
        with self._conn() as conn:
            leases = conn.execute(
                f"SELECT id, lease_token FROM conveyor_jobs WHERE state = 'running'"
                f" AND {find}".encode(),
                params,
            ).fetchall()
            self._pipeline(conn, [(promote, params)], begin=True)
        lost = [Settlement(job_id, token, Outcome.LOST) for job_id, token in leases]
        settled = self.settle(lost)
        return [s.job_id for s, ok in zip(lost, settled, strict=True) if ok]

    # -- user operations ----------------------------------------------------------------------

    def _locked_job(self, conn: Conn, job_id: str) -> Job:
        """Begin a transaction and lock the job's row (phase one of a read-decide-write)."""
        conn.execute("BEGIN")
        row = conn.execute(
            f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = %s FOR UPDATE".encode(),
            (job_id,),
        ).fetchone()
        if row is None:
            raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        return row_to_job(row)

    def cancel(self, job_id: str) -> Job:
        params = {"now": self._now_param(), "id": job_id}
        with self._conn() as conn:
            job = self._locked_job(conn, job_id)
            rules.ensure_cancellable(job_id, job.state)
            if job.state is JobState.RUNNING:
                change = "cancel_requested = true"
                event = {"state": "running", "cancel_requested": True}
            else:
                change = f"state = 'cancelled', cancel_requested = true, finished_at = {NOW}"
                event = {"state": "cancelled"}
            update = (
                f"UPDATE conveyor_jobs SET {change}, updated_at = {NOW} WHERE id = %(id)s"
                f" RETURNING {JOB_COLUMNS}"
            )
            [[row], *_] = self._pipeline(
                conn, [(update, params), _one_event(job_id, event, params),
                       pg_deps.release([job_id], params["now"])],
                begin=False,
            )  # fmt: skip
        return row_to_job(row)

    def rewind(self, job_ids: Sequence[str]) -> list[Job]:
        wanted = list(dict.fromkeys(job_ids))
        now = self._now_param()
        with self._conn() as conn:
            conn.execute(b"BEGIN")
            rows = conn.execute(
                f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])"
                " ORDER BY id FOR UPDATE".encode(),
                {"ids": wanted},
            ).fetchall()
            jobs = {row[0]: row_to_job(row) for row in rows}
            for job_id in wanted:
                if job_id not in jobs:
                    raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
                rules.ensure_retryable(job_id, jobs[job_id].state)
            rewound = set(wanted)
            outside = {d for j in jobs.values() for d in j.depends_on if d not in rewound}
            known = pg_deps.states(conn, sorted(outside))
            waits = {i: rules.rewind_pending(jobs[i].depends_on, known, rewound) for i in wanted}
            states = [JobState.BLOCKED.value if waits[i] else JobState.QUEUED.value
                      for i in wanted]  # fmt: skip
            events = _Events()
            for job_id, state in zip(wanted, states, strict=True):
                events.add(job_id, now, "state", {"state": state, "retried": True})
            edges = [(up, i) for i in wanted for up in waits[i]]
            statements: list[tuple[str, dict[str, Any] | None]] = [
                pg_deps.add_edges(edges),
                (pg_deps.REWIND, {"id": wanted, "state": states, "now": now,
                                  "pending": [len(waits[i]) for i in wanted]}),
                (INSERT_EVENTS, events.params()),
                (NOTIFY, {"queues": sorted({j.queue for j in jobs.values()})}),
            ]  # fmt: skip
            keyed = [j for j in jobs.values() if j.concurrency_key is not None]
            if keyed:
                pairs = {"rk_kind": [j.kind for j in keyed],
                         "rk_key": [j.concurrency_key for j in keyed]}  # fmt: skip
                statements.append((pg_flow.REGISTER_KEYS, pairs))
            statements.append(
                (f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = ANY(%(ids)s::text[])",
                 {"ids": wanted})
            )  # fmt: skip
            results = self._pipeline(conn, statements, begin=False)
        found = {row[0]: row_to_job(row) for row in results[-1]}
        return [found[i] for i in job_ids]

    def retry(self, job_id: str) -> Job:
        params = {"now": self._now_param(), "id": job_id}
        with self._conn() as conn:
            job = self._locked_job(conn, job_id)
            rules.ensure_retryable(job_id, job.state)
            update = (
                f"UPDATE conveyor_jobs SET state = 'queued', attempt = 0, run_at = {NOW},"
                " cancel_requested = false, finished_at = NULL, result = NULL, progress = NULL,"
                f" updated_at = {NOW} WHERE id = %(id)s RETURNING {JOB_COLUMNS}"
            )
            statements = [
                (update, params),
                _one_event(job_id, {"state": "queued", "retried": True}, params),
                (NOTIFY, {"queues": [job.queue]}),
            ]
            if job.concurrency_key is not None:
                keys = {"rk_kind": [job.kind], "rk_key": [job.concurrency_key]}
                statements.append((pg_flow.REGISTER_KEYS, keys))
            row = self._pipeline(conn, statements, begin=False)[0][0]
        return row_to_job(row)

    def delete(self, job_id: str) -> None:
        with self._conn() as conn:
            job = self._locked_job(conn, job_id)
            rules.ensure_deletable(job_id, job.state)
            self._pipeline(
                conn,
                [("DELETE FROM conveyor_events WHERE job_id = %(id)s", {"id": job_id}),
                 ("DELETE FROM conveyor_jobs WHERE id = %(id)s", {"id": job_id})],
                begin=False,
            )  # fmt: skip

    def get(self, job_id: str) -> Job:
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM conveyor_jobs WHERE id = %(id)s",
                          {"id": job_id})  # fmt: skip
        if not rows:
            raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        return self._with_reasons([row_to_job(rows[0])])[0]

    def _with_reasons(self, jobs: list[Job]) -> list[Job]:
        """Fill `waiting_reason` of queued jobs a limit or a paused queue holds back (read
        only when there are queued jobs, and counted only when the store has limits)."""
        if not self._quiet_reads.due() or not any(j.state is JobState.QUEUED for j in jobs):
            return jobs
        with self._conn() as conn:
            limits = self._limits_in(conn)
            self._quiet_reads.found(not limits.empty)
            if limits.empty:
                return jobs
            admit = pg_flow.admission(conn, limits, self._epoch(conn))
            for job in jobs:
                if job.state is JobState.QUEUED:
                    why = admit.blocked(job.queue, job.kind, job.concurrency_key)
                    job.waiting_reason = None if why is None else why[0]
        return jobs

    def list_jobs(self, filter: JobFilter, cursor: str | None = None, limit: int = 50) -> JobPage:
        where, params = _filter_sql(filter)
        source, order = "conveyor_jobs", "id"
        if filter.tag is not None:
            # Walk the tag's index rows newest first and stop at a full page (as on SQLite).
            source = "conveyor_job_tags jt JOIN conveyor_jobs ON conveyor_jobs.id = jt.job_id"
            order = "jt.job_id"
            where.insert(0, "jt.tag = %(tag)s")
            params["tag"] = filter.tag
        if cursor:
            where.append(f"{order} < %(cursor)s")
            params["cursor"] = cursor
        sql = f"SELECT {JOB_COLUMNS} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} DESC LIMIT %(limit)s"
        rows = self._read(sql, {**params, "limit": limit + 1})
        jobs = self._with_reasons([row_to_job(r) for r in rows[:limit]])
        next_cursor = jobs[-1].id if len(rows) > limit else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        rows = self._read(
            "SELECT seq, job_id, at, type, data FROM conveyor_events"
            " WHERE job_id = %(id)s AND seq > %(after)s ORDER BY seq LIMIT %(limit)s",
            {"id": job_id, "after": after, "limit": limit},
        )
        return [_event_model(r) for r in rows]

    def feed(self, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """Events in commit order, resumable after any seq returned earlier.

        Concurrent writers may commit a lower seq after a higher one, so the feed is ordered
        by (transaction id, seq) and holds back every transaction newer than the oldest one
        still running: once an event is returned, nothing can appear before it any more.
        Without concurrency this is plain seq order. If the event `after` names was deleted
        (prune), resumption falls back to seq order from it.
        """
        rows = self._read(_FEED, {"after": after, "limit": limit})
        return [_event_model(r) for r in rows]

    # -- records ------------------------------------------------------------------------------

    def put_record(self, collection: str, key: str, value: dict[str, Any]) -> None:
        self._read(
            "INSERT INTO conveyor_records (collection, key, value, updated_at)"
            f" VALUES (%(c)s, %(k)s, %(v)s::json, {NOW}) ON CONFLICT (collection, key)"
            " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
            " RETURNING key",
            {"c": collection, "k": key, "v": _dumps(value), "now": self._now_param()},
        )

    def get_record(self, collection: str, key: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT value FROM conveyor_records WHERE collection = %(c)s AND key = %(k)s",
            {"c": collection, "k": key},
        )
        return dict(rows[0][0]) if rows else None

    def list_records(self, collection: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        rows = self._read(
            "SELECT key, value FROM conveyor_records WHERE collection = %(c)s"
            " AND starts_with(key, %(p)s) ORDER BY key",
            {"c": collection, "p": prefix},
        )
        return [(key, value) for key, value in rows]

    def delete_record(self, collection: str, key: str) -> bool:
        rows = self._read(
            "DELETE FROM conveyor_records WHERE collection = %(c)s AND key = %(k)s RETURNING key",
            {"c": collection, "k": key},
        )
        return bool(rows)

    # -- kinds, workers, stats, retention --------------------------------------------------

    def register_kinds(self, kinds: Sequence[KindInfo]) -> None:
        if not kinds:
            return
        self._read(
            "INSERT INTO conveyor_kinds (name, info, updated_at)"
            f" SELECT n, i::json, {NOW} FROM unnest(%(names)s::text[], %(infos)s::text[])"
            " AS k(n, i) ON CONFLICT (name) DO UPDATE SET info = excluded.info,"
            " updated_at = excluded.updated_at RETURNING name",
            {"names": [k.name for k in kinds], "now": self._now_param(),
             "infos": [k.model_dump_json(exclude={"updated_at"}) for k in kinds]},
        )  # fmt: skip

    def kinds(self) -> list[KindInfo]:
        rows = self._read("SELECT info, updated_at FROM conveyor_kinds ORDER BY name")
        return read_kinds({**info, "updated_at": at} for info, at in rows)

    def worker_beat(self, info: WorkerInfo) -> None:
        if info.state == "stopped":
            self._read("DELETE FROM conveyor_workers WHERE id = %(id)s RETURNING id",
                       {"id": info.id})  # fmt: skip
            return
        self._read(
            "INSERT INTO conveyor_workers (id, info, last_seen)"
            f" VALUES (%(id)s, %(info)s::json, {NOW}) ON CONFLICT (id) DO UPDATE"
            " SET info = excluded.info, last_seen = excluded.last_seen RETURNING id",
            {"id": info.id, "info": info.model_dump_json(), "now": self._now_param()},
        )

    def workers(self) -> list[WorkerInfo]:
        rows = self._read("SELECT info, last_seen FROM conveyor_workers ORDER BY id")
        return [WorkerInfo.model_validate({**info, "last_seen": seen}) for info, seen in rows]

    def queue_stats(self) -> list[QueueStats]:
        params = {"now": self._now_param()}
        stats: dict[str, QueueStats] = {}
        with self._conn() as conn, conn.pipeline():
            counts = conn.execute(
                b"SELECT queue, state, count(*) FROM conveyor_jobs GROUP BY queue, state"
            )
            oldest = conn.execute(
                "SELECT queue, extract(epoch FROM max(age))::float8 FROM (SELECT queue,"
                f" {NOW} - min(run_at) AS age FROM conveyor_jobs WHERE state IN"
                f" ('queued', 'scheduled') AND run_at <= {NOW} GROUP BY queue) a"
                " GROUP BY queue".encode(),
                params,
            )
            recent = conn.execute(
                "SELECT queue, count(*) FROM conveyor_jobs WHERE finished_at IS NOT NULL"
                f" AND finished_at > {NOW} - interval '60 seconds' GROUP BY queue".encode(),
                params,
            )
            paused = conn.execute(b"SELECT queue FROM conveyor_paused_queues")
            rows = counts.fetchall(), oldest.fetchall(), recent.fetchall()
            paused_queues = [row[0] for row in paused.fetchall()]
        for queue, state, count in rows[0]:
            setattr(stats.setdefault(queue, QueueStats(name=queue)), state, count)
        for queue, age in rows[1]:
            stats[queue].oldest_queued_age_s = max(0.0, age)
        for queue, count in rows[2]:
            stats[queue].finished_last_minute = count
        for queue in paused_queues:
            stats.setdefault(queue, QueueStats(name=queue)).paused = True
        return [stats[name] for name in sorted(stats)]

    def prune(self, finished_before: float, limit: int = 10_000) -> list[str]:
        params = {"before": _dt(finished_before), "limit": limit, "now": self._now_param()}
        with self._conn() as conn:
            [rows, _] = self._pipeline(
                conn,
                [("WITH gone AS MATERIALIZED (SELECT id FROM conveyor_jobs"
                  " WHERE finished_at IS NOT NULL AND finished_at < %(before)s"
                  " AND state IN ('succeeded', 'failed', 'cancelled')"
                  " LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
                  " events AS (DELETE FROM conveyor_events WHERE job_id IN (SELECT id FROM gone))"
                  " DELETE FROM conveyor_jobs WHERE id IN (SELECT id FROM gone) RETURNING id",
                  params),
                 (f"DELETE FROM conveyor_idempotency WHERE expires_at < {NOW}", params)],
                begin=True,
            )  # fmt: skip
        return [r[0] for r in rows]

    # -- flow control --------------------------------------------------------------------------

    def set_limit(self, limit: Limit) -> Limit:
        self._quiet_reads.changed()
        params = {"now": self._now_param(), "target": limit.target, "max": limit.max_running,
                  "rate": limit.rate, "per_s": limit.per_s, "strategy": limit.strategy}  # fmt: skip
        upsert = (
            "INSERT INTO conveyor_limits (target, max_running, rate, per_s, strategy, updated_at)"
            f" VALUES (%(target)s, %(max)s, %(rate)s, %(per_s)s, %(strategy)s, {NOW})"
            " ON CONFLICT (target) DO UPDATE SET max_running = excluded.max_running,"
            "  rate = excluded.rate, per_s = excluded.per_s, strategy = excluded.strategy,"
            "  updated_at = excluded.updated_at RETURNING updated_at"
        )
        with self._conn() as conn:
            [[(at,)], _, _] = self._pipeline(
                conn, [(upsert, params), (pg_flow.BUMP, None), (_NOTIFY_ALL, None)], begin=True
            )
        return limit.model_copy(update={"updated_at": at})

    def delete_limit(self, target: str) -> bool:
        self._quiet_reads.changed()
        with self._conn() as conn:
            with conn.pipeline():
                conn.execute(b"BEGIN")
                cur = conn.execute(
                    b"DELETE FROM conveyor_limits WHERE target = %(t)s RETURNING 1", {"t": target}
                )
            found = bool(cur.fetchall())
            statements = [(pg_flow.BUMP, None), (_NOTIFY_ALL, None)] if found else []
            self._pipeline(conn, statements, begin=False)
        return found

    def limits(self) -> list[Limit]:
        with self._conn() as conn:
            limits = self._limits_in(conn)
        return sorted(limits.limits.values(), key=lambda lim: lim.target)

    def pause_queue(self, queue: str, paused: bool) -> None:
        self._quiet_reads.changed()
        if paused:
            change = (
                "INSERT INTO conveyor_paused_queues (queue, paused_at)"
                f" VALUES (%(queue)s, {NOW}) ON CONFLICT DO NOTHING"
            )
        else:
            change = "DELETE FROM conveyor_paused_queues WHERE queue = %(queue)s"
        params = {"queue": queue, "now": self._now_param()}
        with self._conn() as conn:
            self._pipeline(
                conn,
                [(change, params), (pg_flow.BUMP, None), (NOTIFY, {"queues": [queue]})],
                begin=True,
            )

    def purge_queue(self, queue: str) -> int:
        params = {"now": self._now_param(), "queue": queue,
                  "error": purged_error(queue).model_dump_json()}  # fmt: skip
        sql = (
            "WITH gone AS ("
            f" UPDATE conveyor_jobs SET state = 'cancelled', cancel_requested = true,"
            f"  finished_at = {NOW}, updated_at = {NOW}, error = %(error)s::json"
            "  WHERE queue = %(queue)s AND state IN ('queued', 'scheduled') RETURNING id"
            "), events AS ("
            " INSERT INTO conveyor_events (job_id, at, type, data)"
            f" SELECT id, {NOW}, 'state', json_build_object('state', 'cancelled',"
            "  'reason', 'purged') FROM gone"
            ") SELECT id FROM gone"
        )
        with self._conn() as conn:
            conn.execute(b"BEGIN")
            ids = [row[0] for row in conn.execute(sql.encode(), params).fetchall()]
            self._pipeline(conn, [pg_deps.release(ids, params["now"])], begin=False)
        return len(ids)

    def take_tokens(self, key: str, n: int, rate: int, per_s: float) -> float:
        with self._conn() as conn:
            with conn.pipeline():
                conn.execute(b"BEGIN")
                conn.execute(
                    b"SELECT pg_advisory_xact_lock(hashtextextended(%(k)s, %(salt)s))",
                    {"k": "\x1fbucket:" + key, "salt": pg_migrations.LOCK_KEY},
                )
            now = self._epoch(conn)
            tokens, wait = take(pg_flow.bucket_loader(conn)([key]).get(key), n, rate, per_s, now)
            if wait == 0:
                pg_flow.write_buckets(conn, [(key, tokens, now)])
            conn.execute(b"COMMIT")
        return wait

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        self._listener.wait(queues, timeout)


# -- SQL built once ----------------------------------------------------------------------------

_INSERT_JOBS = (
    "WITH new AS ("
    " SELECT * FROM unnest(%(id)s::text[], %(kind)s::text[], %(queue)s::text[],"
    "  %(input)s::text[], %(priority)s::int[], %(run_at)s::timestamptz[],"
    "  %(max_attempts)s::int[], %(timeout_s)s::float8[], %(backoff_s)s::float8[],"
    "  %(tags)s::text[], %(ikey)s::text[], %(webhook)s::text[], %(ckey)s::text[],"
    "  %(ukey)s::text[], %(sched)s::text[], %(tick)s::timestamptz[], %(cancel)s::bool[],"
    "  %(deps)s::text[], %(wf)s::text[], %(step)s::text[], %(parent)s::text[], %(pending)s::int[])"
    " WITH ORDINALITY AS n(id, kind, queue, input, priority, run_at, max_attempts, timeout_s,"
    "  backoff_s, tags, ikey, webhook, ckey, ukey, sched, tick, cancel, deps, wf, step, parent,"
    "  pending, ord)"
    "), ins AS ("
    " INSERT INTO conveyor_jobs (id, kind, queue, state, input, priority, run_at,"
    "  max_attempts, timeout_s, backoff_s, tags, idempotency_key, webhook, created_at,"
    "  updated_at, concurrency_key, unique_key, schedule_id, schedule_tick, finished_at, error,"
    "  depends_on, workflow_id, step, parent_id, pending)"
    " SELECT id, kind, queue, CASE WHEN cancel THEN 'cancelled' WHEN pending > 0 THEN 'blocked'"
    f"  WHEN run_at > {NOW} THEN 'scheduled' ELSE 'queued' END,"
    "  input::json, priority, run_at, max_attempts, timeout_s, backoff_s, tags::jsonb, ikey,"
    f"  webhook::json, {NOW}, {NOW}, ckey, ukey, sched, tick,"
    f"  CASE WHEN cancel THEN {NOW} END, CASE WHEN cancel THEN %(cancel_error)s::json END,"
    "  deps::jsonb, wf, step, parent, pending"
    f" FROM new ORDER BY ord RETURNING {JOB_COLUMNS}"
    "), events AS ("
    " INSERT INTO conveyor_events (job_id, at, type, data)"
    " SELECT ins.id, ins.created_at, 'state', CASE"
    "  WHEN new.cancel THEN (jsonb_build_object('state', ins.state, 'queue', ins.queue,"
    "   'reason', 'concurrency_limited') || CASE WHEN ins.webhook IS NULL THEN '{}'::jsonb"
    "   ELSE '{\"webhook\": true}'::jsonb END)::json"
    "  WHEN ins.webhook IS NULL THEN json_build_object('state', ins.state, 'queue', ins.queue)"
    "  ELSE json_build_object('state', ins.state, 'queue', ins.queue, 'webhook', true) END"
    " FROM ins JOIN new ON new.id = ins.id ORDER BY new.ord"
    "), keys AS ("
    " INSERT INTO conveyor_idempotency (key, job_id, request_hash, expires_at)"
    f" SELECT k, j, h, {NOW} + make_interval(secs => %(window)s)"
    " FROM unnest(%(k_key)s::text[], %(k_job)s::text[], %(k_hash)s::text[]) AS k(k, j, h)"
    " ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id,"
    "  request_hash = excluded.request_hash, expires_at = excluded.expires_at"
    f") SELECT {JOB_COLUMNS} FROM ins"
)


def _claim_sql(picked: str) -> str:
    """A claim of the jobs `picked` selects: leases, attempts and events, in one statement."""
    return (
        f"WITH picked AS MATERIALIZED ({picked}"
        "), claimed AS ("
        " UPDATE conveyor_jobs j SET state = 'running', attempt = j.attempt + 1,"
        "  lease_owner = %(owner)s, lease_token = replace(gen_random_uuid()::text, '-', ''),"
        f"  lease_expires_at = {NOW} + make_interval(secs => %(lease)s),"
        f"  started_at = {NOW}, updated_at = {NOW}"
        " FROM picked WHERE j.id = picked.id"
        f" RETURNING {', '.join('j.' + c.strip() for c in JOB_COLUMNS.split(','))}"
        "), events AS ("
        " INSERT INTO conveyor_events (job_id, at, type, data)"
        " SELECT id, started_at, 'state', json_build_object('state', 'running',"
        "  'attempt', attempt, 'worker', lease_owner)"
        " FROM claimed ORDER BY priority DESC, run_at, id"
        f") SELECT {JOB_COLUMNS} FROM claimed ORDER BY priority DESC, run_at, id"
    )


_CANCEL_FOR_LIMIT = (
    "WITH waiting AS ("
    f" UPDATE conveyor_jobs SET state = 'cancelled', cancel_requested = true, finished_at = {NOW},"
    f"  updated_at = {NOW}, error = %(error)s::json WHERE id = ANY(%(waiting)s::text[])"
    "  AND finished_at IS NULL RETURNING id"
    "), running AS ("
    f" UPDATE conveyor_jobs SET cancel_requested = true, updated_at = {NOW}"
    "  WHERE id = ANY(%(running)s::text[]) AND state = 'running' RETURNING id"
    ") INSERT INTO conveyor_events (job_id, at, type, data)"
    f" SELECT id, {NOW}, 'state', json_build_object('state', 'cancelled',"
    "  'reason', 'concurrency_limited') FROM waiting"
    f" UNION ALL SELECT id, {NOW}, 'state', json_build_object('state', 'running',"
    "  'cancel_requested', true, 'reason', 'concurrency_limited') FROM running"
)

_FEED = (
    "WITH cursor AS ("
    " SELECT CASE WHEN %(after)s <= 0 THEN '0'::xid8 ELSE"  # from the start
    "  coalesce((SELECT xid FROM conveyor_events WHERE seq = %(after)s),"
    "  (SELECT min(xid) FROM conveyor_events WHERE seq > %(after)s)) END AS xid"
    ") SELECT seq, job_id, at, type, data FROM conveyor_events, cursor"
    " WHERE conveyor_events.xid < pg_snapshot_xmin(pg_current_snapshot())"
    " AND (conveyor_events.xid, seq) > (cursor.xid, %(after)s)"
    " ORDER BY conveyor_events.xid, seq LIMIT %(limit)s"
)

_SETTLE_SUCCEEDED = (
    "WITH u AS ("
    " SELECT * FROM unnest(%(id)s::text[], %(token)s::text[], %(result)s::text[])"
    "  WITH ORDINALITY AS u(id, token, result, ord)"
    "), done AS ("
    f" UPDATE conveyor_jobs j SET state = 'succeeded', result = u.result::json,"
    f"  finished_at = {NOW}, updated_at = {NOW}, lease_owner = NULL, lease_token = NULL,"
    "  lease_expires_at = NULL"
    " FROM u WHERE j.id = u.id AND j.lease_token = u.token AND j.state = 'running'"
    " RETURNING j.id, j.attempt, j.finished_at"
    "), events AS ("
    " INSERT INTO conveyor_events (job_id, at, type, data)"
    " SELECT done.id, done.finished_at, 'state',"
    "  json_build_object('state', 'succeeded', 'attempt', done.attempt)"
    " FROM done JOIN u ON u.id = done.id ORDER BY u.ord"
    ") SELECT id FROM done"
)

_SETTLE = (
    "UPDATE conveyor_jobs j SET state = u.state, run_at = coalesce(u.run_at, j.run_at),"
    " attempt = u.attempt, result = u.result::json, error = coalesce(u.error::json, j.error),"
    " finished_at = u.finished_at, updated_at = %(now)s, lease_owner = NULL,"
    " lease_token = NULL, lease_expires_at = NULL,"
    " progress = CASE WHEN u.reset THEN NULL ELSE j.progress END"
    " FROM unnest(%(id)s::text[], %(token)s::text[], %(state)s::text[],"
    "  %(run_at)s::timestamptz[], %(attempt)s::int[], %(result)s::text[], %(error)s::text[],"
    "  %(finished)s::timestamptz[], %(reset)s::bool[])"
    " AS u(id, token, state, run_at, attempt, result, error, finished_at, reset)"
    " WHERE j.id = u.id AND j.lease_token = u.token"
)


def _insert_params(
    specs: Sequence[JobSpec],
    now: datetime | None,
    cancelled: set[str] | None = None,
    waits: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    keyed = [s for s in specs if s.idempotency_key is not None]
    waits = waits or {}
    cancel_error = None
    if cancelled:
        cancel_error = limited_error("over its key's limit (cancel_newest)").model_dump_json()
    return {
        "ckey": [s.concurrency_key for s in specs],
        "ukey": [s.unique_key for s in specs],
        "sched": [s.schedule_id for s in specs],
        "tick": [None if s.schedule_tick is None else _dt(s.schedule_tick) for s in specs],
        "cancel": [s.id in (cancelled or ()) for s in specs],
        "deps": [_dumps(list(s.depends_on)) if s.depends_on else None for s in specs],
        "wf": [s.workflow_id for s in specs],
        "step": [s.step for s in specs],
        "parent": [s.parent_id for s in specs],
        "pending": [len(waits.get(s.id, ())) for s in specs],
        "cancel_error": cancel_error,
        "now": now,
        "window": max((s.idempotency_window_s for s in keyed), default=0.0),
        "id": [s.id for s in specs],
        "kind": [s.kind for s in specs],
        "queue": [s.queue for s in specs],
        "input": [_dumps(s.input) for s in specs],
        "priority": [s.priority for s in specs],
        "run_at": [_dt(s.run_at) for s in specs],
        "max_attempts": [s.max_attempts for s in specs],
        "timeout_s": [s.timeout_s for s in specs],
        "backoff_s": [s.backoff_s for s in specs],
        "tags": [_dumps(list(s.tags)) for s in specs],
        "ikey": [s.idempotency_key for s in specs],
        "webhook": [None if s.webhook is None else _dumps(s.webhook) for s in specs],
        "k_key": [s.idempotency_key for s in keyed],
        "k_job": [s.id for s in keyed],
        "k_hash": [s.request_hash for s in keyed],
    }


def _decide_all(
    settlements: Sequence[Settlement], current: dict[str, Row], now: datetime
) -> tuple[list[bool], dict[str, list[Any]], _Events, set[str]]:
    """Apply the rules to each settlement whose token is current (phase two's parameters)."""
    applied: list[bool] = []
    columns = ("id", "token", "state", "run_at", "attempt", "result", "error", "finished", "reset")
    update: dict[str, list[Any]] = {k: [] for k in columns}
    events = _Events()
    wake: set[str] = set()
    now_s = now.timestamp()
    for s in settlements:
        row = current.get(s.job_id)
        if row is None or row[0] != s.token:
            applied.append(False)
            continue
        current.pop(s.job_id)  # a second settlement of the same lease is stale
        d = rules.decide(
            outcome=s.outcome, attempt=row[1], max_attempts=row[2], backoff_s=row[3],
            cancel_requested=bool(row[4]), now=now_s, error=s.error, retry=s.retry,
        )  # fmt: skip
        if d.state is JobState.QUEUED or (d.state is JobState.SCHEDULED and d.run_at == now_s):
            wake.add(row[5])
        for key, value in (
            ("id", s.job_id), ("token", s.token), ("state", d.state.value),
            ("run_at", None if d.run_at is None else _dt(d.run_at)), ("attempt", d.attempt),
            ("result", _dumps(s.result) if d.state is JobState.SUCCEEDED else None),
            ("error", None if d.error is None else d.error.model_dump_json()),
            ("finished", now if d.finished else None),
            ("reset", d.state is JobState.QUEUED or d.state is JobState.BLOCKED),
        ):  # fmt: skip
            update[key].append(value)
        if d.state is not JobState.BLOCKED:  # a WAIT's event comes with its children
            events.add(s.job_id, now, "state", d.event_data())
        applied.append(True)
    return applied, update, events, wake


def _one_event(
    job_id: str, data: dict[str, Any], params: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    return (
        "INSERT INTO conveyor_events (job_id, at, type, data)"
        f" VALUES (%(id)s, {NOW}, 'state', %(data)s::json)",
        {**params, "data": _dumps(data)},
    )


def _event_model(row: Sequence[Any]) -> JobEvent:
    return JobEvent.model_construct(seq=row[0], job_id=row[1], at=row[2], type=row[3],
                                    data=row[4])  # fmt: skip


def _filter_sql(f: JobFilter) -> tuple[list[str], dict[str, Any]]:
    """The conditions on jobs of every filter but the tag (list_jobs joins the tag index)."""
    where: list[str] = []
    params: dict[str, Any] = {}
    if f.state:
        where.append("state = ANY(%(states)s::text[])")
        params["states"] = [s.value for s in f.state]
    for column, value in (("kind", f.kind), ("queue", f.queue)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    if f.created_after is not None:
        where.append("created_at >= %(after)s")
        params["after"] = f.created_after
    if f.created_before is not None:
        where.append("created_at < %(before)s")
        params["before"] = f.created_before
    if f.ids is not None:
        where.append("id = ANY(%(ids)s::text[])")
        params["ids"] = list(f.ids)
    for column, value in (("workflow_id", f.workflow_id), ("parent_id", f.parent_id)):
        if value is not None:
            where.append(f"{column} = %({column})s")
            params[column] = value
    return where, params


def _configure(conn: Conn) -> None:
    conn.execute(_SESSION_SETUP.encode())


def _rollback(conn: Conn) -> None:
    """Leave the connection idle after an error (the pool discards it if it is broken)."""
    if conn.closed:
        return
    with suppress(psycopg.Error):
        if conn.info.transaction_status in (pq.TransactionStatus.INTRANS,
                                            pq.TransactionStatus.INERROR):  # fmt: skip
            conn.execute("ROLLBACK")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _warn_if_not_durable(conn: Conn) -> None:
    rows = conn.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit')"
    ).fetchall()
    for name, setting in rows:
        if setting == "off":
            log.warning(
                "PostgreSQL has %s=off: acknowledged jobs may be lost if the server crashes;"
                " turn it on for the durability conveyor promises",
                name,
            )
