"""The spans conveyor records, with the OpenTelemetry SDK (imported only when tracing is on).

One trace per submitted job, under whatever span submitted it (an HTTP request, joined to the
client's own trace when it sent `traceparent`):

    POST /v1/jobs                     (api, SERVER)
      conveyor.enqueue                (the store write; PRODUCER)
      conveyor.claim <queue>          (worker: claim to hand-over, per job; CONSUMER)
      conveyor.run <kind>             (one per attempt, in the child process running it; events:
                                       exception, conveyor.retry, conveyor.gave_up, timeout,
                                       worker_lost, cancelled)
        GET https://...               (the handler's own httpx calls, via the httpx instrumentor)
      conveyor.webhook <event>        (each delivery attempt; CLIENT, `traceparent` sent along)

Everything here is called from hooks guarded by `tracing.ENABLED`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode

from conveyor import errors
from conveyor.models import Job, NewJob
from conveyor.telemetry.tracing import TAG, traceparent_of

_provider: TracerProvider | None = None
_tracer: trace.Tracer = trace.NoOpTracer()
SCOPE = "conveyor"


def start(names: Sequence[str], exporter: SpanExporter | None) -> None:
    """Build the tracer provider: `exporter` if given, else those named by OTEL_TRACES_EXPORTER
    (endpoint, headers, sampler, batch sizes: the standard OTEL_* variables)."""
    global _provider, _tracer
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "conveyor"}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for name in names:
            if name == "console":  # for a person reading: print each span as it ends
                provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
            else:
                provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        trace.set_tracer_provider(provider)
        _instrument_httpx()
    _provider, _tracer = provider, provider.get_tracer(SCOPE)


def _otlp_exporter() -> SpanExporter:
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise errors.ConfigurationError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed (the otel extra ships http/protobuf)"
            ) from exc
        grpc: SpanExporter = GrpcExporter()
        return grpc
    if protocol != "http/protobuf":
        raise errors.ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: conveyor exports http/protobuf or grpc"
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def _instrument_httpx() -> None:
    """Handlers' (and conveyor's) httpx calls become client spans and send `traceparent`."""
    try:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    except ImportError:
        return
    HTTPXClientInstrumentor().instrument()


def stop() -> None:
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, trace.NoOpTracer()


def flush() -> None:
    if _provider is not None:
        _provider.force_flush(5_000)


def tracer() -> trace.Tracer:
    return _tracer


# -- context carried by jobs --------------------------------------------------------------------


def parent_of(traceparent: str | None) -> otel_context.Context | None:
    """The context a W3C traceparent names (None: start a new trace)."""
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def current_traceparent() -> str | None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def stamp(jobs: Sequence[NewJob]) -> list[NewJob]:
    """Jobs carrying the current span's context in their tags (those that carry none yet)."""
    parent = current_traceparent()
    if parent is None:
        return list(jobs)
    return [
        job
        if traceparent_of(job.tags) is not None
        else job.model_copy(update={"tags": [*job.tags, TAG + parent]})
        for job in jobs
    ]


def submit(jobs: Sequence[NewJob], enqueue: Callable[[list[NewJob]], list[Job]]) -> list[Job]:
    """Enqueue inside a `conveyor.enqueue` span: under the current span, else the first job's
    context (the API's submit batcher commits other requests' jobs on its own thread, each
    already stamped with its request's context; the others' traces are linked)."""
    parents = {p for job in jobs if (p := traceparent_of(job.tags))}
    context = None
    if not trace.get_current_span().get_span_context().is_valid and jobs:
        context = parent_of(traceparent_of(jobs[0].tags))
    links = [
        Link(trace.get_current_span(ctx).get_span_context())
        for p in sorted(parents)
        if (ctx := parent_of(p)) is not None
    ]
    with _tracer.start_as_current_span(
        "conveyor.enqueue", context=context, kind=SpanKind.PRODUCER, links=links[:32],
        attributes={"messaging.system": "conveyor", "messaging.operation.type": "send",
                    "messaging.batch.message_count": len(jobs)},
    ) as span:  # fmt: skip
        created = enqueue(stamp(jobs))
        if created:
            span.set_attribute("conveyor.job.ids", [job.id for job in created[:100]])
            span.set_attribute("conveyor.job.kind", sorted({job.kind for job in created})[:10])
        return created


def _job_attributes(job: Job, worker: str) -> dict[str, Any]:
    return {
        "messaging.system": "conveyor",
        "messaging.destination.name": job.queue,
        "conveyor.job.id": job.id,
        "conveyor.job.kind": job.kind,
        "conveyor.job.attempt": job.attempt,
        "conveyor.worker.id": worker,
    }


def claimed(jobs: Sequence[Job], worker: str, sent_monotonic: float) -> None:
    """One `conveyor.claim` span per traced job: from the claim request to now."""
    started = _wall_ns(sent_monotonic)
    for job in jobs:
        parent = parent_of(traceparent_of(job.tags))
        if parent is None:
            continue
        span = _tracer.start_span(
            f"conveyor.claim {job.queue}", context=parent, kind=SpanKind.CONSUMER,
            start_time=started, attributes={**_job_attributes(job, worker),
                                            "messaging.operation.type": "receive"},
        )  # fmt: skip
        span.end()


