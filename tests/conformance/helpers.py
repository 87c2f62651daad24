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
