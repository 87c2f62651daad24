"""PostgreSQL-specific behaviour the conformance suite cannot see: concurrency and URLs."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.models import JobFilter
from conveyor.store import JobSpec
from conveyor.store.postgres import PostgresStore
from tests.reliability.reset_proxy import ResetProxy
from tests.servers.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def test_concurrent_enqueues_with_one_idempotency_key_make_one_job(
    postgres_server: PostgresServer,
) -> None:
    url = postgres_server.create_schema()
    stores = [PostgresStore.from_url(url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    got: list[str] = []

    def submit(store: PostgresStore) -> None:
        spec = JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=time.time(),
                       idempotency_key="same", request_hash="h")  # fmt: skip
        barrier.wait()
        got.extend(job.id for job in store.enqueue([spec]))

    threads = [threading.Thread(target=submit, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(got) == len(stores) and len(set(got)) == 1
    assert len(stores[0].list_jobs(JobFilter()).jobs) == 1
    for store in stores:
        store.close()


def test_times_come_from_the_server_clock(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_schema()
    store = PostgresStore.from_url(url)
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT extract(epoch FROM now())::float8").fetchone()
    assert row is not None
    assert abs(store.now() - row[0]) < 5
    [job] = store.enqueue([JobSpec(id=uuid7(), kind="noop", queue="q", input={},
                                   run_at=store.now())])  # fmt: skip
    [claimed] = store.claim(["q"], "w", 1, 30.0)
    assert claimed.lease is not None and claimed.started_at is not None
    lease = claimed.lease.expires_at - claimed.started_at
    assert lease.total_seconds() == pytest.approx(30.0, abs=0.01)
    assert job.created_at <= claimed.started_at
    store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://u@127.0.0.1:5/db?pool_size=many", "pool_size"),
        ("postgresql://u@127.0.0.1:5/db?nonsense_option=1", "invalid PostgreSQL URL"),
        ("postgresql://u@127.0.0.1:5/db?call_timeout=soon", "call_timeout"),
    ],
)
def test_bad_urls_are_configuration_errors(url: str, message: str) -> None:
    with pytest.raises(errors.ConfigurationError, match=message):
        PostgresStore.from_url(url, migrate=False)


def test_unreachable_server_is_store_unavailable() -> None:
    with pytest.raises(errors.StoreUnavailableError, match="cannot reach PostgreSQL"):
        PostgresStore.from_url("postgresql://u@127.0.0.1:1/db")


def test_a_call_on_a_half_open_connection_is_broken_off(postgres_server: PostgresServer) -> None:
    """A peer that acknowledges bytes but never answers: `call_timeout` ends the call, the pool
    drops the connection and the next call works (S12 found a worker stuck here for good)."""
    url = postgres_server.create_schema()
    proxy = ResetProxy(postgres_server.port)
    with proxy.running():
        store = PostgresStore.from_url(proxy.via(url) + "&call_timeout=1")
        try:
            store.ping()
            proxy.stall()
            started = time.monotonic()
            with pytest.raises(errors.StoreUnavailableError):
                store.ping()
            assert time.monotonic() - started < 1 + 2  # the deadline + the watchdog's period
            proxy.heal()
            store.ping()
        finally:
            store.close()
