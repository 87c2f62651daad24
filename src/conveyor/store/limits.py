"""Flow control decided in Python for the SQL stores (Redis does the same in Lua, claim.lua):
which waiting jobs a claim may take under the store's limits, in what order, and why a
waiting job is held back.

A claim under limits works on a snapshot read in its own transaction: the limits and paused
queues (`LimitSet`), how many jobs run per queue, kind and concurrency key, and the token
buckets of the rate limits. `Admission` takes jobs one by one against those counts, so a claim
never takes more than a limit leaves, and `choose` walks the candidates best first with the
keys of a per-key limit taking turns (least recently started key first).
"""

from __future__ import annotations

import heapq
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from conveyor import errors
from conveyor.models import JobError, Limit, UniqueScope, WaitingReason, from_ts
from conveyor.store.base import JobSpec

#: Bucket keys of rate limits; `take_tokens` callers use their own prefixes (e.g. `quota:`).
BUCKET_PREFIX = "limit:"
#: Keys of one per-key limit a single claim looks at (least recently started first).
KEY_SCAN = 2_000

Scope = tuple[str, ...]  # ("queue", q) | ("kind", k) | ("key", k, concurrency key)


@dataclass(frozen=True, slots=True)
class LimitSet:
    """The store's limits and paused queues as of one version of them."""

    version: int = 0
    limits: dict[str, Limit] = field(default_factory=dict)
    paused: frozenset[str] = frozenset()

    @property
    def empty(self) -> bool:
        return not self.limits and not self.paused

    def keyed_kinds(self) -> list[str]:
        """Kinds with a per-key limit: their keyed jobs are claimed key by key."""
        return sorted(lim.name for lim in self.limits.values() if lim.scope == "key")

    def applicable(self, queue: str, kind: str, key: str | None) -> list[tuple[Limit, Scope]]:
        """The limits on a job, each with the scope it counts in."""
        found: list[tuple[Limit, Scope]] = []
        for limit, scope in (
            (self.limits.get(f"queue:{queue}"), ("queue", queue)),
            (self.limits.get(f"kind:{kind}"), ("kind", kind)),
            (None if key is None else self.limits.get(f"key:{kind}"), ("key", kind, key or "")),
        ):
            if limit is not None:
                found.append((limit, scope))
        return found

    def strategy_limit(self, kind: str, key: str | None) -> Limit | None:
        """The per-key limit whose strategy acts on a submit of this kind and key, if any."""
        limit = None if key is None else self.limits.get(f"key:{kind}")
        return limit if limit is not None and limit.strategy != "queue" else None


def stored_limit(row: Sequence[Any]) -> Limit:
    """A Limit from a stored (target, max_running, rate, per_s, strategy, updated_at) row."""
    return Limit.model_construct(
        target=row[0], max_running=row[1], rate=row[2], per_s=row[3], strategy=row[4],
        updated_at=row[5] if isinstance(row[5], datetime) else from_ts(row[5]),
    )  # fmt: skip


class QuietReads:
    """Reads of `waiting_reason` on a server store that found no limit and no paused queue
    look again only after `every_s` (a get or a list of queued jobs would otherwise pay a
    round trip for limits that a store without any never has); this process's own changes
    to limits look again at once."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._quiet_until = 0.0

    def due(self) -> bool:
        return time.monotonic() >= self._quiet_until

    def found(self, anything: bool) -> None:
        self._quiet_until = 0.0 if anything else time.monotonic() + self.every_s

    def changed(self) -> None:
        self._quiet_until = 0.0


def bucket_key(scope: Scope) -> str:
    """`limit:queue:<q>`, `limit:kind:<k>` or `limit:key:<kind>|<key>` (as Redis's claim.lua
    names them: a kind holds no `|`)."""
    if len(scope) == 3:
        return f"{BUCKET_PREFIX}key:{scope[1]}|{scope[2]}"
    return f"{BUCKET_PREFIX}{scope[0]}:{scope[1]}"


def refill(tokens: float, at: float, now: float, rate: int, per_s: float) -> float:
    """A bucket's tokens at `now`: it gains `rate` per `per_s`, holds at most `rate`."""
    return min(float(rate), tokens + max(0.0, now - at) * rate / per_s)


def take(
    bucket: tuple[float, float] | None, n: int, rate: int, per_s: float, now: float
) -> tuple[float, float]:
    """(tokens left, seconds to wait) for taking n tokens; wait 0 means taken. A bucket never
    used (None) is full."""
    if n > rate:
        raise errors.InvalidInputError(f"cannot take {n} tokens from a bucket of {rate}")
    tokens = float(rate) if bucket is None else refill(bucket[0], bucket[1], now, rate, per_s)
    if tokens >= n:
        return tokens - n, 0.0
    return tokens, (n - tokens) * per_s / rate


