"""Webhook delivery end to end: a real receiver on loopback verifying signatures.

The backoff schedule is compressed through settings so retries take milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.ids import uuid7
from conveyor.models import JobError
from conveyor.store import Store, open_store
from conveyor.store.base import JobSpec, complete, fail
from conveyor.webhooks import endpoints
from conveyor.webhooks.config import WebhookSettings, validate_webhook
from conveyor.webhooks.dispatcher import Dispatcher, deliveries_of
from conveyor.webhooks.signing import generate_secret
from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError
from tests.integration.harness import ROOT, wait_for, worker_env
from tests.servers.http import serve_in_thread
from tests.servers.procfs import live_processes
from tests.webhooks.receiver import Receiver

LOOPBACK = CallbackPolicy(["127.0.0.0/8"])
FAST = {"backoff_s": 0.05, "backoff_max_s": 0.2, "poll_s": 0.05, "lease_s": 2, "timeout_s": 5}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'conveyor.db'}")
    yield opened
    opened.close()


def submit(
    store: Store, n: int, webhook: dict[str, Any] | None, queue: str = "default"
) -> list[str]:
    now = store.now()
    specs = [JobSpec(id=uuid7(), kind="noop", queue=queue, input={"i": i}, run_at=now,
                     max_attempts=1, webhook=webhook) for i in range(n)]  # fmt: skip
    return [job.id for job in store.enqueue(specs)]


def run_jobs(store: Store, ids: list[str], fail_ids: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    for job in store.claim(["default"], "test-worker", len(ids), 30):
        if job.id in fail_ids:
            fail(store, job.id, job.lease.token, JobError(type="Boom", message="it broke"), False)
        else:
            complete(store, job.id, job.lease.token, {"answer": 42})


@pytest.fixture
def dispatcher_thread() -> Iterator[Callable[..., Dispatcher]]:
    started: list[tuple[Dispatcher, threading.Event, threading.Thread]] = []

    def start(store: Store, **settings: Any) -> Dispatcher:
        dispatcher = Dispatcher(store, WebhookSettings(**{**FAST, **settings}), LOOPBACK)
        stop = threading.Event()
        thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True)
        thread.start()
        started.append((dispatcher, stop, thread))
        return dispatcher

    yield start
    for dispatcher, stop, thread in started:
        stop.set()
        dispatcher.wake.set()
        thread.join(timeout=10)


def all_settled(store: Store, job_ids: list[str], count: int) -> bool:
    found = [d for j in job_ids for d in deliveries_of(store, j)]
    return len(found) == count and all(d["status"] != "pending" for d in found)


def test_receiver_down_then_up_delivers_everything_with_stable_ids(
    store: Store, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    secret = generate_secret()
    receiver = Receiver([secret], status=503)
    with serve_in_thread(receiver.app()) as base:
        hook = {"url": f"{base}/hooks/conveyor"}
        ids = submit(store, 3, hook)
        run_jobs(store, ids, fail_ids={ids[2]})
        dispatcher_thread(store, secrets=secret)
        expected = {(j, t) for j in ids for t in ("job.queued", "job.running")}
        expected |= {(ids[0], "job.succeeded"), (ids[1], "job.succeeded"), (ids[2], "job.failed")}
        # Down: every message is retried at least three times...
        wait_for(
            lambda: (
                len(receiver.by_id()) == len(expected)
                and all(len(h) >= 3 for h in receiver.by_id().values())
            ),
            what="three failed attempts per message",
        )
        receiver.status = 200  # ...then the receiver comes back.
        wait_for(lambda: all_settled(store, ids, len(expected)), what="all delivered")

    delivered = receiver.delivered()
    got = {(h.payload["data"]["job_id"], h.payload["type"]) for h in delivered}
    assert got == expected
    assert all(h.verified for h in receiver.hits)
    for msg_id, hits in receiver.by_id().items():
        assert [h.answered for h in hits][:3] == [503, 503, 503]
        assert hits[-1].answered == 200
        assert len({h.body for h in hits}) == 1, "every retry sends the same bytes"
        assert msg_id.startswith("msg_")
    succeeded = next(h for h in delivered if h.payload["type"] == "job.succeeded")
    assert succeeded.payload["data"]["result"] == {"answer": 42}
    failed = next(h for h in delivered if h.payload["type"] == "job.failed")
    assert failed.payload["data"]["error"]["message"] == "it broke"
    for job_id in ids:
        for delivery in deliveries_of(store, job_id):
            codes = [a["status_code"] for a in delivery["attempts"]]
            assert delivery["status"] == "delivered"
            assert codes[-1] == 200 and codes.count(503) >= 3
            assert delivery["attempt_count"] == len(codes)
            gaps = [
                b["at"] - a["at"]
                for a, b in zip(delivery["attempts"], delivery["attempts"][1:], strict=False)
            ]
            assert all(g >= 0.02 for g in gaps), "retries wait (backoff with jitter)"


def test_dispatcher_killed_mid_delivery_loses_nothing(store: Store, tmp_path: Path) -> None:
    secret = generate_secret()
    receiver = Receiver([secret])
    receiver.hold_next = True
    env = {**os.environ, "CONVEYOR_CALLBACK_ALLOW": "127.0.0.0/8",
           "CONVEYOR_WEBHOOK_SECRETS": secret,
           **{f"CONVEYOR_WEBHOOK_{k.upper()}": str(v) for k, v in FAST.items()}}  # fmt: skip
    env["CONVEYOR_WEBHOOK_LEASE_S"] = "1"
    command = [sys.executable, "-c", "from conveyor.cli.webhooks import app; app()", "run",
               "--store", f"sqlite:///{tmp_path / 'conveyor.db'}"]  # fmt: skip

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    with serve_in_thread(receiver.app()) as base:
        first = submit(store, 2, {"url": f"{base}/hook"})
        run_jobs(store, first)
        process = start()
        try:
            assert receiver.held.wait(20), "the dispatcher never reached the receiver"
            os.killpg(process.pid, signal.SIGKILL)  # killed while a request is in flight
            process.wait(10)
            # Work goes on while no dispatcher runs: these events wait in the outbox.
            later = submit(store, 2, {"url": f"{base}/hook"})
            run_jobs(store, later)
            receiver.release.set()
            process = start()
            ids = first + later
            wait_for(lambda: all_settled(store, ids, 3 * len(ids)), what="all delivered")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(10)

    delivered = {(h.payload["data"]["job_id"], h.payload["type"]) for h in receiver.delivered()}
    assert delivered == {
        (j, t) for j in ids for t in ("job.queued", "job.running", "job.succeeded")
    }
    # The message in flight at the kill was sent again under the same webhook-id.
    held_id = receiver.hits[0].id
    assert [h.id for h in receiver.hits].count(held_id) >= 2
    assert all(d["status"] == "delivered" for j in ids for d in deliveries_of(store, j))


def test_gone_disables_the_endpoint(
    store: Store, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    secret = generate_secret()
    receiver = Receiver([secret], status=410)
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/gone", "events": ["job.queued"]})
        dispatcher_thread(store, secrets=secret)
        wait_for(lambda: all_settled(store, ids, 1), what="410 handled")
        assert endpoints.disabled(store, f"{base}/gone") is not None
        more = submit(store, 2, {"url": f"{base}/gone", "events": ["job.queued"]})
        wait_for(lambda: all_settled(store, more, 2), what="skipped deliveries")
    assert len(receiver.hits) == 1, "nothing is sent to a disabled endpoint"
    assert [d["status"] for j in ids + more for d in deliveries_of(store, j)] == ["disabled"] * 3
    assert [d["attempt_count"] for j in more for d in deliveries_of(store, j)] == [0, 0]


def test_gives_up_after_the_horizon(
    store: Store, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    secret = generate_secret()
    receiver = Receiver([secret], status=500)
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/h", "events": ["job.queued"]})
        dispatcher_thread(store, secrets=secret, horizon_s=0.6)
        wait_for(lambda: all_settled(store, ids, 1), what="given up")
    (delivery,) = deliveries_of(store, ids[0])
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] >= 3
    assert {a["status_code"] for a in delivery["attempts"]} == {500}


@pytest.mark.parametrize("status", [400, 404, 422])
def test_a_refused_message_fails_at_once(
    store: Store, dispatcher_thread: Callable[..., Dispatcher], status: int
) -> None:
    """A 4xx that refuses the message itself (a Swiss AI engine's 422) is not retried for days."""
    secret = generate_secret()
    receiver = Receiver([secret], status=status)
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/h", "events": ["job.queued"]})
        # A long horizon: only the permanent-refusal rule can end this delivery in the test.
        dispatcher_thread(store, secrets=secret, horizon_s=3600)
        wait_for(lambda: all_settled(store, ids, 1), what=f"{status} handled")
    (delivery,) = deliveries_of(store, ids[0])
    assert delivery["status"] == "failed"
    assert delivery["attempt_count"] == 1
    assert delivery["attempts"][0]["status_code"] == status
    assert len(receiver.hits) == 1
    assert endpoints.disabled(store, f"{base}/h") is None, "the endpoint itself stays enabled"


@pytest.mark.parametrize("status", [408, 409, 425, 429])
def test_transient_4xx_are_retried(
    store: Store, dispatcher_thread: Callable[..., Dispatcher], status: int
) -> None:
    secret = generate_secret()
    receiver = Receiver([secret], status=status)
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/h", "events": ["job.queued"]})
        dispatcher_thread(store, secrets=secret, horizon_s=3600)
        wait_for(lambda: len(receiver.hits) >= 3, what=f"{status} retried")
    (delivery,) = deliveries_of(store, ids[0])
    assert delivery["status"] == "pending"


def test_queue_default_secret_ids_and_event_filters(
    store: Store, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    named = endpoints.rotate_secret(store, "partner")
    receiver = Receiver([named])
    with serve_in_thread(receiver.app()) as base:
        endpoints.set_queue_default(
            store,
            "default",
            {"url": f"{base}/q", "events": ["job.succeeded"], "secret_id": "partner"},
        )
        ids = submit(store, 2, None)
        run_jobs(store, ids)
        # Rotation: a second secret signs too; a receiver on the old one still verifies.
        new = endpoints.rotate_secret(store, "partner")
        dispatcher_thread(store)
        wait_for(lambda: all_settled(store, ids, 2), what="queue default deliveries")
        assert endpoints.secrets_for(store, "partner", WebhookSettings()) == [new, named]
    assert sorted(h.path for h in receiver.delivered()) == ["/q", "/q"]
    assert {h.payload["type"] for h in receiver.hits} == {"job.succeeded"}
    assert all(h.verified for h in receiver.hits)


def test_connect_time_recheck_refuses_loopback_without_allow(
    store: Store, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    """A webhook stored while allowed, delivered by a guard that no longer allows it."""
    receiver = Receiver([generate_secret()])
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/h", "events": ["job.queued"]})
        dispatcher = Dispatcher(store, WebhookSettings(**FAST, horizon_s=0.3), CallbackPolicy())
        wait_for(lambda: dispatcher.step() is not None and all_settled(store, ids, 1))
        dispatcher.close()
    assert receiver.hits == []
    (delivery,) = deliveries_of(store, ids[0])
    assert delivery["status"] == "failed"
    assert "loopback" in delivery["attempts"][0]["error"]


def test_registration_check() -> None:
    with pytest.raises(UnsafeURLError):
        validate_webhook({"url": "http://169.254.169.254/latest"}, CallbackPolicy())
    with pytest.raises(Exception, match="unknown webhook events"):
        validate_webhook({"url": "https://example.com/h", "events": ["job.exploded"]}, LOOPBACK)
    with pytest.raises(Exception, match="invalid webhook"):
        validate_webhook({"url": "https://example.com/h", "colour": "red"}, LOOPBACK)
    spec = validate_webhook({"url": "http://127.0.0.1:9/h", "events": ["job.*"]}, LOOPBACK)
    assert spec == {"url": "http://127.0.0.1:9/h", "events": ["job.*"]}


def test_deliveries_route(
    store: Store, tmp_path: Path, dispatcher_thread: Callable[..., Dispatcher]
) -> None:
    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    secret = generate_secret()
    receiver = Receiver([secret])
    with serve_in_thread(receiver.app()) as base:
        ids = submit(store, 1, {"url": f"{base}/h", "events": ["job.queued"]})
        dispatcher_thread(store, secrets=secret)
        wait_for(lambda: all_settled(store, ids, 1))
    settings = Settings(home=tmp_path, store=f"sqlite:///{tmp_path / 'conveyor.db'}")
    with serve_in_thread(create_app(settings)) as api:
        got = httpx.get(f"{api}/v1/jobs/{ids[0]}/deliveries", timeout=10)
        missing = httpx.get(f"{api}/v1/jobs/{uuid7()}/deliveries", timeout=10)
        # The CLI with --url asks that API (the local store it would read is not there).
        env = worker_env(tmp_path / "cli", CONVEYOR_STORE="sqlite:////nonexistent/never.db")
        command = [sys.executable, "-m", "conveyor", "--url", api, "webhooks", "deliveries"]
        shown = subprocess.run([*command, ids[0]], env=env, cwd=ROOT, capture_output=True,
                               text=True, timeout=60)  # fmt: skip
        unknown = subprocess.run([*command, uuid7()], env=env, cwd=ROOT, capture_output=True,
                                 text=True, timeout=60)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert [d["status"] for d in json.loads(shown.stdout)] == ["delivered"]
    assert unknown.returncode != 0
    assert "Traceback" not in unknown.stderr
    assert got.status_code == 200, got.text
    (delivery,) = got.json()["deliveries"]
    assert delivery["status"] == "delivered"
    assert delivery["event"] == "job.queued"
    assert delivery["attempts"][0]["status_code"] == 200
    assert "body" not in delivery
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")


def test_submit_refuses_unsafe_webhooks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checked at registration, through the service and the HTTP API (problem+json 422)."""
    from conveyor.api.app import create_app
    from conveyor.models import KindInfo, NewJob
    from conveyor.service import Service
    from conveyor.settings import Settings
    from conveyor.storage.fs import FileStorage

    monkeypatch.delenv("CONVEYOR_CALLBACK_ALLOW", raising=False)
    settings = Settings(home=tmp_path, store=f"sqlite:///{tmp_path / 'conveyor.db'}")
    store = open_store(settings.store_url)
    store.register_kinds([KindInfo(name="noop")])
    service = Service(store, FileStorage(tmp_path / "files"))
    for url in ("http://169.254.169.254/latest", "http://[::1]/", "ftp://example.com/"):
        with pytest.raises(UnsafeURLError):
            service.submit(NewJob(kind="noop", webhook={"url": url}))
    with serve_in_thread(create_app(settings)) as api:
        refused = httpx.post(f"{api}/v1/jobs", json={"kind": "noop", "webhook": {
            "url": "http://10.0.0.1/hook"}}, timeout=10)  # fmt: skip
    store.close()
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "private address" in refused.json()["detail"]


def test_delivery_log_retention(tmp_path: Path) -> None:
    from conveyor.clock import FakeClock

    clock = FakeClock()
    store = open_store(f"sqlite:///{tmp_path / 'clocked.db'}", clock=clock)
    secret = generate_secret()
    receiver = Receiver([secret])
    hook = {"url": "", "events": ["job.queued"]}
    with serve_in_thread(receiver.app()) as base:
        hook["url"] = f"{base}/h"
        kept, deleted = submit(store, 1, hook), submit(store, 1, hook)
        settings = WebhookSettings(**FAST, secrets=secret, log_retention_s=3600)
        dispatcher = Dispatcher(store, settings, LOOPBACK)
        wait_for(lambda: dispatcher.step() is not None and all_settled(store, kept + deleted, 2))
    store.cancel(deleted[0])
    store.delete(deleted[0])
    assert dispatcher.prune_log() == 1  # the deleted job's log goes, the live one stays
    assert len(deliveries_of(store, kept[0])) == 1
    clock.advance(3601)
    assert dispatcher.prune_log() == 1
    assert deliveries_of(store, kept[0]) == []
    dispatcher.close()
    store.close()


def test_worker_runs_a_dispatcher_process_that_dies_with_it(tmp_path: Path) -> None:
    env = {**os.environ, "CONVEYOR_HOME": str(tmp_path), "CONVEYOR_IMPORTS": "conveyor.kinds.demo"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "worker", "-c", "1", "--store",
         f"sqlite:///{tmp_path / 'c.db'}"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        dispatchers = wait_for(
            lambda: [
                p.pid
                for p in live_processes()
                if p.ppid == worker.pid and "webhooks run" in p.cmdline()
            ],
            what="the dispatcher process",
        )
        os.kill(worker.pid, signal.SIGKILL)  # the worker dies without stopping its dispatcher
        worker.wait(10)
        wait_for(
            lambda: all(p.pid != dispatchers[0] for p in live_processes()),
            what="the orphaned dispatcher to exit",
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
