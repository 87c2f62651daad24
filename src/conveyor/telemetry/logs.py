"""Log lines as JSON objects (`--log-format json`, `CONVEYOR_LOG_FORMAT=json`), one per line.

Every line has `ts`, `level`, `logger` and `message`; a line that concerns a job also has
`job_id`, `kind`, `attempt`, `worker` and `trace_id` (when the job is traced). Conveyor's own
lines pass them with `extra=job_fields(...)`; lines a handler logs while it runs get them from
the job the child process is running (`current_job`). Inside a traced span, lines carry its
`trace_id` and `span_id` too. The terminal (text) format is unchanged.
"""

from __future__ import annotations

import logging
import logging.config
import os
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import orjson

from conveyor.telemetry import tracing

if TYPE_CHECKING:
    from conveyor.models import Job

LogFormat = Literal["text", "json"]
ENV = "CONVEYOR_LOG_FORMAT"
JOB_FIELDS = ("job_id", "kind", "attempt", "worker", "trace_id")
#: The job the current (child) thread is running: its fields go on every line logged meanwhile.
current_job: ContextVar[dict[str, Any] | None] = ContextVar("conveyor_job", default=None)


def job_fields(job: Job, worker: str | None = None) -> dict[str, Any]:
    """`extra=` for a log call about `job` (ignored by the text format)."""
    fields: dict[str, Any] = {"job_id": job.id, "kind": job.kind, "attempt": job.attempt}
    if worker:
        fields["worker"] = worker
    trace_id = tracing.trace_id_of(job.tags)
    if trace_id:
        fields["trace_id"] = trace_id
    return fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = current_job.get()
        if job:
            line.update(job)
        for name in JOB_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value
        if tracing.ENABLED and "trace_id" not in line:
            line.update(_span_ids())
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = "".join(traceback.format_exception(*record.exc_info))
        return orjson.dumps(line, default=str).decode()


def _span_ids() -> dict[str, str]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def dict_config(level: str | int) -> dict[str, Any]:
    """A `logging.config.dictConfig` (also uvicorn's `log_config`): every logger, uvicorn's
    included, through one JSON handler on stderr."""
    level = level.upper() if isinstance(level, str) else logging.getLevelName(level)
    own = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: own for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }  # fmt: skip


def use_json(level: str | int) -> None:
    """Log JSON lines from now on, and tell child processes (spawned later: they inherit the
    environment) to do the same."""
    os.environ[ENV] = "json"
    logging.config.dictConfig(dict_config(level))


def wanted() -> LogFormat:
    """The format the environment asks for (`CONVEYOR_LOG_FORMAT`), text by default."""
    return "json" if os.environ.get(ENV, "").strip().lower() == "json" else "text"


def setup_child(level: int = logging.WARNING) -> None:
    """A worker child's logging: JSON if its supervisor's is, else the plain default."""
    if wanted() == "json":
        use_json(level)
    else:
        logging.basicConfig(level=level)