def running_counts(rows: Iterable[Sequence[Any]]) -> Counter[Scope]:
    """Running jobs per scope, from (queue, kind, concurrency key, count) rows."""
    counts: Counter[Scope] = Counter()
    for queue, kind, key, n in rows:
        counts["queue", queue] += n
        counts["kind", kind] += n
        if key is not None:
            counts["key", kind, key] += n
    return counts


@dataclass(slots=True)
class Candidate:
    """A waiting job a claim may take."""

    id: str
    queue: str
    kind: str
    key: str | None
    priority: int
    run_at: float


BucketLoader = Callable[[Sequence[str]], dict[str, tuple[float, float]]]


class Admission:
    """Takes jobs against the limits: running counts and rate buckets as the claim goes."""

    def __init__(
        self, limits: LimitSet, running: Counter[Scope], load: BucketLoader, now: float
    ) -> None:
        self.limits = limits
        self.running = running
        self.now = now
        self._load = load
        self.buckets: dict[str, tuple[float, float]] = {}
        self.taken: set[str] = set()  # buckets this claim changed

    def tokens(self, limit: Limit, scope: Scope) -> float:
        assert limit.rate is not None
        key = bucket_key(scope)
        if key not in self.buckets:
            self.buckets.update(self._load([key]))
        bucket = self.buckets.get(key)
        if bucket is None:
            return float(limit.rate)
        return refill(bucket[0], bucket[1], self.now, limit.rate, limit.per_s)

    def closed(self, limit: Limit, scope: Scope) -> bool:
        """Whether the limit lets no job of its scope start now."""
        if limit.max_running is not None and self.running[scope] >= limit.max_running:
            return True
        return limit.rate is not None and self.tokens(limit, scope) < 1

    def prefetch(self, scopes: Iterable[Scope]) -> None:
        """Read the buckets of these scopes in one go."""
        wanted = [bucket_key(s) for s in scopes if bucket_key(s) not in self.buckets]
        if wanted:
            self.buckets.update(self._load(wanted))

    def blocked(self, queue: str, kind: str, key: str | None) -> tuple[WaitingReason, Scope] | None:
        """Why a job of this queue, kind and key cannot start now (and which scope), or None."""
        if queue in self.limits.paused:
            return "queue_paused", ("queue", queue)
        rate_limited: tuple[WaitingReason, Scope] | None = None
        for limit, scope in self.limits.applicable(queue, kind, key):
            if limit.max_running is not None and self.running[scope] >= limit.max_running:
                return "concurrency_limited", scope
            if rate_limited is None and limit.rate is not None and self.tokens(limit, scope) < 1:
                rate_limited = "rate_limited", scope
        return rate_limited

    def admit(self, c: Candidate) -> Scope | None:
        """Take the job if every limit admits it (counting it and taking its rate slots);
        else the scope that holds it back."""
        why = self.blocked(c.queue, c.kind, c.key)
        if why is not None:
            return why[1]
        for limit, scope in self.limits.applicable(c.queue, c.kind, c.key):
            self.running[scope] += 1
            if limit.rate is not None:
                self.buckets[bucket_key(scope)] = (self.tokens(limit, scope) - 1, self.now)
                self.taken.add(bucket_key(scope))
        return None

    def changed_buckets(self) -> list[tuple[str, float, float]]:
        """(key, tokens, at) of every bucket the claim took from, to write back."""
        return [(key, *self.buckets[key]) for key in sorted(self.taken)]