def run_fields(job: Job) -> dict[str, Any] | None:
    """What the child needs to trace a job's attempt (None: the job carries no context)."""
    parent = traceparent_of(job.tags)
    if parent is None:
        return None
    return {"tp": parent, "max": job.max_attempts, "queue": job.queue}


def traced_run(
    run: Callable[[dict[str, Any]], dict[str, Any]], worker: str
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`run` (a child's job runner) with each traced attempt inside a `conveyor.run` span that
    is current while the handler runs, so its own spans and httpx calls join the trace."""

    def run_in_span(message: dict[str, Any]) -> dict[str, Any]:
        fields = message.get("trace")
        if not fields:
            return run(message)
        kind, attempt = message["kind"], message["attempt"]
        attributes = {
            "messaging.system": "conveyor", "messaging.operation.type": "process",
            "messaging.destination.name": fields.get("queue", ""), "conveyor.job.id":
            message["id"], "conveyor.job.kind": kind, "conveyor.job.attempt": attempt,
            "conveyor.worker.id": worker,
        }  # fmt: skip
        with _tracer.start_as_current_span(
            f"conveyor.run {kind}", context=parent_of(fields["tp"]), kind=SpanKind.CONSUMER,
            attributes=attributes, record_exception=False, set_status_on_exception=False,
        ) as span:  # fmt: skip
            outcome = run(message)
            _annotate(span, outcome, attempt, int(fields.get("max", 1)))
        return outcome

    return run_in_span


def _annotate(span: Span, outcome: dict[str, Any], attempt: int, max_attempts: int) -> None:
    state = outcome.get("outcome")
    span.set_attribute("conveyor.job.outcome", str(state))
    if state == "succeeded":
        span.set_status(Status(StatusCode.OK))
    elif state == "cancelled":
        span.add_event("cancelled")
    elif state == "failed":
        error = outcome.get("error") or {}
        span.add_event("exception", {
            "exception.type": error.get("type", ""), "exception.message": error.get("message", ""),
            "exception.stacktrace": error.get("traceback") or "",
            "conveyor.error.reason": error.get("reason", ""),
        })  # fmt: skip
        span.set_status(Status(StatusCode.ERROR, f"{error.get('type')}: {error.get('message')}"))
        _retry_event(span, bool(outcome.get("retry", True)), attempt, max_attempts)


def _retry_event(span: Span, retryable: bool, attempt: int, max_attempts: int) -> None:
    if retryable and attempt < max_attempts:
        span.add_event("conveyor.retry", {"conveyor.next_attempt": attempt + 1})
    else:
        span.add_event("conveyor.gave_up", {"conveyor.attempts": attempt})


def attempt_killed(job: Job, reason: str, since_monotonic: float, worker: str) -> None:
    """The `conveyor.run` span of an attempt whose child was killed (timeout) or died: the
    child could not end its own span, so the supervisor records the attempt."""
    parent = parent_of(traceparent_of(job.tags))
    if parent is None:
        return
    span = _tracer.start_span(
        f"conveyor.run {job.kind}", context=parent, kind=SpanKind.CONSUMER,
        start_time=_wall_ns(since_monotonic) if since_monotonic else None,
        attributes={**_job_attributes(job, worker), "messaging.operation.type": "process",
                    "conveyor.job.outcome": reason},
    )  # fmt: skip
    span.add_event(reason)
    span.set_status(Status(StatusCode.ERROR, reason))
    _retry_event(span, True, job.attempt, job.max_attempts)
    span.end()


def rescued(jobs: Sequence[Job], worker: str) -> None:
    """A `worker_lost` event (as a zero-length span) for jobs whose worker's lease expired."""
    for job in jobs:
        parent = parent_of(traceparent_of(job.tags))
        if parent is None:
            continue
        span = _tracer.start_span(
            f"conveyor.rescue {job.kind}", context=parent, kind=SpanKind.INTERNAL,
            attributes={**_job_attributes(job, worker), "conveyor.job.state": job.state.value},
        )  # fmt: skip
        span.add_event("worker_lost")
        span.end()


@contextmanager
def webhook(delivery: dict[str, Any], headers: dict[str, str]) -> Iterator[Span]:
    """A CLIENT span around one webhook delivery attempt; `headers` gain its traceparent."""
    parent = parent_of(delivery.get("traceparent"))
    with _tracer.start_as_current_span(
        f"conveyor.webhook {delivery.get('event', '')}", context=parent, kind=SpanKind.CLIENT,
        attributes={"http.request.method": delivery.get("method", "POST"),
                    "url.full": delivery.get("url", ""), "conveyor.job.id":
                    delivery.get("job_id", ""), "conveyor.webhook.id": delivery.get("id", ""),
                    "conveyor.webhook.attempt": delivery.get("attempt_count", 0) + 1},
    ) as span:  # fmt: skip
        propagate.inject(headers)
        yield span


def webhook_result(span: Span, status_code: int | None, error: str | None) -> None:
    if status_code is not None:
        span.set_attribute("http.response.status_code", status_code)
    if error or status_code is None or status_code >= 300:
        span.set_status(Status(StatusCode.ERROR, error or f"HTTP {status_code}"))


def _wall_ns(monotonic: float) -> int:
    """A monotonic-clock instant as wall-clock nanoseconds (span timestamps)."""
    return time.time_ns() - int((time.monotonic() - monotonic) * 1e9)
