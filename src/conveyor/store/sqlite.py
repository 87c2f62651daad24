"""SQLite store: the embedded default. One file, WAL, no server.

Writes go through `BEGIN IMMEDIATE`, so concurrent processes serialize on the database lock
(waiting up to the busy timeout) instead of failing half-way. `synchronous=FULL` (the default)
makes every acknowledged write survive an OS crash or power loss; `NORMAL` survives process
crashes only. Memory stores (`memory://`) are this same code on a private in-memory database.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from conveyor import errors
from conveyor.clock import Clock, system_clock
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
    from_ts,
)
from conveyor.store import deps, rules, sqlite_deps, sqlite_flow
from conveyor.store.base import (
    Beat,
    BeatStatus,
    JobSpec,
    Settlement,
    batch_keys,
    created_event,
    job_from_values,
    new_job,
    read_kinds,
)
from conveyor.store.limits import LimitSet, Strategies, limited_error, purged_error, take
from conveyor.store.migrations import available
from conveyor.store.rules import Outcome
from conveyor.store.wake import SocketWaker, ThreadWaker

JOB_COLUMNS = (
    "id, kind, queue, state, input, priority, run_at, attempt, max_attempts, timeout_s, "
    "backoff_s, progress, result, error, tags, idempotency_key, webhook, lease_owner, "
    "lease_token, lease_expires_at, cancel_requested, created_at, started_at, finished_at, "
    "updated_at, concurrency_key, unique_key, schedule_id, schedule_tick, depends_on, "
    "workflow_id, step, parent_id, continuation"
)
WAITING = "('queued', 'scheduled')"
#: How long opening a file waits for another process that is migrating it.
MIGRATION_WAIT_S = 600
#: A claim by a tag carried by fewer jobs than this reads them from the tag index; with more,
#: it walks the waiting jobs of the queues instead (history can make a tag's jobs unbounded).
TAG_CLAIM_SCAN = 10_000


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


strict_loads = _loads


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _lenient(text: str | None) -> Any:
    try:
        return _loads(text)
    except orjson.JSONDecodeError:
        return None  # a row damaged outside conveyor: readable, never executed (see claim)


def row_to_job(row: Sequence[Any], loads: Callable[[str | None], Any] = _lenient) -> Job:
    """Build a Job from a row selected with JOB_COLUMNS (no validation: the store wrote it).

    JSON that does not decode reads as null; `claim` passes the strict decoder instead, so a
    job whose stored input is not JSON fails rather than running.
    """
    lease = None
    if row[18] is not None and row[3] == "running":
        lease = Lease(owner=row[17], token=row[18], expires_at=_ts(row[19]))
    progress = loads(row[11])
    error = loads(row[13])
    return job_from_values(
        id=row[0],
        kind=row[1],
        queue=row[2],
        state=JobState(row[3]),
        input=loads(row[4]),
        priority=row[5],
        run_at=_ts(row[6]),
        attempt=row[7],
        max_attempts=row[8],
        timeout_s=row[9],
        backoff_s=row[10],
        progress=None if progress is None else Progress.model_construct(**progress),
        result=loads(row[12]),
        error=None if error is None else JobError.model_construct(**error),
        tags=loads(row[14]),
        idempotency_key=row[15],
        webhook=loads(row[16]),
        lease=lease,
        cancel_requested=bool(row[20]),
        created_at=_ts(row[21]),
        started_at=from_ts(row[22]),
        finished_at=from_ts(row[23]),
        updated_at=_ts(row[24]),
        concurrency_key=row[25],
        unique_key=row[26],
        schedule_id=row[27],
        schedule_tick=from_ts(row[28]),
        waiting_reason=None,
        depends_on=[] if row[29] is None else loads(row[29]),
        workflow_id=row[30],
        step=row[31],
        parent_id=row[32],
        continuation=loads(row[33]),
    )


class _Inserted(NamedTuple):
    jobs: list[Job]
    unfinished: list[str]
    inserted: bool


class SqliteStore:
    """A `Store` on one SQLite file (or a private in-memory database)."""

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        synchronous: str = "FULL",
        busy_timeout_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self.path = str(path)
        self.clock: Clock = clock or system_clock
        in_memory = self.path == ":memory:"
        if not in_memory:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._limit_set = LimitSet()  # cached; sqlite_flow.limit_set re-reads on a new version
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
            if not in_memory:
                self._db.execute("PRAGMA journal_mode = WAL")
            self._synchronous = synchronous.upper()
            self._db.execute(f"PRAGMA synchronous = {self._synchronous}")
            self._migrate()
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self.path) from exc
        self._waker: ThreadWaker | SocketWaker = (
            ThreadWaker() if in_memory else SocketWaker(self.path)
        )

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> SqliteStore:
        """`sqlite:///relative.db`, `sqlite:////abs/path.db`; `memory://`.

        Options: `?synchronous=full|normal` (default full), `&busy_timeout=10` (seconds to wait
        for another process's write lock before answering "store unavailable").
        """
        if url.startswith("memory:"):
            return cls(":memory:", clock=clock)
        rest = url.split("://", 1)[1] if "://" in url else url
        path, _, query = rest.partition("?")
        if path.startswith("/"):
            path = path[1:]  # sqlite:///x.db is relative, sqlite:////x.db absolute
        options = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        sync = options.get("synchronous", "FULL")
        if sync.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise errors.ConfigurationError(f"unknown SQLite synchronous setting {sync!r}")
        try:
            busy = float(options.get("busy_timeout", "10"))
        except ValueError:
            raise errors.ConfigurationError("busy_timeout must be a number of seconds") from None
        return cls(path or ":memory:", synchronous=sync, busy_timeout_s=busy, clock=clock)

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        """Bring the file to the latest schema version (`PRAGMA user_version`).

        Pending migrations run in one `BEGIN IMMEDIATE` transaction, so processes opening
        the file at once serialize: one applies them, the others wait for its lock (up to
        `MIGRATION_WAIT_S`: a back-fill of millions of rows takes a while) and then find
        nothing left to do. A crash part-way leaves the previous version intact.
        """
        migrations = available("sqlite")
        latest = migrations[-1].version
        if self._schema_version() == latest:
            return
        busy_ms = self._db.execute("PRAGMA busy_timeout").fetchone()[0]
        self._db.execute(f"PRAGMA busy_timeout = {max(busy_ms, MIGRATION_WAIT_S * 1000)}")
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                version = self._schema_version()  # another process may have migrated meanwhile
                for migration in migrations:
                    if migration.version > version:
                        for statement in _statements(migration.sql):
                            self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {latest}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        finally:
            self._db.execute(f"PRAGMA busy_timeout = {busy_ms}")

    def _schema_version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        latest = available("sqlite")[-1].version
        if version > latest:
            raise errors.ConfigurationError(
                f"{self.path} has schema version {version}, newer than this conveyor ({latest});"
                " upgrade conveyor"
            )
        return version

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction. `durable=False` skips the commit fsync: for claims and
        heartbeats, whose loss in a power cut only means a job is claimed again (the lease
        token fences the lost claim). The next durable commit syncs the WAL up to it anyway.
        """
        with self._lock:
            relax = not durable and self._synchronous in ("FULL", "EXTRA")
            if relax:
                self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                yield from self._transaction()
            finally:
                if relax:
                    self._db.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise _translate(exc, self.path) from exc
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        try:
            self._db.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            self._db.execute("ROLLBACK")
            raise _translate(exc, self.path) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise _translate(exc, self.path) from exc

    def now(self) -> float:
        return self.clock()

    def ping(self) -> None:
        self._read("SELECT 1")

    def close(self) -> None:
        self._waker.close()
        with self._lock:
            self._db.close()

    @staticmethod
    def _event(job_id: str, at: float, type_: str, data: dict[str, Any]) -> tuple[Any, ...]:
        return (job_id, at, type_, _dumps(data))

    def _add_events(self, db: sqlite3.Connection, events: list[tuple[Any, ...]]) -> None:
        if events:
            db.executemany("INSERT INTO events (job_id, at, type, data) VALUES (?,?,?,?)", events)

    def _jobs_by_id(self, db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id IN ({marks})", chunk)
            found.update((row[0], row_to_job(row)) for row in rows)
        return found

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(self, specs: Sequence[JobSpec]) -> list[Job]:
        now = self.clock()
        with self._write() as db:
            done = self._insert(db, specs, now)
        if done.inserted:
            self._waker.notify()
        return done.jobs

    def _insert(
        self, db: sqlite3.Connection, specs: Sequence[JobSpec], now: float, *, build: bool = True
    ) -> _Inserted:
        """Insert jobs in the caller's transaction (enqueue, or the children of a WAIT): the
        jobs in order (a known idempotency or unique key's job in its spec's place; only with
        `build`), the ids of those not final, and whether any row was inserted."""
        created: dict[str, Job] = {}
        unfinished: list[str] = []
        existing = self._check_idempotency(db, specs, now)
        new = [s for s in specs if s.idempotency_key not in existing]
        duplicates, flow = self._flow_on_submit(db, new, now)
        alias = {s.id: existing[s.idempotency_key] for s in specs if s.idempotency_key in existing}
        alias.update(duplicates)
        inserted = [s for s in new if s.id not in duplicates]
        waits = deps.plan(
            inserted, alias, lambda ids: sqlite_deps.states(db, ids), flow.cancelled_specs
        )
        rows, events, keys = [], [], []
        tagged: list[tuple[str, str]] = []
        keyed: list[tuple[str, str]] = []
        for spec in new:
            if spec.id in duplicates:
                continue
            tagged.extend((tag, spec.id) for tag in spec.tags)
            if spec.concurrency_key is not None:
                keyed.append((spec.kind, spec.concurrency_key))
            state = rules.initial_state(spec.run_at, now)
            pending = len(waits.get(spec.id, ()))
            if pending:
                state = JobState.BLOCKED
            data = created_event(spec, state)
            finished, error = None, None
            if spec.id in flow.cancelled_specs:
                state, finished = JobState.CANCELLED, now
                data = {**created_event(spec, state), "reason": "concurrency_limited"}
                error = limited_error(f"over the limit of key:{spec.kind}").model_dump_json()
            else:
                unfinished.append(spec.id)
                if build:
                    created[spec.id] = new_job(spec, state, now)
            rows.append(
                (spec.id, spec.kind, spec.queue, state.value, _dumps(spec.input),
                 spec.priority, spec.run_at, spec.max_attempts, spec.timeout_s,
                 spec.backoff_s, _dumps(list(spec.tags)), spec.idempotency_key,
                 None if spec.webhook is None else _dumps(spec.webhook), now, now,
                 spec.concurrency_key, spec.unique_key, spec.schedule_id,
                 spec.schedule_tick, finished, error,
                 _dumps(list(spec.depends_on)) if spec.depends_on else None,
                 spec.workflow_id, spec.step, spec.parent_id, pending)
            )  # fmt: skip
            events.append(self._event(spec.id, now, "state", data))
            if spec.idempotency_key is not None:
                keys.append(
                    (spec.idempotency_key, spec.id, spec.request_hash,
                     now + spec.idempotency_window_s)
                )  # fmt: skip
        db.executemany(
            "INSERT INTO jobs (id, kind, queue, state, input, priority, run_at, max_attempts,"
            " timeout_s, backoff_s, tags, idempotency_key, webhook, created_at, updated_at,"
            " concurrency_key, unique_key, schedule_id, schedule_tick, finished_at, error,"
            " depends_on, workflow_id, step, parent_id, pending)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )
        if waits:
            sqlite_deps.add_edges(db, deps.edges(waits))
        if keyed:
            sqlite_flow.register_keys(db, keyed)
        db.executemany("INSERT OR REPLACE INTO idempotency VALUES (?,?,?,?)", keys)
        # The tag index, here rather than in a trigger, which costs twice as much per job
        # (see 0002_job_tags.sql). A tag given twice is indexed once.
        db.executemany("INSERT OR IGNORE INTO job_tags (tag, job_id) VALUES (?,?)", tagged)
        self._add_events(db, events)
        ids = [duplicates.get(s.id, existing.get(s.idempotency_key, s.id)) for s in specs]
        fresh = set(unfinished)
        known = [i for i in dict.fromkeys(ids) if i not in created and i not in fresh]
        if known:
            found = self._jobs_by_id(db, known)
            created.update(found)
            unfinished += [i for i, job in found.items() if not job.state.is_final]
        if flow.cancel_waiting:
            self._add_events(db, sqlite_deps.release(db, flow.cancel_waiting, now))
        jobs = [created[i] for i in ids] if build else []
        return _Inserted(jobs, unfinished, bool(rows))

    def _flow_on_submit(
        self, db: sqlite3.Connection, specs: Sequence[JobSpec], now: float
    ) -> tuple[dict[str, str], Strategies]:
        """Unique duplicates (spec id -> existing job id) and the cancel strategies' decisions
        for the new specs; the strategies' changes to stored jobs are written here."""
        flow = Strategies()
        duplicates: dict[str, str] = {}
        if any(s.unique_key is not None for s in specs):
            duplicates = sqlite_flow.unique_matches(db, specs, now)
        if not any(s.concurrency_key is not None for s in specs):
            return duplicates, flow
        limits = self._limits_in(db)
        fresh = [s for s in specs if s.id not in duplicates]
        if any(limits.strategy_limit(s.kind, s.concurrency_key) for s in fresh):
            flow = sqlite_flow.apply_strategies(db, fresh, limits)
            self._cancel_for_limit(db, flow, now)
        return duplicates, flow

    def _cancel_for_limit(self, db: sqlite3.Connection, flow: Strategies, now: float) -> None:
        error = limited_error("a newer job of its key took its place").model_dump_json()
        db.executemany(
            "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
            " updated_at = ?, error = ? WHERE id = ?",
            [(now, now, error, job_id) for job_id in flow.cancel_waiting],
        )
        db.executemany(
            "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
            [(now, job_id) for job_id in flow.stop_running],
        )
        reason = "concurrency_limited"
        self._add_events(db, [
            *(self._event(i, now, "state", {"state": "cancelled", "reason": reason})
              for i in flow.cancel_waiting),
            *(self._event(i, now, "state", {"state": "running", "cancel_requested": True,
                                           "reason": reason})
              for i in flow.stop_running),
        ])  # fmt: skip

    def _limits_in(self, db: sqlite3.Connection) -> LimitSet:
        self._limit_set = sqlite_flow.limit_set(db, self._limit_set)
        return self._limit_set

    def _check_idempotency(
        self, db: sqlite3.Connection, specs: Sequence[JobSpec], now: float
    ) -> dict[str | None, str]:
        existing: dict[str | None, str] = {}
        for key, request_hash in batch_keys(specs).items():
            row = db.execute(
                "SELECT job_id, request_hash FROM idempotency WHERE key = ? AND expires_at > ?",
                (key, now),
            ).fetchone()
            if row is not None:
                if row[1] != request_hash:
                    raise errors.IdempotencyConflictError(idempotency_key=key, job_id=row[0])
                existing[key] = row[0]
        return existing

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
        now = self.clock()
        with self._write(durable=False) as db:
            limits = self._limits_in(db)
            picked: list[str] | None = None
            if not limits.empty:
                queues = [q for q in queues if q not in limits.paused]
                if not queues:
                    return []
            if limits.limits:
                picked = sqlite_flow.pick(db, limits, queues, n, now, kinds, tag)
                if not picked:
                    return []
                selection, select_params = "SELECT value FROM json_each(?)", [_dumps(picked)]
            else:
                selection, select_params = _selection(db, queues, n, now, kinds, tag)
            rows = db.execute(
                f"UPDATE jobs SET state = 'running', attempt = attempt + 1, lease_owner = ?,"
                f" lease_token = lower(hex(randomblob(16))), lease_expires_at = ?,"
                f" started_at = ?, updated_at = ?"
                f" WHERE id IN ({selection})"
                f" RETURNING {JOB_COLUMNS}",
                (owner, now + lease_s, now, now, *select_params),
            ).fetchall()
            if picked is None:
                rows.sort(key=lambda r: (-r[5], r[6], r[0]))
            else:  # the order limits.choose took them in
                place = {job_id: i for i, job_id in enumerate(picked)}
                rows.sort(key=lambda r: place[r[0]])
            self._add_events(
                db,
                [
                    self._event(r[0], now, "state", {"state": "running", "attempt": r[7],
                                                     "worker": owner})
                    for r in rows
                ],
            )  # fmt: skip
            jobs = []
            for row in rows:
                try:
                    jobs.append(row_to_job(row, loads=strict_loads))
                except orjson.JSONDecodeError as exc:
                    self._fail_undecodable(db, row[0], str(exc), now)
        if len(jobs) < len(rows):  # fill the places of the rows that could not run
            jobs += self.claim(queues, owner, n - len(jobs), lease_s, kinds=kinds, tag=tag)
        return jobs

    def _fail_undecodable(self, db: sqlite3.Connection, job_id: str, why: str, now: float) -> None:
        """A row whose JSON was damaged outside conveyor fails at once, never reaching a
        handler: one bad row must not crash every worker that claims it."""
        error = JobError(
            type="InvalidPayload",
            message=f"the stored job is not valid JSON and cannot run ({why})",
            reason="invalid_input",
        )
        db.execute(
            "UPDATE jobs SET state = 'failed', error = ?, finished_at = ?, updated_at = ?,"
            " lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL WHERE id = ?",
            (error.model_dump_json(), now, now, job_id),
        )
        data = {"state": "failed", "error": error.model_dump(exclude={"traceback"})}
        self._add_events(db, [self._event(job_id, now, "state", data)])
        self._add_events(db, sqlite_deps.release(db, [job_id], now))

    def heartbeat(self, beats: Sequence[Beat], lease_s: float) -> dict[str, BeatStatus]:
        if not beats:
            return {}
        now = self.clock()
        statuses: dict[str, BeatStatus] = {}
        with self._write(durable=False) as db:
            events = []
            for beat in beats:
                progress = None if beat.progress is None else beat.progress.model_dump_json()
                row = db.execute(
                    "UPDATE jobs SET lease_expires_at = ?, updated_at = ?,"
                    " progress = COALESCE(?, progress)"
                    " WHERE id = ? AND lease_token = ? AND state = 'running'"
                    " RETURNING cancel_requested",
                    (now + lease_s, now, progress, beat.job_id, beat.token),
                ).fetchone()
                if row is None:
                    statuses[beat.job_id] = BeatStatus.LOST
                    continue
                statuses[beat.job_id] = BeatStatus.CANCEL if row[0] else BeatStatus.OK
                if beat.progress is not None:
                    events.append(
                        self._event(beat.job_id, now, "progress", beat.progress.model_dump())
                    )
                events.extend(self._event(beat.job_id, now, "log", {"line": line})
                              for line in beat.logs)  # fmt: skip
            self._add_events(db, events)
        return statuses

    def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        now = self.clock()
        woke = False
        with self._write() as db:
            current = self._running_rows(db, [s.job_id for s in settlements])
            applied, updates, events = [], [], []
            finals, waits = [], []
            for s in settlements:
                row = current.get(s.job_id)
                if row is None or row[0] != s.token:
                    applied.append(False)
                    continue
                current.pop(s.job_id)  # a second settlement of the same lease is stale
                decision = rules.decide(
                    outcome=s.outcome, attempt=row[1], max_attempts=row[2], backoff_s=row[3],
                    cancel_requested=bool(row[4]), now=now, error=s.error, retry=s.retry,
                )  # fmt: skip
                data = decision.event_data()
                if decision.state is JobState.BLOCKED:
                    decision, data, pending = self._spawn(db, s, decision, now)
                    waits.append((_dumps(s.continuation), pending, s.job_id))
                woke = woke or decision.state is JobState.QUEUED
                updates.append(self._settle_row(s, decision, now))
                events.append(self._event(s.job_id, now, "state", data))
                if decision.finished:
                    finals.append(s.job_id)
                applied.append(True)
            db.executemany(
                "UPDATE jobs SET state = ?, run_at = COALESCE(?, run_at), attempt = ?,"
                " result = ?, error = COALESCE(?, error), finished_at = ?, updated_at = ?,"
                " lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,"
                " progress = CASE WHEN ? THEN NULL ELSE progress END"
                " WHERE id = ? AND lease_token = ?",
                updates,
            )
            db.executemany("UPDATE jobs SET continuation = ?, pending = ? WHERE id = ?", waits)
            self._add_events(db, events)
            released = sqlite_deps.release(db, finals, now)
            self._add_events(db, released)
            woke = woke or bool(released)
        if woke:
            self._waker.notify()
        return applied

    def _spawn(
        self, db: sqlite3.Connection, s: Settlement, decision: rules.Decision, now: float
    ) -> tuple[rules.Decision, dict[str, Any], int]:
        """A WAIT: insert the job's children and block it on those not final; with none to
        wait for, it is queued again at once. Returns its decision, event data and count."""
        waits = self._insert(db, deps.as_children(s.job_id, s.spawn), now, build=False).unfinished
        if not waits:
            queued = replace(decision, state=JobState.QUEUED)
            return queued, queued.event_data(), 0
        sqlite_deps.add_edges(db, [(child, s.job_id) for child in dict.fromkeys(waits)])
        pending = len(set(waits))
        return decision, rules.blocked_event(pending, decision.attempt), pending

    @staticmethod
    def _settle_row(s: Settlement, d: rules.Decision, now: float) -> tuple[Any, ...]:
        result = _dumps(s.result) if d.state is JobState.SUCCEEDED else None
        error = None if d.error is None else d.error.model_dump_json()
        reset_progress = d.state is JobState.QUEUED or d.state is JobState.BLOCKED
        return (
            d.state.value, d.run_at, d.attempt, result, error,
            now if d.finished else None, now, reset_progress, s.job_id, s.token,
        )  # fmt: skip

    def _running_rows(
        self, db: sqlite3.Connection, ids: Sequence[str]
    ) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(
                "SELECT id, lease_token, attempt, max_attempts, backoff_s, cancel_requested"
                f" FROM jobs WHERE state = 'running' AND id IN ({marks})",
                chunk,
            ):
                found[row[0]] = tuple(row[1:])
        return found

    def rescue(self, owner: str | None = None) -> list[str]:
        now = self.clock()
        with self._write() as db:
            if owner is None:
                leases = db.execute(
                    "SELECT id, lease_token FROM jobs WHERE state = 'running'"
                    " AND lease_expires_at < ?",
                    (now,),
                ).fetchall()
            else:
                leases = db.execute(
                    "SELECT id, lease_token FROM jobs WHERE state = 'running' AND lease_owner = ?",
                    (owner,),
                ).fetchall()
            promoted = db.execute(
                "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'scheduled'"
                " AND run_at <= ? RETURNING id",
                (now, now),
            ).fetchall()
            self._add_events(
                db, [self._event(r[0], now, "state", {"state": "queued"}) for r in promoted]
            )
        lost = [Settlement(job_id, token, Outcome.LOST) for job_id, token in leases]
        settled = self.settle(lost)
        if promoted:
            self._waker.notify()
        return [s.job_id for s, ok in zip(lost, settled, strict=True) if ok]

    # -- user operations ----------------------------------------------------------------------

    def cancel(self, job_id: str) -> Job:
        now = self.clock()
        with self._write() as db:
            job = self._get(db, job_id)
            rules.ensure_cancellable(job_id, job.state)
            if job.state is JobState.RUNNING:
                db.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                    (now, job_id),
                )
                event = {"state": "running", "cancel_requested": True}
            else:
                db.execute(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                    " updated_at = ? WHERE id = ?",
                    (now, now, job_id),
                )
                event = {"state": "cancelled"}
            self._add_events(db, [self._event(job_id, now, "state", event)])
            released = (
                sqlite_deps.release(db, [job_id], now) if event["state"] == "cancelled" else []
            )
            self._add_events(db, released)
            job = self._get(db, job_id)
        if released:
            self._waker.notify()
        return job

    def rewind(self, job_ids: Sequence[str]) -> list[Job]:
        now = self.clock()
        wanted = list(dict.fromkeys(job_ids))
        with self._write() as db:
            jobs = self._jobs_by_id(db, wanted)
            for job_id in wanted:
                if job_id not in jobs:
                    raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
                rules.ensure_retryable(job_id, jobs[job_id].state)
            outcome = sqlite_deps.rewind(db, {i: jobs[i].depends_on for i in wanted}, now)
            self._add_events(db, [
                self._event(i, now, "state", {"state": state.value, "retried": True})
                for i, (state, _) in outcome.items()
            ])  # fmt: skip
            keyed = [(j.kind, j.concurrency_key) for j in jobs.values() if j.concurrency_key]
            if keyed:
                sqlite_flow.register_keys(db, keyed)
            jobs = self._jobs_by_id(db, wanted)
        self._waker.notify()
        return [jobs[i] for i in job_ids]

    def retry(self, job_id: str) -> Job:
        now = self.clock()
        with self._write() as db:
            job = self._get(db, job_id)
            rules.ensure_retryable(job_id, job.state)
            db.execute(
                "UPDATE jobs SET state = 'queued', attempt = 0, run_at = ?, cancel_requested = 0,"
                " finished_at = NULL, result = NULL, progress = NULL, updated_at = ?"
                " WHERE id = ?",
                (now, now, job_id),
            )
            event = self._event(job_id, now, "state", {"state": "queued", "retried": True})
            self._add_events(db, [event])
            if job.concurrency_key is not None:
                sqlite_flow.register_keys(db, [(job.kind, job.concurrency_key)])
            job = self._get(db, job_id)
        self._waker.notify()
        return job

    def delete(self, job_id: str) -> None:
        with self._write() as db:
            job = self._get(db, job_id)
            rules.ensure_deletable(job_id, job.state)
            db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def _get(self, db: sqlite3.Connection, job_id: str) -> Job:
        row = db.execute(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        return row_to_job(row)

    def get(self, job_id: str) -> Job:
        rows = self._read(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        return self._with_reasons([row_to_job(rows[0])])[0]

    def _with_reasons(self, jobs: list[Job]) -> list[Job]:
        """Fill `waiting_reason` of queued jobs a limit or a paused queue holds back (only
        read at all when the store has limits or paused queues)."""
        if not any(job.state is JobState.QUEUED for job in jobs):
            return jobs
        with self._lock:
            limits = self._limits_in(self._db)
            if limits.empty:
                return jobs
            admit = sqlite_flow.admission(self._db, limits, self.clock())
            for job in jobs:
                if job.state is JobState.QUEUED:
                    why = admit.blocked(job.queue, job.kind, job.concurrency_key)
                    job.waiting_reason = None if why is None else why[0]
        return jobs

    def list_jobs(self, filter: JobFilter, cursor: str | None = None, limit: int = 50) -> JobPage:
        where, params = _filter_sql(filter)
        source, order = "jobs", "id"
        if filter.tag is not None:
            # Walk the tag's index rows newest first and stop at a full page, whatever the
            # other filters: a rare tag reads only its own jobs, a common one only a page.
            source, order = "job_tags JOIN jobs ON jobs.id = job_tags.job_id", "job_tags.job_id"
            where.insert(0, "job_tags.tag = ?")
            params.insert(0, filter.tag)
        if cursor:
            where.append(f"{order} < ?")
            params.append(cursor)
        sql = f"SELECT {JOB_COLUMNS} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {order} DESC LIMIT ?"
        rows = self._read(sql, [*params, limit + 1])
        jobs = self._with_reasons([row_to_job(r) for r in rows[:limit]])
        next_cursor = jobs[-1].id if len(rows) > limit else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        rows = self._read(
            "SELECT seq, job_id, at, type, data FROM events WHERE job_id = ? AND seq > ?"
            " ORDER BY seq LIMIT ?",
            (job_id, after, limit),
        )
        return [_event_model(r) for r in rows]

    def feed(self, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        rows = self._read(
            "SELECT seq, job_id, at, type, data FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, limit),
        )
        return [_event_model(r) for r in rows]

    # -- records ------------------------------------------------------------------------------

    def put_record(self, collection: str, key: str, value: dict[str, Any]) -> None:
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO records (collection, key, value, updated_at)"
                " VALUES (?,?,?,?)",
                (collection, key, _dumps(value), self.clock()),
            )

    def get_record(self, collection: str, key: str) -> dict[str, Any] | None:
        rows = self._read(
            "SELECT value FROM records WHERE collection = ? AND key = ?", (collection, key)
        )
        return json.loads(rows[0][0]) if rows else None

    def list_records(self, collection: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        rows = self._read(
            "SELECT key, value FROM records WHERE collection = ? AND substr(key, 1, ?) = ?"
            " ORDER BY key",
            (collection, len(prefix), prefix),
        )
        return [(key, json.loads(value)) for key, value in rows]

    def delete_record(self, collection: str, key: str) -> bool:
        with self._write() as db:
            gone = db.execute(
                "DELETE FROM records WHERE collection = ? AND key = ? RETURNING key",
                (collection, key),
            ).fetchall()
        return bool(gone)

    # -- kinds, workers, stats, retention --------------------------------------------------

    def register_kinds(self, kinds: Sequence[KindInfo]) -> None:
        now = self.clock()
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO kinds (name, info, updated_at) VALUES (?,?,?)",
                [(k.name, k.model_dump_json(exclude={"updated_at"}), now) for k in kinds],
            )

    def kinds(self) -> list[KindInfo]:
        rows = self._read("SELECT info, updated_at FROM kinds ORDER BY name")
        stored = ((_lenient(info) or {}, at) for info, at in rows)
        return read_kinds({**info, "updated_at": from_ts(at)} for info, at in stored)

    def worker_beat(self, info: WorkerInfo) -> None:
        with self._write() as db:
            if info.state == "stopped":
                db.execute("DELETE FROM workers WHERE id = ?", (info.id,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO workers (id, info, last_seen) VALUES (?,?,?)",
                    (info.id, info.model_dump_json(), self.clock()),
                )

    def workers(self) -> list[WorkerInfo]:
        rows = self._read("SELECT info, last_seen FROM workers ORDER BY id")
        return [
            WorkerInfo.model_validate({**json.loads(info), "last_seen": from_ts(seen)})
            for info, seen in rows
        ]

    def queue_stats(self) -> list[QueueStats]:
        now = self.clock()
        stats: dict[str, QueueStats] = {}
        for queue, state, count in self._read(
            "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
        ):
            setattr(stats.setdefault(queue, QueueStats(name=queue)), state, count)
        for queue, oldest in self._read(
            f"SELECT queue, min(run_at) FROM jobs WHERE state IN {WAITING} AND run_at <= ?"
            " GROUP BY queue",
            (now,),
        ):
            stats[queue].oldest_queued_age_s = max(0.0, now - oldest)
        for queue, count in self._read(
            "SELECT queue, count(*) FROM jobs WHERE finished_at > ? GROUP BY queue", (now - 60,)
        ):
            stats[queue].finished_last_minute = count
        for (queue,) in self._read("SELECT queue FROM paused_queues"):
            stats.setdefault(queue, QueueStats(name=queue)).paused = True
        return [stats[name] for name in sorted(stats)]

    def prune(self, finished_before: float, limit: int = 10_000) -> list[str]:
        with self._write() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?"
                    " AND state IN ('succeeded', 'failed', 'cancelled') LIMIT ?",
                    (finished_before, limit),
                )
            ]
            db.executemany("DELETE FROM events WHERE job_id = ?", [(i,) for i in ids])
            db.executemany("DELETE FROM jobs WHERE id = ?", [(i,) for i in ids])
            db.execute("DELETE FROM idempotency WHERE expires_at < ?", (self.clock(),))
        return ids

    # -- flow control --------------------------------------------------------------------------

    def set_limit(self, limit: Limit) -> Limit:
        now = self.clock()
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO limits (target, max_running, rate, per_s, strategy,"
                " updated_at) VALUES (?,?,?,?,?,?)",
                (limit.target, limit.max_running, limit.rate, limit.per_s, limit.strategy, now),
            )
            sqlite_flow.bump(db)
        self._waker.notify()  # a raised limit may let waiting jobs start
        return limit.model_copy(update={"updated_at": from_ts(now)})

    def delete_limit(self, target: str) -> bool:
        with self._write() as db:
            gone = db.execute("DELETE FROM limits WHERE target = ? RETURNING 1", (target,))
            found = bool(gone.fetchall())
            if found:
                sqlite_flow.bump(db)
        if found:
            self._waker.notify()
        return found

    def limits(self) -> list[Limit]:
        with self._lock:
            found = self._limits_in(self._db).limits
        return sorted(found.values(), key=lambda lim: lim.target)

    def pause_queue(self, queue: str, paused: bool) -> None:
        with self._write() as db:
            if paused:
                db.execute(
                    "INSERT OR IGNORE INTO paused_queues (queue, paused_at) VALUES (?,?)",
                    (queue, self.clock()),
                )
            else:
                db.execute("DELETE FROM paused_queues WHERE queue = ?", (queue,))
            sqlite_flow.bump(db)
        if not paused:
            self._waker.notify()

    def purge_queue(self, queue: str) -> int:
        now = self.clock()
        error = purged_error(queue).model_dump_json()
        with self._write() as db:
            ids = db.execute(
                "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at = ?,"
                f" updated_at = ?, error = ? WHERE queue = ? AND state IN {WAITING}"
                " RETURNING id",
                (now, now, error, queue),
            ).fetchall()
            data = {"state": "cancelled", "reason": "purged"}
            self._add_events(db, [self._event(i, now, "state", data) for (i,) in ids])
            self._add_events(db, sqlite_deps.release(db, [i for (i,) in ids], now))
        return len(ids)

    def take_tokens(self, key: str, n: int, rate: int, per_s: float) -> float:
        now = self.clock()
        with self._write(durable=False) as db:
            bucket = sqlite_flow.bucket_loader(db)([key]).get(key)
            tokens, wait = take(bucket, n, rate, per_s, now)
            if wait == 0:
                sqlite_flow.write_buckets(db, [(key, tokens, now)])
        return wait

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        self._waker.wait(timeout)


def _event_model(row: Sequence[Any]) -> JobEvent:
    return JobEvent.model_construct(
        seq=row[0], job_id=row[1], at=_ts(row[2]), type=row[3], data=json.loads(row[4])
    )


def _filter_sql(f: JobFilter) -> tuple[list[str], list[Any]]:
    """The conditions on `jobs` of every filter but the tag (list_jobs joins the tag index)."""
    where: list[str] = []
    params: list[Any] = []
    if f.state:
        where.append(f"state IN ({','.join('?' * len(f.state))})")
        params.extend(s.value for s in f.state)
    for column, value in (("kind", f.kind), ("queue", f.queue)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if f.created_after is not None:
        where.append("created_at >= ?")
        params.append(f.created_after.timestamp())
    if f.created_before is not None:
        where.append("created_at < ?")
        params.append(f.created_before.timestamp())
    if f.ids is not None:
        where.append(f"id IN ({','.join('?' * len(f.ids))})")
        params.extend(f.ids)
    for column, value in (("workflow_id", f.workflow_id), ("parent_id", f.parent_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    return where, params


def _selection(
    db: sqlite3.Connection,
    queues: Sequence[str],
    n: int,
    now: float,
    kinds: Sequence[str] | None,
    tag: str | None,
) -> tuple[str, list[Any]]:
    """The query (and its parameters) for the ids of up to n due jobs, best first: a claim
    under no limit."""
    marks = ",".join("?" * len(queues))
    extra, extra_params = "", list[Any]()
    if kinds:
        extra += f" AND kind IN ({','.join('?' * len(kinds))})"
        extra_params.extend(kinds)
    source, source_params = "jobs", list[Any]()
    if tag is not None and _few_tagged(db, tag):
        # Read the tag's few jobs from its index: without statistics the planner would walk
        # every waiting job of the queues, testing each for the tag.
        source = "job_tags CROSS JOIN jobs ON jobs.id = job_tags.job_id AND tag = ?"
        source_params.append(tag)
    elif tag is not None:
        extra += " AND id IN (SELECT job_id FROM job_tags WHERE tag = ?)"
        extra_params.append(tag)
    selection = (
        f"SELECT id FROM {source} WHERE state IN {WAITING} AND queue IN ({marks})"
        f" AND run_at <= ?{extra} ORDER BY priority DESC, run_at, id LIMIT ?"
    )
    return selection, [*source_params, *queues, now, *extra_params, n]


def _few_tagged(db: sqlite3.Connection, tag: str) -> bool:
    """Whether fewer than TAG_CLAIM_SCAN jobs carry `tag` (counting stops there)."""
    row = db.execute(
        "SELECT count(*) FROM (SELECT 1 FROM job_tags WHERE tag = ? LIMIT ?)",
        (tag, TAG_CLAIM_SCAN),
    ).fetchone()
    return int(row[0]) < TAG_CLAIM_SCAN


def _statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one by one (a trigger body holds `;` of its own), so
    they run inside the caller's transaction (`executescript` would commit it)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def _translate(exc: sqlite3.DatabaseError, path: str) -> errors.ConveyorError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return errors.StoreUnavailableError(
            f"the database {path} stayed locked by another process; try again"
        )
    if "not a database" in text or "malformed" in text:
        return errors.ConfigurationError(
            f"{path} is not a conveyor database or is damaged ({text}); point CONVEYOR_STORE at"
            " another file or restore it from a backup"
        )
    if "unable to open" in text or "readonly" in text:
        return errors.ConfigurationError(f"cannot open the database {path}: {text}")
    return errors.StoreUnavailableError(f"database error on {path}: {text}")