def key_rooms(
    admit: Admission,
    kind: str,
    keys: Sequence[tuple[str, float | None]],
    n: int,
    last_started: dict[tuple[str, str], float],
) -> dict[str, int]:
    """How many jobs each of a per-key-limited kind's keys (key, last started) may give one
    claim of n, in turn order: its share of n (so a claim takes from n keys before a second
    job of any), at most what its limit leaves it; keys with no room left out. Records the
    keys' turns in `last_started`."""
    limit = admit.limits.limits[f"key:{kind}"]
    if limit.rate is not None:
        admit.prefetch(("key", kind, key) for key, _ in keys)
    share = -(-n // max(1, len(keys)))
    rooms: dict[str, int] = {}
    for key, started in keys:
        if started is not None:
            last_started[kind, key] = started
        scope = ("key", kind, key)
        room = share
        if limit.max_running is not None:
            room = min(room, limit.max_running - admit.running[scope])
        if limit.rate is not None:
            room = min(room, int(admit.tokens(limit, scope)))
        if room > 0:
            rooms[key] = room
    return rooms


def choose(
    candidates: Sequence[Candidate],
    n: int,
    admission: Admission,
    last_started: dict[tuple[str, str], float],
) -> list[Candidate]:
    """Up to n candidates the limits admit, best first: by priority, then by turn, where the
    turn of a job under a per-key limit is when its key last started a job (never: first)
    and any other job's is its run_at. Taking a key's job moves the key's turn to now, so
    within one claim, and from claim to claim, keys take turns.

    `candidates` hold each key's jobs (and the jobs under no per-key limit) in claim order.
    """
    keyed = set(admission.limits.keyed_kinds())
    groups: dict[tuple[str, str] | None, list[Candidate]] = {}
    for c in candidates:
        group = (c.kind, c.key) if c.key is not None and c.kind in keyed else None
        groups.setdefault(group, []).append(c)
    for jobs in groups.values():
        jobs.reverse()  # pop() from the end = claim order

    heap: list[tuple[int, float, float, str, int]] = []
    names: list[tuple[str, str] | None] = list(groups)

    def push(index: int) -> None:
        jobs = groups[names[index]]
        if jobs:
            c = jobs[-1]
            group = names[index]
            turn = c.run_at if group is None else last_started.get(group, -math.inf)
            heapq.heappush(heap, (-c.priority, turn, c.run_at, c.id, index))

    for index in range(len(names)):
        push(index)
    chosen: list[Candidate] = []
    while heap and len(chosen) < n:
        *_, index = heapq.heappop(heap)
        group = names[index]
        c = groups[group].pop()
        held = admission.admit(c)
        if held is None:
            chosen.append(c)
            if group is not None:
                last_started[group] = admission.now
        elif group is not None and held[0] == "key":
            groups[group].clear()  # the key is full: none of its other jobs can start either
        push(index)
    return chosen


def unique_duplicates(
    specs: Sequence[JobSpec], find: Callable[[str, UniqueScope, float | None], str | None]
) -> dict[str, str]:
    """spec id -> the id of the job a unique spec duplicates: an earlier spec of the batch
    with the same key, or the stored job `find(key, scope, window)` names."""
    found: dict[str, str] = {}
    first: dict[str, str] = {}
    for spec in specs:
        key = spec.unique_key
        if key is None:
            continue
        if key in first:
            found[spec.id] = first[key]
            continue
        existing = find(key, spec.unique_scope, spec.unique_window_s)
        if existing is not None:
            found[spec.id] = existing
        else:
            first[key] = spec.id
    return found


@dataclass
class Strategies:
    """What the cancel strategies decided for a batch: specs to store cancelled, and jobs
    already stored to cancel (waiting) or ask to stop (running)."""

    cancelled_specs: set[str] = field(default_factory=set)
    cancel_waiting: list[str] = field(default_factory=list)
    stop_running: list[str] = field(default_factory=list)


#: A stored unfinished job of a key: (id, running, cancel already requested), oldest first.
ActiveLoader = Callable[[str, str], list[tuple[str, bool, bool]]]


def decide_strategies(
    specs: Sequence[JobSpec], limits: LimitSet, load_active: ActiveLoader
) -> Strategies:
    """Apply the cancel strategies of per-key limits to new specs, in batch order.

    `cancel_newest`: a spec whose key already has `max_running` jobs waiting or running is
    stored cancelled. `cancel_in_progress`: while the key's jobs not already stopping number
    `max_running` or more, the oldest is cancelled (waiting) or asked to stop (running), and
    the spec is stored as usual.
    """
    out = Strategies()
    active: dict[tuple[str, str], list[list[Any]]] = {}  # [id, running, stopping, stored]
    for spec in specs:
        limit = limits.strategy_limit(spec.kind, spec.concurrency_key)
        if limit is None or limit.max_running is None or spec.concurrency_key is None:
            continue
        group = (spec.kind, spec.concurrency_key)
        if group not in active:
            active[group] = [[*row, True] for row in load_active(*group)]
        jobs = active[group]
        if limit.strategy == "cancel_newest":
            if len(jobs) >= limit.max_running:
                out.cancelled_specs.add(spec.id)
                continue
        else:
            live = [job for job in jobs if not job[2]]
            while len(live) >= limit.max_running:
                oldest = live.pop(0)
                if oldest[1]:
                    oldest[2] = True
                    out.stop_running.append(oldest[0])
                    continue
                jobs.remove(oldest)
                if oldest[3]:
                    out.cancel_waiting.append(oldest[0])
                else:
                    out.cancelled_specs.add(oldest[0])
        jobs.append([spec.id, False, False, False])
    return out


def limited_error(message: str) -> JobError:
    """The error a job cancelled by a limit's strategy carries."""
    return JobError(type="ConcurrencyLimited", message=message, reason="concurrency_limited")


def purged_error(queue: str) -> JobError:
    return JobError(type="Purged", message=f"purged from queue {queue!r}", reason="purged")
