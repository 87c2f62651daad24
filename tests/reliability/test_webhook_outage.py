"""Reliability-plan S14: webhook delivery through a receiver outage and dispatcher crashes.

Jobs carry webhooks (every state change: `job.queued`, `job.running`, `job.succeeded`) and run
while a real `conveyor webhooks run` process delivers them to a real receiver that verifies
Standard Webhooks signatures. The backoff schedule is compressed (0.2 s doubling to 1 s, 1 s
per-attempt timeout, 60 s horizon). The receiver is first down (connection refused), then
answers 500, then answers 200 too slowly (after the attempt's timeout), then is healthy; the
dispatcher is SIGKILLed while a request is in flight in each of the last three phases and
started again. A few jobs' webhooks point to 127.0.0.2, outside the allowed callback range
(rows written before a policy change): the guard must refuse them at delivery.

Pass: every event delivered (2xx) within the horizon; one stable `webhook-id` per event, the
same bytes on every retry (duplicates only under that id, at most one per attempt that timed
out or was killed); every signature valid; 0 connections to the blocked address.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from conveyor.ids import uuid7
from conveyor.store import Store, open_store
from conveyor.store.base import JobSpec, complete
from conveyor.webhooks.config import WebhookSettings
from conveyor.webhooks.dispatcher import PENDING, deliveries_of
from conveyor.webhooks.signing import generate_secret
from tests.backends import Backend
from tests.integration.harness import wait_for
from tests.reliability.conftest import SQLITE_IN_PR
from tests.reliability.fault_results import record_fault_run
from tests.servers.http import free_port, serve_in_thread
from tests.webhooks.receiver import Receiver

pytestmark = [pytest.mark.timeout(300),
              pytest.mark.parametrize("shared_backend", SQLITE_IN_PR, indirect=True)]  # fmt: skip
BATCH, BLOCKED = 50, 5
EVENTS = ("job.queued", "job.running", "job.succeeded")
TIMEOUT_S, HORIZON_S = 1.0, 60.0
SETTINGS = {"BACKOFF_S": 0.2, "BACKOFF_MAX_S": 1, "POLL_S": 0.05, "LEASE_S": 1,
            "TIMEOUT_S": TIMEOUT_S, "HORIZON_S": HORIZON_S}  # fmt: skip


def run_batch(store: Store, webhooks: list[dict[str, Any]]) -> list[str]:
    """Enqueue one job per webhook and run them all (claim, complete): three events each."""
    now = store.now()
    specs = [JobSpec(id=uuid7(), kind="noop", queue="default", input={}, run_at=now,
                     max_attempts=1, webhook=hook) for hook in webhooks]  # fmt: skip
    ids = [job.id for job in store.enqueue(specs)]
    for job in store.claim(["default"], "s14-worker", len(ids), 30):
        assert job.lease is not None
        complete(store, job.id, job.lease.token, {"ok": True})
    return ids


class Dispatchers:
    """`conveyor webhooks run` processes, started and SIGKILLed by the scenario."""

    def __init__(self, store_url: str, secret: str, log: Path) -> None:
        self.env = {**os.environ, "CONVEYOR_CALLBACK_ALLOW": "127.0.0.1/32",
                    "CONVEYOR_WEBHOOK_SECRETS": secret,
                    **{f"CONVEYOR_WEBHOOK_{k}": str(v) for k, v in SETTINGS.items()}}  # fmt: skip
        self.command = [sys.executable, "-m", "conveyor", "webhooks", "run", "--store",
                        store_url, "--log-level", "warning"]  # fmt: skip
        self.log = log
        self.process = self.start()
        self.kills = 0

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen(self.command, env=self.env, stdout=out, stderr=out,
                                    start_new_session=True)  # fmt: skip

    def kill_mid_delivery(self, receiver: Receiver) -> None:
        """SIGKILL the dispatcher while the receiver holds one of its requests; restart it."""
        receiver.release.clear()
        receiver.held.clear()
        receiver.hold_next = True
        assert receiver.held.wait(30), "no delivery reached the receiver"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self.kills += 1
        receiver.release.set()
        self.process = self.start()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(15)


@contextmanager
def blocked_listener() -> Iterator[tuple[socket.socket, str]]:
    """A port on 127.0.0.2 (not allowed): handshakes pile up in its backlog, counted later."""
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.listen(128)
    try:
        yield sock, f"http://127.0.0.2:{sock.getsockname()[1]}/hook"
    finally:
        sock.close()


def connections(sock: socket.socket) -> int:
    sock.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def pending_attempted(store: Store, at_least: int) -> Callable[[], bool]:
    return lambda: sum(1 for _, d in store.list_records(PENDING) if d["attempt_count"]) >= at_least


def all_delivered(store: Store, ids: list[str]) -> bool:
    found = [d for j in ids for d in deliveries_of(store, j)]
    return len(found) == 3 * len(ids) and all(d["status"] == "delivered" for d in found)


def test_s14_webhooks_survive_receiver_outage_and_dispatcher_kills(
    shared_backend: Backend, tmp_path: Path
) -> None:
    store = open_store(shared_backend.url)
    secret = generate_secret()
    receiver = Receiver([secret])
    port = free_port()
    hook = {"url": f"http://127.0.0.1:{port}/hook"}
    ids: list[str] = []
    with ExitStack() as stack:
        blocked, blocked_url = stack.enter_context(blocked_listener())
        fenced = run_batch(store, [{"url": blocked_url}] * BLOCKED)
        dispatchers = Dispatchers(shared_backend.url, secret, tmp_path / "dispatcher.log")
        stack.callback(dispatchers.stop)
        started = time.monotonic()
        # Down: nothing listens on the receiver's port (connection refused).
        ids += run_batch(store, [hook] * BATCH)
        wait_for(pending_attempted(store, BATCH), timeout=60, what="refused attempts")
        # Up, answering 500.
        receiver.status = 500
        stack.enter_context(serve_in_thread(receiver.app(), port))
        ids += run_batch(store, [hook] * BATCH)
        wait_for(lambda: len(receiver.hits) >= BATCH, timeout=60, what="500 answers")
        dispatchers.kill_mid_delivery(receiver)
        # Answering 200, but after the attempt's timeout.
        receiver.status, receiver.delay_s = 200, TIMEOUT_S * 1.5
        ids += run_batch(store, [hook] * BATCH)
        wait_for(lambda: sum(h.answered == 200 for h in receiver.hits) >= 10, timeout=60,
                 what="slow answers")  # fmt: skip
        dispatchers.kill_mid_delivery(receiver)
        # Healthy again; one more crash while it catches up.
        receiver.delay_s = 0.0
        dispatchers.kill_mid_delivery(receiver)
        wait_for(lambda: all_delivered(store, ids), timeout=HORIZON_S + 30, interval=0.2,
                 what="every event delivered")  # fmt: skip
        elapsed = time.monotonic() - started
        knocks = connections(blocked)
    deliveries = [d for j in ids for d in deliveries_of(store, j)]
    refused = [d for j in fenced for d in deliveries_of(store, j)]
    store.close()

    wanted = {(j, e) for j in ids for e in EVENTS}
    hits = receiver.hits
    delivered = {(h.payload["data"]["job_id"], h.payload["type"]) for h in receiver.delivered()}
    ids_of: dict[tuple[str, str], set[str]] = {}
    for h in hits:
        ids_of.setdefault((h.payload["data"]["job_id"], h.payload["type"]), set()).add(h.id)
    bodies = {i: {h.body for h in group} for i, group in receiver.by_id().items()}
    redelivered = sum(max(0, sum(200 <= h.answered < 300 for h in g) - 1)
                      for g in receiver.by_id().values())  # fmt: skip
    cut_short = sum(1 for d in deliveries for a in d["attempts"]
                    if (a["error"] or "").startswith("timed out"))  # fmt: skip
    bound = cut_short + dispatchers.kills * WebhookSettings().concurrency  # in flight at a kill
    late = [d for d in deliveries if d["delivered_at"] - d["created_at"] > HORIZON_S]
    record_fault_run(
        "S14 webhook outage + dispatcher kills", shared_backend.name, jobs=len(wanted),
        faults=f"receiver refusing, then 500, then 200 after the {TIMEOUT_S:g} s timeout; "
        f"{dispatchers.kills} dispatcher SIGKILLs mid-delivery",
        lost=len(wanted - delivered),
        duplicate_completions=sum(1 for group in ids_of.values() if len(group) > 1),
        duplicate_executions=redelivered, inflight_bound=bound,
        notes=f"events, not jobs: {len(ids)} jobs x 3; {len(hits)} requests received, all "
        f"{'signed' if all(h.verified for h in hits) else 'NOT all signed'}; duplicates = 2xx "
        f"redeliveries under the same webhook-id; {knocks} connections to the blocked "
        f"address ({len(refused)} deliveries refused); {elapsed:.0f} s to deliver all",
    )  # fmt: skip
    assert delivered == wanted
    assert all(len(group) == 1 for group in ids_of.values()), "an event got two webhook-ids"
    assert all(len(b) == 1 for b in bodies.values()), "a retry sent different bytes"
    assert all(h.verified for h in hits)
    assert late == []
    assert redelivered <= bound
    assert dispatchers.kills == 3
    assert knocks == 0
    assert refused and all(d["status"] != "delivered" for d in refused)
    assert all(a["error"].startswith("refused") for d in refused for a in d["attempts"])
