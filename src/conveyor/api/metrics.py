"""Prometheus metrics: HTTP requests, queues, and job timings read from the event feed.

Job counters and histograms are computed at scrape time by reading the store's event feed from
where the last scrape stopped, so they cover every process that works on the store (not just
this API), cost nothing between scrapes, and survive without any per-request bookkeeping.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor import errors
from conveyor.models import JobEvent, JobState
from conveyor.store import Store
from conveyor.store.base import jobs_by_id

FINAL = {"succeeded", "failed", "cancelled"}
TIME_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600)
MAX_EVENTS_PER_SCRAPE = 50_000


class QueueCollector(Collector):
    """Queue depth by state, oldest waiting age, live workers (in all and per queue), the
    webhook backlog and whether the store answered: read from the store at scrape."""

    def __init__(self) -> None:
        self.store: Store | None = None

    def collect(self) -> Iterator[Metric]:
        if self.store is None:
            return
        up = GaugeMetricFamily("conveyor_store_up", "1 if the store answered this scrape.")
        try:
            found = list(self._from_store(self.store))
        except errors.StoreUnavailableError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield from (*found, up)

    def _from_store(self, store: Store) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("conveyor_queue_jobs", "Jobs per queue and state.",
                                 labels=["queue", "state"])  # fmt: skip
        age = GaugeMetricFamily("conveyor_queue_oldest_age_seconds",
                                "Age of the oldest queued job.", labels=["queue"])  # fmt: skip
        stats = store.queue_stats()
        for s in stats:
            for state in JobState:
                jobs.add_metric([s.name, state], getattr(s, state.value))
            age.add_metric([s.name], s.oldest_queued_age_s or 0.0)
        live = [w for w in store.workers() if w.state != "stopped"]
        workers = GaugeMetricFamily("conveyor_workers", "Live worker supervisors.")
        workers.add_metric([], len(live))
        serving = GaugeMetricFamily("conveyor_queue_workers",
                                    "Live worker supervisors serving each queue (0: none).",
                                    labels=["queue"])  # fmt: skip
        per_queue = Tally(q for w in live for q in w.queues)
        for name in sorted({s.name for s in stats} | set(per_queue)):
            serving.add_metric([name], per_queue.get(name, 0))
        yield from (jobs, age, workers, serving, *webhook_backlog(store))


def webhook_backlog(store: Store) -> Iterator[Metric]:
    """Webhook messages not yet delivered (or given up), and how long the oldest has waited."""
    from conveyor.webhooks.dispatcher import PENDING

    pending = store.list_records(PENDING)
    count = GaugeMetricFamily("conveyor_webhook_pending", "Webhook messages waiting to be sent.")
    count.add_metric([], len(pending))
    oldest = min((float(v.get("created_at", 0)) for _, v in pending), default=None)
    age = GaugeMetricFamily("conveyor_webhook_oldest_pending_age_seconds",
                            "Age of the oldest webhook message still pending.")  # fmt: skip
    age.add_metric([], 0.0 if oldest is None else max(0.0, store.now() - oldest))
    yield from (count, age)


class Metrics:
    """One registry per app; `render()` produces the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.queues = QueueCollector()
        self.registry.register(self.queues)
        self.requests = Counter("conveyor_http_requests", "HTTP requests.",
                                ["method", "route", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("conveyor_http_request_duration_seconds",
                                 "HTTP request latency.", ["method", "route"],
                                 buckets=TIME_BUCKETS, registry=self.registry)  # fmt: skip
        self.transitions = Counter("conveyor_job_transitions", "Jobs entering a state, by kind.",
                                   ["kind", "state"], registry=self.registry)  # fmt: skip
        self.duration = Histogram("conveyor_job_duration_seconds",
                                  "Start to finish of finished jobs.", ["kind", "state"],
                                  buckets=TIME_BUCKETS, registry=self.registry)  # fmt: skip
        self.wait = Histogram("conveyor_job_wait_seconds", "Due (run_at) to started.", ["kind"],
                              buckets=TIME_BUCKETS, registry=self.registry)  # fmt: skip
        self.failures = Counter("conveyor_job_failures", "Jobs that failed for good, by reason.",
                                ["kind", "reason"], registry=self.registry)  # fmt: skip
        self._cursor = 0
        self._lock = threading.Lock()

    def render(self, store: Store) -> bytes:
        """Catch up with the store's feed, then the exposition text."""
        with self._lock:
            self.queues.store = store
            # A store outage shows as conveyor_store_up 0 (the collector), not a failed scrape.
            with contextlib.suppress(errors.StoreUnavailableError):
                self._read_feed(store)
        return generate_latest(self.registry)

    def _read_feed(self, store: Store) -> None:
        read = 0
        while read < MAX_EVENTS_PER_SCRAPE:
            events = store.feed(self._cursor, 1000)
            if not events:
                return
            self._account(store, [e for e in events if e.type == "state"])
            self._cursor = events[-1].seq
            read += len(events)

    def _account(self, store: Store, events: list[JobEvent]) -> None:
        jobs = jobs_by_id(store, (e.job_id for e in events))
        for event in events:
            job, state = jobs.get(event.job_id), str(event.data.get("state", ""))
            if job is None or event.data.get("cancel_requested"):
                continue
            self.transitions.labels(job.kind, state).inc()
            if state == "running" and job.started_at:
                self.wait.labels(job.kind).observe(
                    max(0.0, (job.started_at - job.run_at).total_seconds())
                )
            elif state in FINAL and job.started_at and job.finished_at:
                self.duration.labels(job.kind, state).observe(
                    max(0.0, (job.finished_at - job.started_at).total_seconds())
                )
            if state == "failed":
                reason = job.error.reason if job.error else "unknown"
                self.failures.labels(job.kind, reason or "unknown").inc()


class MetricsMiddleware:
    """Counts requests and their latency by route template (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope.get("method", "")
            self.metrics.requests.labels(method, path, str(status)).inc()
            self.metrics.latency.labels(method, path).observe(time.perf_counter() - start)
