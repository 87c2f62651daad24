"""The webhook dispatcher: follows the store's event feed (the durable outbox) and delivers.

Every state change is written to the event log in the same transaction as the change itself,
so the feed is an outbox nothing can slip past. The dispatcher:

1. reads the feed after its cursor (`webhooks/cursor` record);
2. for each event and each endpoint that wants it (the job's webhook, else its queue's default)
   writes a pending delivery (`webhook_pending/<job>/<seq>-<n>`: the body frozen, a stable
   `webhook-id`, when it is due) — and only then advances the cursor, so a crash re-reads the
   events and finds the deliveries already there (checked in the first batch after a start);
3. sends due deliveries, signed (Standard Webhooks), through the SSRF-guarded sender; records
   each attempt in the pending record; on failure schedules the next one with exponential
   backoff and jitter until the horizon passes; a 410 answer disables the endpoint; any other
   4xx except 408/409/425/429 is permanent (the receiver refused this very message, sending it
   again cannot help): the delivery ends `failed` at once; the final outcome moves to
   `webhook_deliveries/<same key>` (the log, kept `log_retention_s`).

Killed at any point it loses nothing: a delivery leaves `webhook_pending` only after its final
outcome is written to `webhook_deliveries`, so at worst one message is sent twice, with the
same `webhook-id` (receivers deduplicate on it). One dispatcher per store is active at a time
(a lease record); others wait. Cost: one durable write per message created, one per retry, two
at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.models import Job, JobEvent
from conveyor.store.base import Store, jobs_by_id
from conveyor.store.routes import Routes
from conveyor.telemetry import tracing
from conveyor.webhooks import endpoints
from conveyor.webhooks.config import WebhookSettings, WebhookSpec, event_type, parse_spec
from conveyor.webhooks.process import SupervisedProcess
from conveyor.webhooks.sender import Outcome, Sender
from conveyor.webhooks.signing import sign_headers
from conveyor.webhooks.ssrf import CallbackPolicy
from conveyor.workflows import hooks as workflow_hooks

log = logging.getLogger("conveyor.webhooks")

STATE = "webhooks"
DELIVERIES = "webhook_deliveries"
PENDING = "webhook_pending"
FEED_BATCH = 500
MAX_LOGGED_ATTEMPTS = 50
RESPONSE_LOGGED = 512
PRUNE_EVERY_S = 3600.0
# 4xx answers that may pass: timeout, conflict, too early, rate limited. Any other 4xx refuses
# the message itself (a Swiss AI engine's 422 on a body it cannot read), so it is not retried.
RETRIED_4XX = frozenset({408, 409, 425, 429})
WORKFLOWS_EVERY_S = 0.25  # how often workflows' derived states are looked at (workflows/hooks)


def deliveries_of(store: Store, job_id: str) -> list[dict[str, Any]]:
    """The delivery log of one job, oldest first (what `GET /v1/jobs/{id}/deliveries` shows):
    pending deliveries live in `webhook_pending`, finished ones in `webhook_deliveries`."""
    found = dict(store.list_records(DELIVERIES, prefix=f"{job_id}/"))
    found.update(store.list_records(PENDING, prefix=f"{job_id}/"))
    return [found[key] for key in sorted(found)]


class Dispatcher:
    """Delivers webhooks from one store. Call `run(stop)` in a thread or process."""

    def __init__(
        self,
        store: Store,
        settings: WebhookSettings | None = None,
        policy: CallbackPolicy | None = None,
        *,
        owner: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or WebhookSettings()
        self.policy = policy or CallbackPolicy.from_env()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid7()[-8:]}"
        self.rng = rng or random.Random()
        self.sender = Sender(self.policy, self.settings.timeout_s, self.settings.max_response_bytes)
        self.pool = ThreadPoolExecutor(self.settings.concurrency, thread_name_prefix="webhook")
        self.wake = threading.Event()
        self.last_prune = time.monotonic()
        # The batch after a (re)start may have been half done before a crash: check it for
        # deliveries that already exist. Later batches are new (the cursor moved past them).
        self.recheck = True
        self.routes = Routes(store)
        tracing.configure()
        self.last_workflows = 0.0

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.sender.close()

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, on_ready: Callable[[], None] | None = None) -> None:
        """Poll and deliver until `stop` is set."""
        log.info("webhook dispatcher %s started", self.owner)
        if on_ready:
            on_ready()
        try:
            while not stop.is_set():
                busy = False
                try:
                    busy = self.step()
                except errors.StoreUnavailableError as exc:
                    log.warning("store unavailable (%s); webhook delivery retries", exc)
                except Exception:
                    log.exception("webhook dispatcher step failed; retrying")
                if not busy:
                    self.wake.wait(self.settings.poll_s)
                    self.wake.clear()
        finally:
            self._release_lease()
            self.close()

    def step(self) -> bool:
        """One pass: take the lease, turn new events into deliveries, send what is due.

        Returns True if there may be more work right away.
        """
        if not self._take_lease():
            return False
        more = self.collect()
        if time.monotonic() - self.last_workflows >= WORKFLOWS_EVERY_S:
            self.last_workflows = time.monotonic()
            workflow_hooks.collect(self.store, self._create_once)
        sent = self.deliver_due()
        if time.monotonic() - self.last_prune >= PRUNE_EVERY_S:
            self.last_prune = time.monotonic()
            self.prune_log()
        return more or sent > 0

    def prune_log(self) -> int:
        """Forget finished deliveries older than the retention (and those of deleted jobs)."""
        cutoff = self.store.now() - self.settings.log_retention_s
        finished = self.store.list_records(DELIVERIES)
        alive = jobs_by_id(self.store, {d["job_id"] for _, d in finished})
        gone = [
            k for k, d in finished
            if d["created_at"] < cutoff or ("workflow_id" not in d and d["job_id"] not in alive)
        ]  # fmt: skip
        for key in gone:
            self.store.delete_record(DELIVERIES, key)
        return len(gone)

    # -- lease: one active dispatcher per store -------------------------------------------------

    def _take_lease(self) -> bool:
        now = self.store.now()
        lease = self.store.get_record(STATE, "lease")
        if lease and lease.get("owner") != self.owner and lease.get("expires_at", 0) > now:
            self.recheck = True  # another dispatcher worked meanwhile: verify before creating
            return False
        mine = lease is not None and lease.get("owner") == self.owner
        if mine and lease and lease.get("expires_at", 0) - now > self.settings.lease_s / 2:
            return True  # ours for a while yet: renew only past half-time (fewer writes)
        self.store.put_record(
            STATE, "lease", {"owner": self.owner, "expires_at": now + self.settings.lease_s}
        )
        # Two dispatchers racing for an expired lease: the last write wins, the other backs off.
        lease = self.store.get_record(STATE, "lease")
        return bool(lease and lease.get("owner") == self.owner)

    def _release_lease(self) -> None:
        with contextlib.suppress(Exception):
            lease = self.store.get_record(STATE, "lease")
            if lease and lease.get("owner") == self.owner:
                self.store.delete_record(STATE, "lease")

    # -- outbox → deliveries ------------------------------------------------------------------

    def cursor(self) -> int:
        record = self.store.get_record(STATE, "cursor")
        return int(record["seq"]) if record else 0

    def collect(self) -> bool:
        """Create deliveries for new events; True if the feed had a full batch."""
        after = self.cursor()
        events = self.store.feed(after, FEED_BATCH)
        if not events:
            return False
        # Most jobs have no webhook: a job is loaded in full only when one of its events is
        # to be delivered (where each job goes comes from its first event: store.routes).
        queue_specs: dict[str, WebhookSpec | None] = {}
        routes = self.routes.of(events, (e.job_id for e in events))
        wanted = {
            job_id
            for job_id, route in routes.items()
            if route.webhook or self._queue_spec(route.queue, queue_specs)
        }
        jobs = jobs_by_id(self.store, wanted)
        for event in events:
            job = jobs.get(event.job_id)
            if job is not None:
                for index, spec in enumerate(self._specs(job, queue_specs)):
                    if spec.wants(event_type(event)):
                        self._create(job, event, index, spec)
        self.store.put_record(STATE, "cursor", {"seq": events[-1].seq})
        self.recheck = False
        return len(events) == FEED_BATCH

    def _queue_spec(self, queue: str, cache: dict[str, WebhookSpec | None]) -> bool:
        if queue not in cache:
            cache[queue] = endpoints.queue_default(self.store, queue)
        return cache[queue] is not None

    def _specs(self, job: Job, cache: dict[str, WebhookSpec | None]) -> list[WebhookSpec]:
        if job.webhook:
            try:
                return [parse_spec(job.webhook)]
            except errors.InvalidInputError as exc:
                log.warning("job %s has an invalid webhook (%s); skipping it", job.id, exc)
                return []
        self._queue_spec(job.queue, cache)
        default = cache[job.queue]
        return [] if default is None else [default]

    def _create(self, job: Job, event: JobEvent, index: int, spec: WebhookSpec) -> None:
        key = f"{job.id}/{event.seq:012d}-{index}"
        if self.recheck and (
            self.store.get_record(PENDING, key) or self.store.get_record(DELIVERIES, key)
        ):
            return  # created before a crash: keep its attempts
        kind = event_type(event)
        method, body = _render(job, event, kind, spec)
        now = self.store.now()
        delivery = {
            "id": f"msg_{event.seq}_{index}",
            "job_id": job.id,
            "seq": event.seq,
            "event": kind,
            "url": spec.url,
            "method": method,
            "format": spec.format,
            "secret_id": spec.secret_id,
            "body": body,
            "status": "pending",
            "attempts": [],
            "attempt_count": 0,
            "created_at": now,
            "next_at": now,
        }
        if parent := tracing.traceparent_of(job.tags):
            delivery["traceparent"] = parent  # each attempt's span joins the job's trace
        self.store.put_record(PENDING, key, delivery)  # one durable write per message

    def _create_once(self, key: str, delivery: dict[str, Any]) -> None:
        """Write a pending delivery unless this key has one (pending or finished) already."""
        if self.store.get_record(PENDING, key) or self.store.get_record(DELIVERIES, key):
            return
        self.store.put_record(PENDING, key, delivery)

    # -- sending ----------------------------------------------------------------------------------

    def due(self, limit: int) -> list[tuple[str, dict[str, Any]]]:
        now = self.store.now()
        pending = self.store.list_records(PENDING)
        ready = sorted(
            ((v.get("next_at", 0), k, v) for k, v in pending if v.get("next_at", 0) <= now),
            key=lambda item: (item[0], item[1]),
        )
        return [(key, value) for _, key, value in ready[:limit]]

    def deliver_due(self) -> int:
        batch = self.due(self.settings.concurrency * 4)
        if not batch:
            return 0
        list(self.pool.map(self._deliver_one, batch))
        return len(batch)

    def _deliver_one(self, item: tuple[str, dict[str, Any]]) -> None:
        key, delivery = item
        try:
            self.attempt(key, delivery)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly; it stays pending", key)

    def attempt(self, key: str, delivery: dict[str, Any]) -> None:
        """Send one delivery once and record the outcome."""
        url = delivery["url"]
        if endpoints.disabled(self.store, url):
            self._finish(key, delivery, "disabled")
            return
        outcome = self._send(delivery)
        now = self.store.now()
        entry = {
            "at": now,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "duration_ms": outcome.duration_ms,
            "response": outcome.body[:RESPONSE_LOGGED].decode("utf-8", "replace"),
        }
        delivery["attempt_count"] = delivery.get("attempt_count", 0) + 1
        delivery["attempts"] = [*delivery.get("attempts", []), entry][-MAX_LOGGED_ATTEMPTS:]
        if outcome.ok:
            delivery["delivered_at"] = now
            self._finish(key, delivery, "delivered")
        elif outcome.status_code == 410:
            endpoints.disable(self.store, url, now, "410 Gone")
            log.warning("webhook endpoint %s answered 410 Gone: disabled", url)
            self._finish(key, delivery, "disabled")
        elif is_permanent(outcome.status_code):
            log.warning("webhook %s to %s refused with %s: not retried", delivery["id"],
                        url, outcome.status_code)  # fmt: skip
            self._finish(key, delivery, "failed")
        else:
            self._retry_later(key, delivery, now)

    def _send(self, delivery: dict[str, Any]) -> Outcome:
        body = delivery["body"].encode()
        try:
            secrets = endpoints.secrets_for(self.store, delivery.get("secret_id"), self.settings)
        except errors.ConfigurationError as exc:
            return Outcome(None, error=str(exc))
        headers = sign_headers(secrets, delivery["id"], int(time.time()), body)
        headers["content-type"] = "application/json"
        if not tracing.ENABLED:
            return self.sender.send(delivery["method"], delivery["url"], headers, body)
        from conveyor.telemetry import spans

        with spans.webhook(delivery, headers) as span:  # headers gain its traceparent
            outcome = self.sender.send(delivery["method"], delivery["url"], headers, body)
            spans.webhook_result(span, outcome.status_code, outcome.error)
        return outcome

    def _retry_later(self, key: str, delivery: dict[str, Any], now: float) -> None:
        n = delivery["attempt_count"]
        delay = min(self.settings.backoff_max_s, self.settings.backoff_s * 2 ** (n - 1))
        next_at = now + delay * self.rng.uniform(0.5, 1.0)  # jitter: spread a herd of retries
        if next_at > delivery["created_at"] + self.settings.horizon_s:
            log.warning("webhook %s to %s: giving up after %d attempts", delivery["id"],
                        delivery["url"], n)  # fmt: skip
            self._finish(key, delivery, "failed")
            return
        delivery["next_at"] = next_at
        self.store.put_record(PENDING, key, delivery)

    def _finish(self, key: str, delivery: dict[str, Any], status: str) -> None:
        delivery["status"] = status
        delivery.pop("next_at", None)
        self.store.put_record(DELIVERIES, key, delivery)  # the outcome first, then
        self.store.delete_record(PENDING, key)  # it leaves the pending list


def is_permanent(status_code: int | None) -> bool:
    """True for an answer that sending the same message again cannot change."""
    return status_code is not None and 400 <= status_code < 500 and status_code not in RETRIED_4XX


def _render(job: Job, event: JobEvent, kind: str, spec: WebhookSpec) -> tuple[str, str]:
    """The method and exact body of a delivery (frozen: every retry sends the same bytes)."""
    if spec.format == "swissai":
        return "PATCH", _dumps(swissai_update(job, kind, spec, event.data))
    data: dict[str, Any] = {"job_id": job.id, "kind": job.kind, "queue": job.queue,
                            **event.data}  # fmt: skip
    if kind == "job.succeeded":
        data["result"] = job.result
    payload = {"type": kind, "timestamp": _iso(event.at), "data": data}
    return "POST", _dumps(payload)


def swissai_update(
    job: Job, kind: str, spec: WebhookSpec, data: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The Swiss AI `TaskUpdate` a finished job reports to its `callback_url`.

    `data_out` is always a list (`[]` on error): the engine's `TaskUpdate` requires one and
    answers 422 to `null`, which would leave the task `fetching` for ever.
    """
    result = job.result if isinstance(job.result, dict) else {}
    finished = kind == "job.succeeded"
    message = None
    if not finished:
        error = (data or {}).get("error") or {}  # the event's own error: the job may have moved on
        message = error.get("message") or (job.error.message if job.error else None)
        message = message or "the task was cancelled"
    return {
        "service": spec.service,
        "url": spec.service_url,
        "data_out": list(result.get("data_out") or []) if finished else [],
        "status": "finished" if finished else "error",
        "error_message": message,
    }


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def run_forever(
    store: Store, settings: WebhookSettings | None = None, stop: threading.Event | None = None
) -> None:
    """Run a dispatcher until `stop` is set (or forever)."""
    Dispatcher(store, settings).run(stop or threading.Event())


