"""A real OTLP/HTTP trace receiver for tests (what an OpenTelemetry Collector accepts), and a
downstream HTTP service that records the `traceparent` each request carried."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: int
    status: int  # 0 unset, 1 ok, 2 error
    events: list[str]
    attributes: dict[str, Any]
    service: str
    links: list[str]


def _value(v: Any) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    return getattr(v, which) if which else None


@dataclass
class Collector:
    spans: list[Span] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            message = ExportTraceServiceRequest.FromString(await request.body())
            received = []
            for rs in message.resource_spans:
                attrs = {a.key: _value(a.value) for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        received.append(Span(
                            name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                            parent_id=s.parent_span_id.hex(), kind=s.kind, status=s.status.code,
                            events=[e.name for e in s.events],
                            attributes={a.key: _value(a.value) for a in s.attributes},
                            service=str(attrs.get("service.name")),
                            links=[link.trace_id.hex() for link in s.links],
                        ))  # fmt: skip
            with self.lock:
                self.spans.extend(received)
            return Response(
                ExportTraceServiceResponse().SerializeToString(),
                media_type="application/x-protobuf",
            )

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])

    def in_trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@dataclass
class Downstream:
    """Answers 200 and remembers each request's traceparent header."""

    seen: list[str] = field(default_factory=list)

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            self.seen.append(request.headers.get("traceparent", ""))
            return Response("ok")

        return Starlette(routes=[Route("/{path:path}", echo, methods=["GET", "POST"])])
