"""Group commit of Task Queue deletes, on the in-memory store (no server)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

from conveyor.storage import open_storage
from conveyor.store import open_store
from conveyor.store.base import Settlement
from conveyor.store.rules import Outcome
from conveyor.taskqueue import batching
from conveyor.taskqueue.batching import SettleBatcher
from conveyor.taskqueue.names import QueueRef
from conveyor.taskqueue.service import TaskQueueService
from tests.integration.harness import wait_for


def test_concurrent_deletes_share_commits_and_each_gets_its_answer(tmp_path: Path) -> None:
    store = open_store("memory://")
    tq = TaskQueueService(store, open_storage(f"file://{tmp_path}"))
    ref = QueueRef.parse("proj", "q")
    for _ in range(200):
        tq.insert_task(ref, "e30=", "t")
    batches: list[int] = []
    settle = store.settle

    def counting(settlements: Sequence[Settlement]) -> list[bool]:
        batches.append(len(settlements))
        time.sleep(0.005)  # stands in for the fsync of a durable commit
        return settle(settlements)

    store.settle = counting  # type: ignore[method-assign]
    leased = tq.lease(ref, "me", 60, 200, False, None)["items"]
    assert len(leased) == 200
    barrier = threading.Barrier(20)
    errors: list[BaseException] = []

    def deleter(tasks: list[dict[str, object]]) -> None:
        barrier.wait()
        try:
            for task in tasks:
                tq.delete(ref, str(task["id"]))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=deleter, args=(leased[i::20],)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sum(batches) == 200  # every task settled exactly once
    assert tq.list(ref)["items"] == []
    assert {store.get(str(t["id"])).state.value for t in leased} == {"succeeded"}
    assert len(batches) < 100  # deletes shared commits


def test_a_stale_delete_in_a_batch_does_not_affect_the_others(tmp_path: Path) -> None:
    store = open_store("memory://")
    tq = TaskQueueService(store, open_storage(f"file://{tmp_path}"))
    ref = QueueRef.parse("proj", "q")
    tq.insert_task(ref, "e30=", "t")
    task = tq.lease(ref, "me", 60, 1, False, None)["items"][0]
    job = store.get(task["id"])
    assert job.lease is not None
    assert tq.batcher.settle(Settlement(job.id, "stale-token", Outcome.SUCCEEDED)) is False
    tq.delete(ref, task["id"])
    assert store.get(task["id"]).state.value == "succeeded"


def test_more_waiting_deletes_than_one_batch_all_get_answers(tmp_path: Path) -> None:
    store = open_store("memory://")
    tq = TaskQueueService(store, open_storage(f"file://{tmp_path}"))
    tq.batcher = SettleBatcher(store)
    ref = QueueRef.parse("proj", "q")
    for _ in range(12):
        tq.insert_task(ref, "e30=", "t")
    leased = tq.lease(ref, "me", 60, 12, False, None)["items"]
    settle = store.settle
    gate = threading.Event()

    def slow(settlements: Sequence[Settlement]) -> list[bool]:
        gate.wait(10)  # the first commit holds until every other delete is waiting
        return settle(settlements)

    store.settle = slow  # type: ignore[method-assign]
    batching.MAX_BATCH, saved = 5, batching.MAX_BATCH
    try:
        threads = [threading.Thread(target=tq.delete, args=(ref, t["id"])) for t in leased]
        for thread in threads:
            thread.start()
        wait_for(lambda: len(tq.batcher._pending) == 11, timeout=10)
        gate.set()
        for thread in threads:
            thread.join(10)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        batching.MAX_BATCH = saved
    assert {store.get(str(t["id"])).state.value for t in leased} == {"succeeded"}
