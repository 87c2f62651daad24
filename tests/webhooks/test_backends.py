"""The outbox dispatcher on every store backend: the feed, records and cursor it relies on."""

from __future__ import annotations

import time

from conveyor.clock import FakeClock
from conveyor.ids import uuid7
from conveyor.store import Store
from conveyor.store.base import JobSpec, complete
from conveyor.webhooks.config import WebhookSettings
from conveyor.webhooks.dispatcher import Dispatcher, deliveries_of
from conveyor.webhooks.signing import generate_secret
from conveyor.webhooks.ssrf import CallbackPolicy
from tests.servers.http import serve_in_thread
from tests.webhooks.receiver import Receiver


def test_every_event_delivered_once_per_endpoint(store: Store, clock: FakeClock) -> None:
    secret = generate_secret()
    receiver = Receiver([secret])
    with serve_in_thread(receiver.app()) as base:
        now = store.now()
        specs = [JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now,
                         webhook={"url": f"{base}/h"}) for _ in range(3)]  # fmt: skip
        ids = [job.id for job in store.enqueue(specs)]
        for job in store.claim(["default"], "w", 3, 30):
            assert job.lease is not None
            complete(store, job.id, job.lease.token, {"ok": 1})
        settings = WebhookSettings(secrets=secret, poll_s=0.01, timeout_s=5)
        dispatcher = Dispatcher(store, settings, CallbackPolicy(["127.0.0.0/8"]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            dispatcher.step()
            found = [d for j in ids for d in deliveries_of(store, j)]
            if len(found) == 9 and all(d["status"] == "delivered" for d in found):
                break
        dispatcher.close()
    got = sorted((h.payload["data"]["job_id"], h.payload["type"]) for h in receiver.delivered())
    expected = sorted((j, t) for j in ids for t in ("job.queued", "job.running", "job.succeeded"))
    assert got == expected
    assert len({h.id for h in receiver.hits}) == 9
    assert all(h.verified for h in receiver.hits)
    # A second dispatcher (a restart) resumes from the stored cursor: nothing is sent again.
    again = Dispatcher(store, settings, CallbackPolicy(["127.0.0.0/8"]), owner="second")
    clock.advance(3600)  # the first one's lease has expired
    assert again.step() is False
    assert again.cursor() == dispatcher.cursor() > 0
    again.close()
    assert len(receiver.hits) == 9


def test_jobs_seen_created_are_routed_without_reading_them(store: Store) -> None:
    """The first event of a job says whether it has a webhook: of 200 jobs without one, the
    dispatcher reads none; it reads the one job whose events it delivers."""
    read: list[str] = []
    list_jobs = store.list_jobs

    def counting(filter, cursor=None, limit=50):  # type: ignore[no-untyped-def]
        read.extend(filter.ids or ["<scan>"])
        return list_jobs(filter, cursor, limit)

    now = store.now()
    specs = [JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now)
             for _ in range(200)]  # fmt: skip
    hooked = JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now,
                     webhook={"url": "http://127.0.0.1:9/h"})  # fmt: skip
    store.enqueue([*specs, hooked])
    dispatcher = Dispatcher(store, WebhookSettings(), CallbackPolicy(["127.0.0.0/8"]))
    store.list_jobs = counting  # type: ignore[method-assign]
    try:
        while dispatcher.collect():
            pass
    finally:
        del store.list_jobs
        dispatcher.close()
    assert read == [hooked.id]
    assert [d["event"] for d in deliveries_of(store, hooked.id)] == ["job.queued"]
