"""Redis side of flow control (#20) that runs in Python: reading limits and the counts behind
`Job.waiting_reason`. Claims and submits decide in Lua (lua/flow.lua, lua/enqueue.lua); the
key layout is in docs/stores.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import orjson
import redis

from conveyor.models import Job, JobState, Limit, from_ts
from conveyor.store.limits import Admission, LimitSet, Scope, bucket_key


def key(prefix: str, *parts: str) -> str:
    return prefix + ":".join(parts)


def limit_json(limit: Limit, now: float) -> str:
    """A limit as kept in the `limits` hash (lua/flow.lua reads these fields)."""
    return orjson.dumps({
        "max_running": limit.max_running, "rate": limit.rate, "per_s": limit.per_s,
        "strategy": limit.strategy, "updated_at": now,
    }).decode()  # fmt: skip


def limit_set(r: redis.Redis, prefix: str) -> LimitSet:
    """The limits and paused queues (two reads in one round trip)."""
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(prefix + "limits")
    pipe.smembers(prefix + "paused")
    raw, paused = pipe.execute()
    limits = {}
    for target, text in raw.items():
        data: dict[str, Any] = orjson.loads(text)
        limits[target] = Limit.model_construct(
            target=target, max_running=data.get("max_running"), rate=data.get("rate"),
            per_s=data.get("per_s", 1.0), strategy=data.get("strategy", "queue"),
            updated_at=from_ts(data.get("updated_at")),
        )  # fmt: skip
    return LimitSet(0, limits, frozenset(paused))


def with_reasons(r: redis.Redis, prefix: str, jobs: list[Job], now: float) -> bool:
    """Fill `waiting_reason` of queued jobs a limit or a paused queue holds back; whether the
    store has any limit or paused queue."""
    queued = [job for job in jobs if job.state is JobState.QUEUED]
    if not queued or not r.exists(prefix + "limits", prefix + "paused"):
        return False
    limits = limit_set(r, prefix)
    if limits.empty:
        return False
    scopes = {
        scope
        for job in queued
        for _, scope in limits.applicable(job.queue, job.kind, job.concurrency_key)
    }
    admit = Admission(limits, running(r, prefix, scopes), _bucket_loader(r, prefix), now)
    for job in queued:
        why = admit.blocked(job.queue, job.kind, job.concurrency_key)
        job.waiting_reason = None if why is None else why[0]
    return True


def running(r: redis.Redis, prefix: str, scopes: set[Scope]) -> Counter[Scope]:
    """Running jobs per scope, from the counters the scripts keep (common.lua `count`)."""
    ordered = sorted(scopes)
    pipe = r.pipeline(transaction=False)
    for scope in ordered:
        if scope[0] == "queue":
            pipe.hget(key(prefix, "counts", scope[1]), "running")
        elif scope[0] == "kind":
            pipe.hget(prefix + "running:kinds", scope[1])
        else:
            pipe.hget(key(prefix, "krun", scope[1]), scope[2])
    counts: Counter[Scope] = Counter()
    for scope, value in zip(ordered, pipe.execute(), strict=True):
        counts[scope] = max(0, int(value or 0))
    return counts


def _bucket_loader(r: redis.Redis, prefix: str) -> Any:
    def load(keys: Sequence[str]) -> dict[str, tuple[float, float]]:
        pipe = r.pipeline(transaction=False)
        for name in keys:
            pipe.hmget(prefix + "bucket:" + name, "tokens", "at")
        found = {}
        for name, (tokens, at) in zip(keys, pipe.execute(), strict=True):
            if tokens is not None:
                found[name] = (float(tokens), float(at))
        return found

    return load


__all__ = ["bucket_key", "limit_json", "limit_set", "running", "with_reasons"]
