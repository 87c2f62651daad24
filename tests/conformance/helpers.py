from __future__ import annotations

import itertools
from typing import Any

from conveyor.clock import FakeClock
from conveyor.ids import uuid7
from conveyor.store import JobSpec, Store

_counter = itertools.count()


def spec(clock: FakeClock, **fields: Any) -> JobSpec:
    values: dict[str, Any] = {
        "id": uuid7(int(clock() * 1000) + next(_counter)),
        "kind": "noop",
        "queue": "default",
        "input": {"n": next(_counter)},
        "run_at": clock(),
        "backoff_s": 10.0,
    }
    values.update(fields)
    return JobSpec(**values)


def enqueue(store: Store, clock: FakeClock, count: int = 1, **fields: Any) -> list[str]:
    return [job.id for job in store.enqueue([spec(clock, **fields) for _ in range(count)])]


def tag_index_entries(store: Store, tag: str) -> int:
    """How many entries the backend's tag index holds for `tag` (jobs gone must leave none)."""
    from conveyor.store.postgres import PostgresStore
    from conveyor.store.redis import RedisStore
    from conveyor.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        return int(store._read("SELECT count(*) FROM job_tags WHERE tag = ?", (tag,))[0][0])
    if isinstance(store, PostgresStore):
        rows = store._read("SELECT count(*) FROM conveyor_job_tags WHERE tag = %(t)s", {"t": tag})
        return int(rows[0][0])
    if isinstance(store, RedisStore):
        return int(store._r.zcard(store._key("tag", tag)))
    raise TypeError(f"no tag index known for {type(store).__name__}")
