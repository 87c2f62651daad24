"""Redis store: many machines on one Redis server, every state change one atomic Lua script.

Each job is a hash; ready jobs sit in a sorted set per queue (claim order), delayed jobs and
retries in a sorted set per queue by run_at, live leases in one sorted set by deadline. Every
script that changes a job's state also appends its events (to the job's log and to the
store-wide feed, numbered by one `INCRBY` per script), so no state change is ever missing
its event.
Decisions (what a settled or lost job becomes) are made in Python by `store/rules.py`; the
script applies them only if the lease token is still current (fencing).

Durability is Redis's: the store refuses to start unless the append-only file is on (see
docs/stores.md for what `appendfsync everysec` and `always` give), unless explicitly allowed.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.client import PubSub
from redis.commands.core import Script
from redis.retry import Retry

from conveyor import errors
from conveyor.clock import Clock
from conveyor.ids import new_token
from conveyor.models import (
    Job,
    JobEvent,
    JobFilter,
    JobPage,
    JobState,
    KindInfo,
    Limit,
    QueueStats,
    WorkerInfo,
    from_ts,
)
from conveyor.store import deps, redis_flow, rules
from conveyor.store import redis_codec as codec
from conveyor.store.base import (
    Beat,
    BeatStatus,
    JobSpec,
    Settlement,
    batch_keys,
    new_job,
    read_kinds,
)
from conveyor.store.limits import QuietReads, limited_error, purged_error, take
from conveyor.store.rules import Outcome

log = logging.getLogger("conveyor.store.redis")

ALLOW_VOLATILE_ENV = "CONVEYOR_REDIS_ALLOW_VOLATILE"
PURGE_CHUNK = 1_000  # jobs a purge script call cancels: bounds how long one call blocks Redis
SETTLE_CHUNK = 1_000  # settlements per script call: bounds how long one call blocks Redis
RESCUE_LIMIT = 100_000  # leases looked at per rescue sweep
PRUNE_CHUNK = 1_000
CLAIM_SCAN_LIMIT = 50_000  # ready jobs a filtered (kind/tag) claim looks at per queue
LIST_PAGE = 200
SCRIPTS = (
    "enqueue", "claim", "heartbeat", "lookup", "settle", "rescue", "change", "prune", "stats",
    "index_tags", "census", "rewind", "purge", "tokens",
)  # fmt: skip
INDEX_CHUNK = 1_000  # jobs per call of the tag index back-fill
#: Set once every job is in the tag indexes (stores written before they existed are back-filled
#: on open).
TAGS_INDEXED = "indexed:tags"
#: Set once the census of waiting kinds per queue (k_waiting in common.lua) is complete.
KINDS_COUNTED = "indexed:waiting"
Rows = dict[str, dict[str, str]]  # job id -> LOOKUP_FIELDS of a running job
LOOKUP_FIELDS = ("lease_token", "attempt", "max_attempts", "backoff_s", "cancel_requested")
_TRUE = ("1", "true", "yes", "on")


#: Scripts that load helpers beyond common.lua (before their own file).
SCRIPT_PARTS = {"claim": ("flow",)}


class _WaitNotApplied(Exception):
    """enqueue.lua did not apply a WAIT: its lease is stale, or a cancel came meanwhile."""


def _script_source(name: str) -> str:
    lua = resources.files("conveyor.store").joinpath("lua")
    parts = ("common", *SCRIPT_PARTS.get(name, ()), name)
    return "\n".join(lua.joinpath(f"{part}.lua").read_text() for part in parts)


class RedisStore:
    """A `Store` on a Redis server (5.0 or newer), keys under one prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "conveyor:",
        clock: Clock | None = None,
        allow_volatile: bool = False,
        where: str = "redis",
    ) -> None:
        self._r = client
        self.prefix = prefix
        self.clock = clock
        self._where = where
        self._scripts: dict[str, Script] = {
            name: client.register_script(_script_source(name)) for name in SCRIPTS
        }
        self._pubsub: PubSub | None = None
        self._channels: set[str] = set()  # subscribed (touched only by the reading thread)
        self._channels_wanted: set[str] = set()
        self._wake = threading.Condition()
        self._wakes = 0  # publishes seen so far
        self._reading = False
        self._closed = False
        self._quiet_reads = QuietReads()
        with self._errors():
            self._check_persistence(allow_volatile)
            for script in self._scripts.values():  # load once; EVALSHA from here on (redis-py
                client.script_load(script.script)  # reloads them if a restarted Redis forgot)
            self._index_tags_of_older_jobs()
            self._count_kinds_of_older_jobs()

    @classmethod
    def from_url(cls, url: str, clock: Clock | None = None) -> RedisStore:
        """`redis://[user:pass@]host:port/db`, `rediss://…` (TLS), `unix:///path.sock?db=0`.

        Query options of our own: `prefix` (default `conveyor:`), `allow_no_persistence=1`
        (start even when the append-only file is off; also `CONVEYOR_REDIS_ALLOW_VOLATILE=1`).
        Others (e.g. `socket_timeout`) go to redis-py.
        """
        parts = urlsplit(url)
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name in ("prefix", "allow_no_persistence"):
                ours[name] = value
            else:
                theirs.append((name, value))
        clean = urlunsplit(parts._replace(query=urlencode(theirs)))
        allow = ours.get("allow_no_persistence", "").lower() in _TRUE
        allow = allow or os.environ.get(ALLOW_VOLATILE_ENV, "").lower() in _TRUE
        prefix = ours.get("prefix", "conveyor:")
        if not prefix:
            raise errors.ConfigurationError("the Redis key prefix must not be empty")
        try:
            client = redis.Redis.from_url(
                clean,
                decode_responses=True,
                # Fail fast when Redis is gone or the network silently cut (callers answer 503
                # and retry; a worker's loop gets back to its children), yet leave room for a
                # big batch script on a busy server; both can be set in the URL.
                socket_connect_timeout=2.0,
                socket_timeout=5.0,
                # No silent retries: a script whose reply was lost may have run; the caller
                # (worker loop, API client) decides, and fencing makes a repeat harmless.
                retry=Retry(NoBackoff(), 0),
                health_check_interval=30,
            )
        except ValueError as exc:
            raise errors.ConfigurationError(f"cannot read the Redis URL: {exc}") from exc
        where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
        return cls(client, prefix=prefix, clock=clock, allow_volatile=allow, where=where)

    # -- plumbing ---------------------------------------------------------------------------

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise errors.StoreUnavailableError(
                f"Redis at {self._where} is unavailable: {exc}"
            ) from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if text.startswith(("MISCONF", "READONLY", "LOADING", "MASTERDOWN", "BUSY")):
                raise errors.StoreUnavailableError(
                    f"Redis at {self._where} cannot take writes now: {text}"
                ) from exc
            raise

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call a redis-py command (typed loosely there: replies are str, we decode them)."""
        with self._errors():
            return fn(*args)

    def _run(self, name: str, args: Sequence[Any]) -> Any:
        with self._errors():
            return self._scripts[name](args=[self.prefix, self._now_arg(), *args])

    def _now_arg(self) -> str:
        return "" if self.clock is None else repr(float(self.clock()))

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _index_tags_of_older_jobs(self) -> None:
        """Back-fill the tag indexes once, for jobs an older conveyor stored without them.
        Processes opening the store at once may each run it: entering a job twice is
        harmless. An empty store is left untouched (its jobs will be indexed as they come)."""
        if self._r.exists(self._key(TAGS_INDEXED)) or not self._r.exists(self._key("all")):
            return
        last = ""
        while last := self._run("index_tags", [last, INDEX_CHUNK]):
            pass
        self._r.set(self._key(TAGS_INDEXED), "1")

    def _count_kinds_of_older_jobs(self) -> None:
        """Count the waiting jobs by kind once, for stores written before the census (one
        script, census.lua: for a queue of a million jobs a second or so, once). An empty store
        is left untouched: its census is kept from its first job on."""
        marker = self._key(KINDS_COUNTED)
        if not self._r.exists(marker) and self._r.exists(self._key("queues")):
            self._run("census", [marker])

    def _check_persistence(self, allow_volatile: bool) -> None:
        with suppress(redis.ResponseError):  # CONFIG is disabled on some managed services
            policy = str(self._r.config_get("maxmemory-policy").get("maxmemory-policy", ""))
            if policy.startswith("allkeys"):
                log.warning(
                    "!!! Redis at %s has maxmemory-policy %s: when it fills up it evicts"
                    " jobs silently. Use noeviction (or a volatile-* policy) !!!",
                    self._where,
                    policy,
                )
        info = self._r.info("persistence")
        if int(info.get("aof_enabled", 0)):
            fsync = "unknown"
            with suppress(redis.ResponseError):  # CONFIG is disabled on some managed services
                fsync = str(self._r.config_get("appendfsync").get("appendfsync", fsync))
            log.info("Redis at %s: append-only file on (appendfsync %s)", self._where, fsync)
            return
        if not allow_volatile:
            raise errors.ConfigurationError(
                f"Redis at {self._where} has persistence off (appendonly no): a restart would"
                " lose accepted jobs. Turn it on (CONFIG SET appendonly yes, or appendonly yes"
                " in redis.conf), or, for throwaway setups only, add ?allow_no_persistence=1 to"
                f" the store URL or set {ALLOW_VOLATILE_ENV}=1"
            )
        log.warning(
            "!!! Redis at %s has persistence OFF (appendonly no): every job is lost if Redis"
            " restarts. Allowed by allow_no_persistence / %s; never do this in production !!!",
            self._where,
            ALLOW_VOLATILE_ENV,
        )

    def _fetch(self, ids: Sequence[str]) -> dict[str, Job]:
        found: dict[str, Job] = {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            with self._errors():
                pipe = self._r.pipeline(transaction=False)
                for job_id in chunk:
                    pipe.hgetall(self._key("job", job_id))
                hashes: list[dict[str, str]] = pipe.execute()
            found.update(
                (job_id, codec.hash_to_job(h)) for job_id, h in zip(chunk, hashes, strict=True) if h
            )
        return found

    def now(self) -> float:
        if self.clock is not None:
            return self.clock()
        seconds, micros = self._call(self._r.time)
        return float(seconds + micros / 1e6)

    def ping(self) -> None:
        self._call(self._r.ping)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            if not self._reading:
                self._drop_pubsub()  # else the reading thread drops it when its wait ends
            self._wake.notify_all()
        self._r.close()
        self._r.connection_pool.disconnect()

    # -- enqueue ------------------------------------------------------------------------------

    def enqueue(self, specs: Sequence[JobSpec]) -> list[Job]:
        if not specs:
            return []
        return self._enqueue(specs, ["", "", "", ""])

    def _enqueue(self, specs: Sequence[JobSpec], wait: list[Any]) -> list[Job]:
        """enqueue.lua: insert `specs`, and with `wait` (a WAIT's job id, token, assumed
        cancel flag and continuation) settle that job blocked on them, in the same script."""
        batch_keys(specs)
        window = max((s.idempotency_window_s for s in specs), default=0.0)
        cancel_error = limited_error("over its key's limit (cancel_newest)").model_dump_json()
        args: list[Any] = [repr(window), len(specs), cancel_error]
        for s in specs:
            args += [
                s.id, s.kind, s.queue, codec.dumps(s.input), s.priority, repr(float(s.run_at)),
                s.max_attempts, "" if s.timeout_s is None else repr(float(s.timeout_s)),
                repr(float(s.backoff_s)), codec.dumps(list(s.tags)),
                "" if s.idempotency_key is None else "k:" + s.idempotency_key,
                "" if s.request_hash is None else "h:" + s.request_hash,
                "" if s.webhook is None else codec.dumps(s.webhook),
                s.concurrency_key or "", "" if s.unique_key is None else "u:" + s.unique_key,
                s.unique_scope, "" if s.unique_window_s is None else repr(s.unique_window_s),
                s.schedule_id or "",
                "" if s.schedule_tick is None else repr(float(s.schedule_tick)),
                codec.dumps(list(s.depends_on)) if s.depends_on else "", s.workflow_id or "",
                s.step or "", s.parent_id or "",
            ]  # fmt: skip
        reply = self._run("enqueue", [*args, *wait])
        if reply[0] == "conflict":
            raise errors.IdempotencyConflictError(idempotency_key=reply[1], job_id=reply[2])
        if reply[0] == "missing":
            raise errors.JobNotFoundError(
                f"no job with id {reply[1]!r} to depend on", job_id=reply[1]
            )
        if reply[0] in ("stale", "retry"):
            raise _WaitNotApplied(reply[0])
        now = float(reply[0])
        # Jobs stored before (or cancelled by a limit at once) are read back as stored.
        read = {
            r[1:] if r.startswith("=") else s.id
            for s, r in zip(specs, reply[1:], strict=True)
            if r.startswith("=") or r == "cancelled"
        }
        existing = self._fetch(list(read)) if read else {}
        return [
            existing[r[1:]] if r.startswith("=")
            else existing[s.id] if r == "cancelled" else new_job(s, JobState(r), now)
            for s, r in zip(specs, reply[1:], strict=True)
        ]  # fmt: skip

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
        queues = list(dict.fromkeys(queues))
        tokens = [new_token() for _ in range(n)]
        args: list[Any] = [
            owner, n, repr(float(lease_s)), "" if kinds is None else codec.dumps(list(kinds)),
            "" if tag is None else "=" + tag, CLAIM_SCAN_LIMIT, len(queues), *queues, *tokens,
        ]  # fmt: skip
        now, expires, *found = self._run("claim", args)
        claim = codec.Claim(owner, codec.ts(now), codec.ts(expires))
        return [
            codec.hash_to_job(codec.pairs(flat), claim, token)
            for flat, token in zip(found, tokens, strict=False)
        ]

    def heartbeat(self, beats: Sequence[Beat], lease_s: float) -> dict[str, BeatStatus]:
        if not beats:
            return {}
        args: list[Any] = [repr(float(lease_s)), len(beats)]
        for beat in beats:
            progress = "" if beat.progress is None else beat.progress.model_dump_json()
            args += [beat.job_id, beat.token, progress, len(beat.logs)]
            args += [codec.dumps({"line": line}) for line in beat.logs]
        reply = self._run("heartbeat", args)
        return {b.job_id: BeatStatus(s) for b, s in zip(beats, reply, strict=True)}

    def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        return self._settle(settlements, None)

    def _settle(
        self, settlements: Sequence[Settlement], known: tuple[float, Rows] | None
    ) -> list[bool]:
        applied: list[bool] = []
        for start in range(0, len(settlements), SETTLE_CHUNK):
            applied += self._settle_chunk(settlements[start : start + SETTLE_CHUNK], known)
        return applied

    def _settle_chunk(
        self, settlements: Sequence[Settlement], known: tuple[float, Rows] | None
    ) -> list[bool]:
        """Decide (rules.decide) from the jobs as read, then apply if the tokens still match.

        `rules.decide` sends a success to `succeeded` whatever the job looks like (its attempt
        stays as it is), so successes need no read: the common batch is one round trip.
        """
        result: list[bool | None] = [None] * len(settlements)
        todo = list(range(len(settlements)))
        # A cancel request may land between our read and the write; the script then says
        # "retry" and we decide again. Each round needs a new request, so this ends quickly.
        while todo:
            now: float | None = None
            current: Rows = {}
            if known is not None:
                (now, current), known = known, None
            elif slow := [
                settlements[i].job_id for i in todo if not codec.is_success(settlements[i])
            ]:
                now, current = self._read_running(slow)
            args: list[Any] = [0]
            sent: list[int] = []
            waits: list[int] = []
            for i in todo:
                s = settlements[i]
                if codec.is_success(s):
                    args += codec.success_args(s)
                elif (row := current.get(s.job_id)) is not None and row["lease_token"] == s.token:
                    assert now is not None
                    if s.outcome is Outcome.WAIT and row["cancel_requested"] != "1":
                        waits.append(i)  # children and all: enqueue.lua
                        continue
                    args += codec.settle_args(s, row, now)
                else:
                    result[i] = False
                    continue
                sent.append(i)
            todo = self._wait(settlements, waits, result)
            if not sent:
                continue
            args[0] = len(sent)
            at = self._now_arg() if now is None else repr(now)
            with self._errors():
                reply = self._scripts["settle"](args=[self.prefix, at, *args])
            for i, status in zip(sent, reply, strict=True):
                if status == "retry":
                    todo.append(i)
                else:
                    result[i] = status == "ok"
        return [bool(r) for r in result]

    def _wait(
        self, settlements: Sequence[Settlement], waits: list[int], result: list[bool | None]
    ) -> list[int]:
        """Apply WAIT settlements (children and the job's own change in one enqueue.lua call
        each); returns those to decide again because a cancel was requested meanwhile."""
        again = []
        for i in waits:
            s = settlements[i]
            try:
                self._enqueue(
                    deps.as_children(s.job_id, s.spawn),
                    [s.job_id, s.token, "0", codec.dumps(s.continuation)],
                )
                result[i] = True
            except _WaitNotApplied as exc:
                if exc.args[0] == "retry":
                    again.append(i)
                else:
                    result[i] = False
        return again

    def _read_running(self, ids: Sequence[str]) -> tuple[float, Rows]:
        """The store's time and, for each running job, what `rules.decide` needs."""
        reply = self._run("lookup", ids)
        now = float(reply[0])
        current = {}
        for i, job_id in enumerate(ids):
            values = reply[1 + i * 5 : 6 + i * 5]
            if values[0] is not None:
                current[job_id] = dict(zip(LOOKUP_FIELDS, values, strict=True))
        return now, current

    def rescue(self, owner: str | None = None) -> list[str]:
        reply = self._run("rescue", ["" if owner is None else "=" + owner, RESCUE_LIMIT])
        width = 1 + len(LOOKUP_FIELDS)
        rows = {
            reply[i]: dict(zip(LOOKUP_FIELDS, reply[i + 1 : i + width], strict=True))
            for i in range(1, len(reply), width)
        }
        lost = [
            Settlement(job_id, row["lease_token"], Outcome.LOST) for job_id, row in rows.items()
        ]
        settled = self._settle(lost, (float(reply[0]), rows))
        return [s.job_id for s, ok in zip(lost, settled, strict=True) if ok]

    # -- user operations ----------------------------------------------------------------------

    def _change(self, op: str, job_id: str, ensure: Callable[[str, JobState], None]) -> Any:
        """Check `ensure` (a rule) on the current state, then apply `op` if it still holds."""
        for _ in range(100):
            state: str | None = self._call(self._r.hget, self._key("job", job_id), "state")
            if state is None:
                raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
            ensure(job_id, JobState(state))
            reply = self._run("change", [op, job_id, state])
            if reply[0] == "ok":
                return reply[1:]
            if reply[0] == "missing":
                raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        raise errors.StoreUnavailableError(f"job {job_id} kept changing; try again")

    def cancel(self, job_id: str) -> Job:
        flat = self._change("cancel", job_id, rules.ensure_cancellable)
        return codec.hash_to_job(codec.pairs(flat))

    def rewind(self, job_ids: Sequence[str]) -> list[Job]:
        wanted = list(dict.fromkeys(job_ids))
        reply = self._run("rewind", wanted)
        if reply[0] == "missing":
            raise errors.JobNotFoundError(f"no job with id {reply[1]!r}", job_id=reply[1])
        if reply[0] == "state":
            rules.ensure_retryable(reply[1], JobState(reply[2]))
        found = self._fetch(wanted)
        return [found[i] for i in job_ids]

    def retry(self, job_id: str) -> Job:
        flat = self._change("retry", job_id, rules.ensure_retryable)
        return codec.hash_to_job(codec.pairs(flat))

    def delete(self, job_id: str) -> None:
        self._change("delete", job_id, rules.ensure_deletable)

    def get(self, job_id: str) -> Job:
        h: dict[str, str] = self._call(self._r.hgetall, self._key("job", job_id))
        if not h:
            raise errors.JobNotFoundError(f"no job with id {job_id!r}", job_id=job_id)
        return self._with_reasons([codec.hash_to_job(h)])[0]

    def _with_reasons(self, jobs: list[Job]) -> list[Job]:
        if not self._quiet_reads.due() or not any(j.state is JobState.QUEUED for j in jobs):
            return jobs
        with self._errors():
            anything = redis_flow.with_reasons(self._r, self.prefix, jobs, self.now())
        self._quiet_reads.found(anything)
        return jobs

    def list_jobs(self, filter: JobFilter, cursor: str | None = None, limit: int = 50) -> JobPage:
        matches: list[Job] = []
        for job in self._scan_newest_first(filter, cursor):
            if codec.matches(job, filter):
                matches.append(job)
                if len(matches) > limit:
                    break
        jobs = self._with_reasons(matches[:limit])
        next_cursor = jobs[-1].id if len(matches) > limit else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    def _scan_newest_first(self, f: JobFilter, cursor: str | None) -> Iterator[Job]:
        """Jobs (newest first, below `cursor`) that may match `f`: from the per-state indexes
        when states are given, so a filter on running jobs never reads the finished ones."""
        if f.ids is not None:
            ids: Iterator[str] = iter(
                sorted({i for i in f.ids if cursor is None or i < cursor}, reverse=True)
            )
        elif f.parent_id is not None:
            ids = self._newest_ids(self._key("kids", f.parent_id), cursor)
        elif f.workflow_id is not None:
            ids = self._newest_ids(self._key("wf", f.workflow_id), cursor)
        elif f.tag is not None and not self._states_are_fewer(f.state, f.tag):
            ids = self._newest_ids(self._key("tag", f.tag), cursor)
        elif f.state:
            streams = [self._newest_in_state(s, cursor) for s in set(f.state)]
            ids = heapq.merge(*streams, reverse=True)
        else:
            ids = self._newest_ids(self._key("all"), cursor)
        while chunk := list(itertools.islice(ids, LIST_PAGE)):
            found = self._fetch(chunk)
            yield from (found[i] for i in chunk if i in found)

    def _states_are_fewer(self, states: Sequence[JobState] | None, tag: str) -> bool:
        """Whether the jobs in `states` are fewer than those carrying `tag` (read the smaller
        index and test the other condition on each job)."""
        if not states:
            return False
        with self._errors(), self._r.pipeline(transaction=False) as pipe:
            for state in set(states):
                pipe.zcard(self._state_index(state))
            pipe.zcard(self._key("tag", tag))
            *in_states, tagged = pipe.execute()
        return sum(int(n) for n in in_states) < int(tagged)

    def _state_index(self, state: JobState) -> str:
        """The sorted set of the ids of the jobs in a state: running jobs are those holding a
        lease (scored by its expiry), the others have an index of their own (scored 0)."""
        return self._key("leases") if state is JobState.RUNNING else self._key("st", state.value)

    def _newest_in_state(self, state: JobState, cursor: str | None) -> Iterator[str]:
        if state is not JobState.RUNNING:
            return self._newest_ids(self._state_index(state), cursor)
        # As many as run at once (workers x prefetch): read whole, ordered here.
        ids: list[str] = self._call(self._r.zrange, self._key("leases"), 0, -1)
        return iter(sorted((i for i in ids if cursor is None or i < cursor), reverse=True))

    def _newest_ids(self, key: str, cursor: str | None) -> Iterator[str]:
        top = "(" + cursor if cursor else "+"
        while True:
            ids: list[str] = self._call(self._r.zrevrangebylex, key, top, "-", 0, LIST_PAGE)
            yield from ids
            if len(ids) < LIST_PAGE:
                return
            top = "(" + ids[-1]

    def events(self, job_id: str, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        """State events are found in the feed by the sequence numbers in the job's `seqs`
        field; progress and log events (and every event of a job stored by an older version)
        in the job's own sorted set. See common.lua."""
        with self._errors():
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(self._key("job", job_id), "seqs")
            pipe.zrangebyscore(self._key("ev", job_id), f"({after}", "+inf", 0, limit)
            seqs, raw = pipe.execute()
            wanted = [int(n) for n in seqs.split(",") if int(n) > after] if seqs else []
            if wanted:
                for seq in wanted[:limit]:  # in order: each script numbers its events upwards
                    pipe.zrangebyscore(self._key("feed"), seq, seq)
                raw += [text for found in pipe.execute() for text in found]
        by_seq = {e.seq: e for e in map(codec.event_model, raw)}  # old stores: in both places
        return [by_seq[seq] for seq in sorted(by_seq)[:limit]]

    def feed(self, after: int = 0, limit: int = 1000) -> list[JobEvent]:
        raw: list[str] = self._call(
            self._r.zrangebyscore, self._key("feed"), f"({after}", "+inf", 0, limit
        )
        return [codec.event_model(text) for text in raw]

    # -- records ------------------------------------------------------------------------------

    # A collection is a hash (key -> JSON) plus a sorted set of its keys (all scored 0, so
    # ordered bytewise), which answers prefix queries without reading the whole collection.

    def put_record(self, collection: str, key: str, value: dict[str, Any]) -> None:
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._key("rec", collection), key, codec.dumps(value))
            pipe.zadd(self._key("reck", collection), {key: 0})
            pipe.execute()

    def get_record(self, collection: str, key: str) -> dict[str, Any] | None:
        text = self._call(self._r.hget, self._key("rec", collection), key)
        return None if text is None else dict(codec.loads(text))

    def list_records(self, collection: str, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        if not prefix:
            found: dict[str, str] = self._call(self._r.hgetall, self._key("rec", collection))
            return [(k, codec.loads(found[k])) for k in sorted(found)]
        keys: list[str] = []
        start = "[" + prefix
        while True:
            page: list[str] = self._call(
                self._r.zrangebylex, self._key("reck", collection), start, "+", 0, LIST_PAGE
            )
            matching = [k for k in page if k.startswith(prefix)]
            keys += matching
            if len(page) < LIST_PAGE or len(matching) < len(page):
                break
            start = "(" + page[-1]
        if not keys:
            return []
        values: list[str | None] = self._call(self._r.hmget, self._key("rec", collection), keys)
        return [(k, codec.loads(v)) for k, v in zip(keys, values, strict=True) if v is not None]

    def delete_record(self, collection: str, key: str) -> bool:
        with self._errors():
            pipe = self._r.pipeline(transaction=True)
            pipe.hdel(self._key("rec", collection), key)
            pipe.zrem(self._key("reck", collection), key)
            gone, _ = pipe.execute()
        return bool(gone)

    # -- kinds, workers, stats, retention --------------------------------------------------

    def register_kinds(self, kinds: Sequence[KindInfo]) -> None:
        if not kinds:
            return
        now = self.now()
        mapping = {
            k.name: codec.dumps(
                {"info": k.model_dump(mode="json", exclude={"updated_at"}), "at": now}
            )
            for k in kinds
        }
        self._call(self._r.hset, self._key("kinds"), None, None, mapping)

    def kinds(self) -> list[KindInfo]:
        found: dict[str, str] = self._call(self._r.hgetall, self._key("kinds"))
        rows = (codec.loads(found[name]) for name in sorted(found))
        return read_kinds({**raw["info"], "updated_at": from_ts(raw["at"])} for raw in rows)

    def worker_beat(self, info: WorkerInfo) -> None:
        if info.state == "stopped":
            self._call(self._r.hdel, self._key("workers"), info.id)
            return
        raw = {"info": info.model_dump(mode="json"), "at": self.now()}
        self._call(self._r.hset, self._key("workers"), info.id, codec.dumps(raw))

    def workers(self) -> list[WorkerInfo]:
        found: dict[str, str] = self._call(self._r.hgetall, self._key("workers"))
        out = []
        for worker_id in sorted(found):
            raw = codec.loads(found[worker_id])
            out.append(WorkerInfo.model_validate({**raw["info"], "last_seen": from_ts(raw["at"])}))
        return out

    def queue_stats(self) -> list[QueueStats]:
        reply = self._run("stats", [])
        now = float(reply[0])
        stats = []
        for i in range(1, len(reply), 4):
            name, counts_json, oldest, last_minute = reply[i : i + 4]
            counts = {k: int(v) for k, v in codec.pairs(codec.loads(counts_json)).items() if int(v)}
            if not counts:
                continue  # every job of this queue was pruned or deleted
            stats.append(
                QueueStats(
                    name=name,
                    **counts,
                    oldest_queued_age_s=max(0.0, now - float(oldest)) if oldest else None,
                    finished_last_minute=int(last_minute),
                )
            )
        paused: set[str] = self._call(self._r.smembers, self.prefix + "paused")
        named = {s.name: s for s in stats}
        for queue in paused:
            named.setdefault(queue, QueueStats(name=queue)).paused = True
        return sorted(named.values(), key=lambda s: s.name)

    def prune(self, finished_before: float, limit: int = 10_000) -> list[str]:
        deleted: list[str] = []
        while len(deleted) < limit:
            chunk = min(PRUNE_CHUNK, limit - len(deleted))
            ids = self._run("prune", [repr(float(finished_before)), chunk])
            deleted += ids
            if len(ids) < chunk:
                break
        return deleted

    # -- waking -------------------------------------------------------------------------------

    # -- flow control (keys: docs/stores.md) -------------------------------------------------

    def set_limit(self, limit: Limit) -> Limit:
        self._quiet_reads.changed()
        now = self.now()
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self.prefix + "limits", limit.target, redis_flow.limit_json(limit, now))
        self._wake_all(pipe)
        with self._errors():
            pipe.execute()
        return limit.model_copy(update={"updated_at": from_ts(now)})

    def delete_limit(self, target: str) -> bool:
        self._quiet_reads.changed()
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(self.prefix + "limits", target)
        self._wake_all(pipe)
        with self._errors():
            return bool(pipe.execute()[0])

    def _wake_all(self, pipe: Any) -> None:
        """Wake the workers of every queue: a raised or removed limit may let jobs start."""
        queues: set[str] = self._call(self._r.smembers, self.prefix + "queues")
        for queue in sorted(queues):
            pipe.publish(self._key("wake", queue), "")

    def limits(self) -> list[Limit]:
        with self._errors():
            found = redis_flow.limit_set(self._r, self.prefix).limits
        return sorted(found.values(), key=lambda lim: lim.target)

    def pause_queue(self, queue: str, paused: bool) -> None:
        self._quiet_reads.changed()
        pipe = self._r.pipeline(transaction=True)
        if paused:
            pipe.sadd(self.prefix + "paused", queue)
        else:
            pipe.srem(self.prefix + "paused", queue)
            pipe.publish(self._key("wake", queue), "")
        with self._errors():
            pipe.execute()

    def purge_queue(self, queue: str) -> int:
        error = purged_error(queue).model_dump_json()
        total = 0
        while True:
            done = int(self._run("purge", [queue, PURGE_CHUNK, error]))
            total += done
            if done < PURGE_CHUNK:
                return total

    def take_tokens(self, key: str, n: int, rate: int, per_s: float) -> float:
        take(None, n, rate, per_s, 0.0)  # refuses n > rate, as every store does
        return float(self._run("tokens", [key, n, rate, repr(float(per_s))]))

    def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Wait for a publish on a queue's wake channel (sent by the scripts that make work).

        One subscription per store, kept between calls, so a publish between two waits is
        not missed. Concurrent waiters take turns reading it (one reads, the others wait on
        a condition it signals), so every waiter wakes on a publish.
        """
        deadline = time.monotonic() + timeout
        with self._wake:
            seen = self._wakes
            self._channels_wanted |= {self._key("wake", q) for q in queues}
        while True:
            with self._wake:
                remaining = deadline - time.monotonic()
                if self._wakes != seen or remaining <= 0 or self._closed:
                    return
                if self._reading:
                    self._wake.wait(remaining)
                    continue
                self._reading = True
            woke = False
            try:
                woke = self._read_wake_channel(remaining)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._drop_pubsub()
                raise errors.StoreUnavailableError(
                    f"Redis at {self._where} is unavailable: {exc}"
                ) from exc
            finally:
                with self._wake:
                    self._reading = False
                    if woke:
                        self._wakes += 1
                    if self._closed:
                        self._drop_pubsub()
                    self._wake.notify_all()

    def _read_wake_channel(self, timeout: float) -> bool:
        """Read the subscription (only one thread at a time); True if work was announced."""
        if self._pubsub is None:
            self._pubsub = self._r.pubsub()
            self._channels = set()
        with self._wake:
            new = self._channels_wanted - self._channels
        if new:
            self._pubsub.subscribe(*new)
            self._channels |= new
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=remaining)
            if message is not None and message["type"] == "message":
                while self._pubsub.get_message(timeout=0) is not None:
                    pass  # one burst of publishes costs one wake-up
                return True
        return False

    def _drop_pubsub(self) -> None:
        if self._pubsub is not None:
            with suppress(redis.RedisError):
                self._pubsub.close()
            self._pubsub = None
            self._channels = set()