@contextlib.contextmanager
def background(
    store_url: str, store: Store | None = None, *, enabled: bool = True
) -> Iterator[None]:
    """Run a dispatcher beside a worker for the duration of the block (`conveyor worker`/`up`).

    A separate process (`conveyor webhooks run`), so following the event feed never competes
    with the supervisor for the GIL; restarted (and logged) if it dies, it stops with the
    block and exits by itself if its parent dies. An in-memory store cannot be shared with
    another process: then a thread. Off when `CONVEYOR_WEBHOOK_DISPATCHER=0` or not `enabled`
    (`worker --burst` exits too soon to deliver anything; run `conveyor webhooks run` beside
    burst workers).
    """
    settings = WebhookSettings()
    if not settings.dispatcher or not enabled:
        yield
        return
    if store_url.startswith("memory"):
        with _thread(store if store is not None else _open(store_url), settings):
            yield
        return
    command = [sys.executable, "-m", "conveyor", "webhooks", "run", "--store", store_url,
               "--parent", str(os.getpid()), "--log-level", "warning"]  # fmt: skip
    process = SupervisedProcess(command, "webhook dispatcher", settings.timeout_s + 5)
    process.start()  # restarted if it dies, until the block ends
    try:
        yield
    finally:
        process.stop()


def _open(url: str) -> Store:
    from conveyor.store import open_store

    return open_store(url)


@contextlib.contextmanager
def _thread(store: Store, settings: WebhookSettings) -> Iterator[None]:
    dispatcher = Dispatcher(store, settings)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(stop,), daemon=True,
                              name="webhook-dispatcher")  # fmt: skip
    thread.start()
    try:
        yield
    finally:
        stop.set()
        dispatcher.wake.set()
        thread.join(timeout=settings.timeout_s + 5)


__all__: Sequence[str] = ("Dispatcher", "background", "deliveries_of", "run_forever")
