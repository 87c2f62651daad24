"""SQLite claims by tag: from the tag index when the tag is rare, from the waiting jobs when it
is common; both give the same jobs in claim order."""

from __future__ import annotations

import pytest

from conveyor.clock import FakeClock
from conveyor.store import sqlite
from conveyor.store.sqlite import SqliteStore
from tests.conformance.helpers import spec


@pytest.mark.parametrize("scan", [1, sqlite.TAG_CLAIM_SCAN], ids=["walk-waiting", "tag-index"])
def test_claim_by_tag_gives_the_best_tagged_jobs_of_the_queues(
    scan: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "TAG_CLAIM_SCAN", scan)
    clock = FakeClock()
    store = SqliteStore(clock=clock)
    specs = [
        spec(clock, queue=("a", "b", "c")[i % 3], priority=i % 4, kind=("x", "y")[i % 2],
             tags=("red",) if i % 5 else ("red", "red", "blue"))
        for i in range(40)
    ]  # fmt: skip
    store.enqueue([*specs, spec(clock, queue="a", priority=9)])
    clock.advance(1)
    wanted = [s for s in specs if s.queue in ("a", "b") and s.kind == "x"]
    best = sorted(wanted, key=lambda s: (-s.priority, s.run_at, s.id))
    claimed = store.claim(["a", "b"], "w", 4, 30.0, kinds=["x"], tag="red")
    assert [j.id for j in claimed] == [s.id for s in best[:4]]
    blue = [s.id for s in specs if "blue" in s.tags and s.queue == "c"]
    assert {j.id for j in store.claim(["c"], "w", 50, 30.0, tag="blue")} == set(blue)
    assert store.claim(["a", "b", "c"], "w", 50, 30.0, tag="nobody") == []
    store.close()
