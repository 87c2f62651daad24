"""Whether tracing is on, and the trace context a job carries; free to import.

Tracing is off until `configure()` finds `OTEL_TRACES_EXPORTER` set (the standard OpenTelemetry
variable: `otlp`, `console`, or both comma-separated; `none` or `OTEL_SDK_DISABLED=true` keep it
off). Only then is the SDK imported (`conveyor.telemetry.spans`), so a process that does not
trace loads none of it, and every hook elsewhere is one test of `ENABLED`.

A job carries its trace context in a reserved tag, `traceparent=<W3C traceparent>`, written at
submit: tags are stored with the job by every store and come back with each claim, so the
context reaches the worker (and the webhook dispatcher) without any store change or extra read.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from conveyor import errors

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger("conveyor.telemetry")

#: True once `configure()` turned tracing on in this process.
ENABLED = False
#: Prefix of the reserved tag holding a job's W3C `traceparent`.
TAG = "traceparent="
EXPORTERS = frozenset({"otlp", "console"})


def wanted_exporters(env: Mapping[str, str]) -> list[str]:
    """The span exporters the OTEL_* variables in `env` ask for (none: tracing stays off)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    raw = env.get("OTEL_TRACES_EXPORTER", "")
    names = [name.strip().lower() for name in raw.split(",") if name.strip()]
    names = [name for name in names if name != "none"]
    unknown = sorted(set(names) - EXPORTERS)
    if unknown:
        raise errors.ConfigurationError(
            f"OTEL_TRACES_EXPORTER: unknown exporter {', '.join(unknown)} "
            f"(conveyor supports {', '.join(sorted(EXPORTERS))} and none)"
        )
    return names


def configure(exporter: SpanExporter | None = None) -> bool:
    """Turn tracing on in this process if the environment asks for it; True if it is on.

    `exporter` (tests, embedding) sends spans there instead, without touching the
    process-wide OpenTelemetry globals. Idempotent: the first call that turns tracing on wins.
    """
    global ENABLED
    if ENABLED:
        return True
    names = wanted_exporters(os.environ)
    if exporter is None and not names:
        return False
    try:
        from conveyor.telemetry import spans
    except ImportError as exc:
        log.warning("OTEL_TRACES_EXPORTER is set but the OpenTelemetry SDK is missing (%s); "
                    "tracing stays off: pip install 'conveyor[otel]'", exc)  # fmt: skip
        return False
    spans.start(names, exporter)
    ENABLED = True
    return True


def disable() -> None:
    """Flush and stop tracing (tests; a process that exits flushes by itself)."""
    global ENABLED
    if ENABLED:
        from conveyor.telemetry import spans

        spans.stop()
    ENABLED = False


def flush() -> None:
    """Export the spans still buffered (before a process ends with `os._exit`)."""
    if ENABLED:
        from conveyor.telemetry import spans

        spans.flush()


def traceparent_of(tags: Iterable[str]) -> str | None:
    """The W3C traceparent a job carries in its tags, if any."""
    for tag in tags:
        if tag.startswith(TAG):
            return tag[len(TAG) :]
    return None


def trace_id_of(tags: Iterable[str]) -> str | None:
    """The 32-hex-digit trace id of a job's traceparent (for log lines), if any."""
    parent = traceparent_of(tags)
    parts = parent.split("-") if parent else []
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
