"""Traces as an operator sees them in their backend: real `conveyor api` and `conveyor worker`
processes exporting OTLP/HTTP to a receiver, one trace from the client's submit to the handler's
own HTTP call; retries, timeouts and worker deaths on the attempts' spans."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.deploy.tools import loud_importorskip
from tests.integration.harness import ROOT, wait_for, worker_env
from tests.servers.http import free_port, serve_in_thread

loud_importorskip("opentelemetry.sdk", "the otel extra (opentelemetry-sdk)")
from tests.telemetry.collector import Collector, Downstream, Span  # noqa: E402

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SERVER, CONSUMER, PRODUCER, CLIENT = 2, 5, 4, 3  # OTLP SpanKind values


@pytest.fixture
def collector() -> Iterator[tuple[str, Collector]]:
    received = Collector()
    with serve_in_thread(received.app()) as url:
        yield url, received


def traced_env(home: Path, collector_url: str) -> dict[str, str]:
    return worker_env(
        home,
        OTEL_TRACES_EXPORTER="otlp",
        OTEL_EXPORTER_OTLP_ENDPOINT=collector_url,
        OTEL_BSP_SCHEDULE_DELAY="50",
        OTEL_SERVICE_NAME="conveyor-test",
        CONVEYOR_STORE=f"sqlite:///{home / 'conveyor.db'}",
    )


@pytest.fixture
def api(tmp_path: Path, collector: tuple[str, Collector]) -> Iterator[tuple[str, Path]]:
    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "api", "--port", str(port), "--log-level", "warning"],
        env=traced_env(home, collector[0]), cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert process.poll() is None, "the API exited"
        try:
            return httpx.get(f"{url}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, what="the API")
        yield url, home
    finally:
        process.send_signal(signal.SIGTERM)  # exits cleanly: its spans are flushed
        process.wait(timeout=30)


def submit(url: str, body: dict[str, object]) -> str:
    headers = {"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    response = httpx.post(f"{url}/v1/jobs", json=body, headers=headers)
    assert response.status_code == 201, response.text
    job = response.json()
    tag = next(t for t in job["tags"] if t.startswith("traceparent="))
    assert tag.split("-")[1] == CLIENT_TRACE  # the job carries the client's trace
    return str(job["id"])


def run_worker(home: Path, collector_url: str) -> None:
    worker = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--burst", "-c", "2", "--log-level",
         "warning"],
        env=traced_env(home, collector_url), cwd=ROOT, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr


def of_job(spans: list[Span], job_id: str, name: str) -> list[Span]:
    found = [s for s in spans if s.name == name and s.attributes.get("conveyor.job.id") == job_id]
    return sorted(found, key=lambda s: s.attributes.get("conveyor.job.attempt", 0))


def test_one_trace_from_the_clients_submit_to_the_handlers_own_http_call(
    api: tuple[str, Path], collector: tuple[str, Collector]
) -> None:
    url, home = api
    received = collector[1]
    downstream = Downstream()
    with serve_in_thread(downstream.app()) as service:
        fetch = submit(url, {"kind": "test.fetch", "input": {"url": f"{service}/prices"}})
        flaky = submit(url, {"kind": "demo.fail", "input": {"succeed_on_attempt": 2},
                             "max_attempts": 2, "backoff_s": 0})  # fmt: skip
        run_worker(home, collector[0])
        # A child that dies loses the spans it had not exported yet (the batch delay's worth):
        # the killed attempts run after the others were flushed.
        hang = submit(url, {"kind": "test.hang", "input": {"dir": str(home)}, "timeout_s": 1})
        crash = submit(url, {"kind": "demo.crash", "max_attempts": 1})
        run_worker(home, collector[0])
    # Every process exports to the receiver; the worker flushed when it exited.
    runs = {fetch: 1, flaky: 2, hang: 1, crash: 1}

    def complete() -> list[Span] | None:
        spans = received.in_trace(CLIENT_TRACE)
        attempts = {j: [s for s in spans if s.name.startswith("conveyor.run")
                        and s.attributes.get("conveyor.job.id") == j] for j in runs}  # fmt: skip
        posts = [s for s in spans if s.name == "POST /v1/jobs"]
        seen = all(len(attempts[j]) == n for j, n in runs.items()) and len(posts) == 4
        return spans if seen and any(s.kind == CLIENT for s in spans) else None

    try:
        spans = wait_for(complete, timeout=90, what="every span in the receiver")
    except AssertionError as exc:
        got = sorted((s.name, s.attributes.get("conveyor.job.id", "")) for s in received.spans)
        raise AssertionError(f"{exc}; received {got}") from None
    assert {s.service for s in spans} == {"conveyor-test"}

    # The API's request span is a child of the client's span; the enqueue is inside it.
    posts = [s for s in spans if s.name == "POST /v1/jobs"]
    assert all(s.parent_id == CLIENT_SPAN and s.kind == SERVER for s in posts)
    assert all(s.attributes["http.route"] == "/v1/jobs" for s in posts)
    post_ids = {s.span_id for s in posts}
    enqueues = [s for s in spans if s.name == "conveyor.enqueue"]
    assert len(enqueues) == 4 and all(s.parent_id in post_ids for s in enqueues)
    assert all(s.kind == PRODUCER for s in enqueues)

    # The claim and the run hang off the request that submitted the job.
    (claim,) = of_job(spans, fetch, "conveyor.claim default")
    (run,) = of_job(spans, fetch, "conveyor.run test.fetch")
    assert claim.parent_id in post_ids and run.parent_id in post_ids
    assert run.kind == CONSUMER and run.status == 1
    assert run.attributes["conveyor.job.kind"] == "test.fetch"
    assert run.attributes["conveyor.worker.id"]
    # The handler's own httpx call is a child of its attempt, and carried the trace on.
    (call,) = [s for s in spans if s.kind == CLIENT and s.parent_id == run.span_id]
    status = {k: v for k, v in call.attributes.items() if k.endswith("status_code")}
    assert list(status.values()) == [200]  # http.(response.)status_code: by semconv version
    assert downstream.seen == [f"00-{CLIENT_TRACE}-{call.span_id}-01"]

    # A retry: the first attempt failed (an error, a retry event), the second succeeded.
    first, second = of_job(spans, flaky, "conveyor.run demo.fail")
    assert first.status == 2 and first.events == ["exception", "conveyor.retry"]
    assert second.status == 1 and second.attributes["conveyor.job.attempt"] == 2

    # A timeout and a worker death: recorded by the supervisor for the killed child.
    (timed_out,) = of_job(spans, hang, "conveyor.run test.hang")
    assert timed_out.status == 2 and timed_out.events == ["timeout", "conveyor.gave_up"]
    (died,) = of_job(spans, crash, "conveyor.run demo.crash")
    assert died.status == 2 and died.events == ["worker_lost", "conveyor.gave_up"]


def test_console_exporter_prints_the_spans(tmp_path: Path) -> None:
    """`OTEL_TRACES_EXPORTER=console`: spans as JSON on stdout, for a person reading."""
    import json

    from conveyor.models import NewJob
    from conveyor.service import Service
    from conveyor.storage import open_storage
    from conveyor.store import open_store

    home = tmp_path / "home"
    store_url = f"sqlite:///{tmp_path / 'c.db'}"
    store = open_store(store_url)
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    from conveyor.kinds.registry import import_kinds

    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    tag = f"traceparent=00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    (job,) = service.submit_many([NewJob(kind="noop", tags=[tag])])
    store.close()
    env = worker_env(home, OTEL_TRACES_EXPORTER="console")
    worker = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--burst", "-c", "1", "--store", store_url,
         "--log-level", "warning"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    decoder, text, printed = json.JSONDecoder(), worker.stdout, []
    position = 0
    while (position := _skip_space(text, position)) < len(text):
        span, position = decoder.raw_decode(text, position)
        printed.append(span)
    names = {s["name"] for s in printed if s["context"]["trace_id"] == f"0x{CLIENT_TRACE}"}
    assert names == {"conveyor.claim default", "conveyor.run noop"}
    assert all(s["attributes"]["conveyor.job.id"] == job.id for s in printed)


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position
