"""Webhook dispatcher benchmark: outbox following cost and delivery throughput.

1. Following the feed when no job has a webhook (the common case): jobs are enqueued, claimed
   and completed (3 events each) on a SQLite store; one dispatcher `collect()`s every event.
2. Delivering: jobs with a webhook to a loopback receiver (uvicorn, verifies nothing, answers
   204); one dispatcher with 8 deliveries in flight sends every `job.*` event, signed.

Prints a table and writes bench/results/webhooks.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from tests.servers.http import serve_in_thread

from conveyor.ids import uuid7
from conveyor.store import Store, open_store
from conveyor.store.base import JobSpec, complete
from conveyor.webhooks.config import WebhookSettings
from conveyor.webhooks.dispatcher import Dispatcher
from conveyor.webhooks.ssrf import CallbackPolicy

JOBS_FOLLOW = 10_000
JOBS_DELIVER = 1_000


def make_jobs(store: Store, n: int, webhook: dict[str, str] | None) -> None:
    for start in range(0, n, 500):
        now = store.now()
        specs = [JobSpec(id=uuid7(), kind="noop", queue="bench", input={}, run_at=now,
                         webhook=webhook) for _ in range(min(500, n - start))]  # fmt: skip
        store.enqueue(specs)
        for job in store.claim(["bench"], "bench", len(specs), 60):
            assert job.lease is not None
            complete(store, job.id, job.lease.token, {"ok": True})


def follow(tmp: Path) -> dict[str, float]:
    store = open_store(f"sqlite:///{tmp / 'follow.db'}")
    make_jobs(store, JOBS_FOLLOW, None)
    dispatcher = Dispatcher(store, WebhookSettings(), CallbackPolicy())
    started = time.perf_counter()
    cpu = time.process_time()
    while dispatcher.collect():
        pass
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    dispatcher.close()
    store.close()
    events = 3 * JOBS_FOLLOW
    return {"events": events, "seconds": wall, "events_per_s": events / wall,
            "cpu_us_per_event": cpu / events * 1e6}  # fmt: skip


def deliver(tmp: Path) -> dict[str, float]:
    async def hook(request: object) -> Response:
        return Response(status_code=204)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    store = open_store(f"sqlite:///{tmp / 'deliver.db'}")
    with serve_in_thread(app) as base:
        make_jobs(store, JOBS_DELIVER, {"url": f"{base}/hook"})
        settings = WebhookSettings(
            secrets="whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", poll_s=0.01
        )
        dispatcher = Dispatcher(store, settings, CallbackPolicy(["127.0.0.0/8"]))
        started = time.perf_counter()
        while dispatcher.collect():
            pass
        collected = time.perf_counter() - started
        sent = 0
        while True:
            n = dispatcher.deliver_due()
            if n == 0:
                break
            sent += n
        wall = time.perf_counter() - started
        dispatcher.close()
    store.close()
    return {"deliveries": sent, "seconds": wall, "collect_seconds": collected,
            "deliveries_per_s": sent / wall}  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        results = {"follow": follow(Path(tmp)), "deliver": deliver(Path(tmp)),
                   "load_average": os.getloadavg()[0]}  # fmt: skip
    f, d = results["follow"], results["deliver"]
    print(f"{'measure':42} {'value':>12}")
    print(f"{'feed followed, no webhooks (events/s)':42} {f['events_per_s']:>12,.0f}")
    print(f"{'CPU per event followed (µs)':42} {f['cpu_us_per_event']:>12,.0f}")
    print(f"{'signed deliveries to loopback (per s)':42} {d['deliveries_per_s']:>12,.0f}")
    print(f"{'deliveries':42} {d['deliveries']:>12,.0f}")
    print(f"{'load average during the run':42} {results['load_average']:>12.1f}")
    out = Path(__file__).resolve().parent / "results" / "webhooks.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
