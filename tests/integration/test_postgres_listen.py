"""LISTEN/NOTIFY wake-ups: across processes' stores, and again after the server restarted."""

from __future__ import annotations

import threading
import time

import pytest

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.store import JobSpec, Store, open_store
from tests.integration.harness import wait_for
from tests.servers.postgres import PostgresServer, PostgresServerFactory

pytestmark = pytest.mark.postgres


def enqueue(store: Store, queue: str = "default") -> None:
    store.enqueue([JobSpec(id=uuid7(), kind="noop", queue=queue, input={}, run_at=store.now())])


def wake_time(waiter: Store, producer: Store, queue: str = "default") -> float | None:
    """Seconds from enqueue to the waiter waking (None: it slept its whole timeout)."""
    woke = threading.Event()

    def wait() -> None:
        waiter.wait_for_work(["default"], 5.0)
        woke.set()

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)  # let the waiter block: what is measured is the wake-up below
    started = time.monotonic()
    enqueue(producer, queue)
    got = woke.wait(5.0)
    elapsed = time.monotonic() - started
    thread.join()
    return elapsed if got and elapsed < 4.0 else None


def test_another_store_wakes_a_waiter_only_for_its_queues(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_schema()
    waiter, producer = open_store(url), open_store(url)
    waiter.wait_for_work(["default"], 0.01)  # start listening
    latencies = [wake_time(waiter, producer) for _ in range(5)]
    assert all(t is not None for t in latencies), latencies
    assert wake_time(waiter, producer, queue="elsewhere") is None
    print(f"\nwake-up latency: {sorted(t or 0 for t in latencies)[2] * 1000:.1f} ms (median)")
    waiter.close()
    producer.close()


def test_wake_ups_resume_after_the_server_restarts(
    postgres_factory: PostgresServerFactory,
) -> None:
    server = postgres_factory.start()
    url = server.create_schema()
    waiter, producer = open_store(url), open_store(url)
    waiter.wait_for_work(["default"], 0.01)
    server.kill()
    server.start()

    def producer_back() -> bool:
        try:
            producer.ping()
            return True
        except errors.StoreUnavailableError:
            return False

    wait_for(producer_back, timeout=30)
    # The listener reconnects with backoff; once it has, a notification wakes the waiter.
    wait_for(lambda: wake_time(waiter, producer) is not None, timeout=30, interval=0.1)
    # (The first wake-up may have been the reconnect's own "wake everyone"; this one is not.)
    assert wake_time(waiter, producer) is not None
    waiter.close()
    producer.close()
