"""Tracing inside one process (an in-memory exporter): webhook deliveries join the job's trace,
an idempotent retry from another trace is the same request, and with tracing off nothing of
OpenTelemetry's SDK is loaded."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.store import Store, open_store
from conveyor.store.base import JobSpec
from conveyor.telemetry import tracing
from tests.deploy.tools import loud_importorskip
from tests.integration.harness import ROOT, wait_for
from tests.servers.http import serve_in_thread

loud_importorskip("opentelemetry.sdk", "the otel extra (opentelemetry-sdk)")
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)

from tests.telemetry.collector import Downstream  # noqa: E402

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure(exporter)
    try:
        yield exporter
    finally:
        tracing.disable()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'conveyor.db'}")
    yield opened
    opened.close()


def test_each_webhook_attempt_is_a_span_in_the_jobs_trace(
    exported: InMemorySpanExporter, store: Store
) -> None:
    from conveyor.webhooks.config import WebhookSettings
    from conveyor.webhooks.dispatcher import Dispatcher, deliveries_of
    from conveyor.webhooks.signing import generate_secret
    from conveyor.webhooks.ssrf import CallbackPolicy

    receiver = Downstream()
    with serve_in_thread(receiver.app()) as base:
        (job,) = store.enqueue([JobSpec(
            id=uuid7(), kind="noop", queue="default", input={}, run_at=store.now(),
            tags=(f"traceparent=00-{TRACE}-{SPAN}-01",), webhook={"url": f"{base}/hook"},
        )])  # fmt: skip
        secret = generate_secret()
        dispatcher = Dispatcher(store, WebhookSettings(secrets=secret, timeout_s=5),
                                CallbackPolicy(["127.0.0.0/8"]))  # fmt: skip

        def delivered() -> bool:
            dispatcher.step()
            return [d["status"] for d in deliveries_of(store, job.id)] == ["delivered"]

        try:
            wait_for(delivered, what="the job.queued webhook delivered")
        finally:
            dispatcher.close()
    spans: tuple[ReadableSpan, ...] = exported.get_finished_spans()
    (hook,) = [s for s in spans if s.name == "conveyor.webhook job.queued"]
    assert hook.context is not None and hook.parent is not None
    assert f"{hook.context.trace_id:032x}" == TRACE and f"{hook.parent.span_id:016x}" == SPAN
    assert hook.attributes is not None and hook.attributes["http.response.status_code"] == 200
    assert receiver.seen == [f"00-{TRACE}-{hook.context.span_id:016x}-01"]


def test_a_retried_submit_from_another_trace_is_the_same_request(
    exported: InMemorySpanExporter, store: Store, tmp_path: Path
) -> None:
    from conveyor.api.app import create_app
    from conveyor.kinds.registry import import_kinds
    from conveyor.settings import Settings

    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    settings = Settings(home=tmp_path, store="memory://", storage=f"file://{tmp_path / 'f'}")
    body = {"kind": "noop"}
    with serve_in_thread(create_app(settings, store=store)) as url:
        headers = [{"Idempotency-Key": "order-7", "traceparent": f"00-{trace}-{SPAN}-01"}
                   for trace in (TRACE, "11111111111111111111111111111111")]  # fmt: skip
        answers = [httpx.post(f"{url}/v1/jobs", json=body, headers=h) for h in headers]
    assert [a.status_code for a in answers] == [201, 200], answers[1].text
    assert answers[0].json()["id"] == answers[1].json()["id"]
    posts = [s for s in exported.get_finished_spans() if s.name == "POST /v1/jobs"]
    assert {f"{s.context.trace_id:032x}" for s in posts if s.context} == {
        TRACE, "11111111111111111111111111111111",
    }  # fmt: skip


def test_unknown_exporters_are_refused_and_none_or_disabled_means_off() -> None:
    assert tracing.wanted_exporters({}) == []
    assert tracing.wanted_exporters({"OTEL_TRACES_EXPORTER": "none"}) == []
    assert tracing.wanted_exporters({"OTEL_TRACES_EXPORTER": "otlp, console"}) == [
        "otlp", "console",
    ]  # fmt: skip
    disabled = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}
    assert tracing.wanted_exporters(disabled) == []
    with pytest.raises(errors.ConfigurationError, match="zipkin"):
        tracing.wanted_exporters({"OTEL_TRACES_EXPORTER": "zipkin"})


def test_tracing_off_loads_no_opentelemetry_sdk() -> None:
    """Off by default: the API, the worker and the dispatcher import nothing of the SDK."""
    code = (
        "import sys\n"
        "from conveyor.api.app import create_app\n"
        "from conveyor.worker.supervisor import Supervisor\n"
        "from conveyor.webhooks.dispatcher import Dispatcher\n"
        "from conveyor.telemetry import tracing\n"
        "create_app()\n"
        "assert not tracing.configure()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
