"""Hooks for worker processes: the child's job runner, wrapped only when something is on.

When neither tracing nor JSON logs are on, `wrap_run` returns the runner untouched, so the
child's per-job path is exactly what it was.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from conveyor.telemetry import logs, tracing

Runner = Callable[[dict[str, Any]], dict[str, Any]]
#: Set by the supervisor before it spawns children, so their log lines and spans name it.
WORKER_ENV = "CONVEYOR_WORKER_ID"


def worker_id() -> str:
    return os.environ.get(WORKER_ENV, f"pid:{os.getppid()}")


def wrap_run(run: Runner) -> Runner:
    """The child's `run(message)`, traced and/or with the job's fields on its log lines."""
    worker = worker_id()
    if tracing.ENABLED:
        from conveyor.telemetry import spans

        run = spans.traced_run(run, worker)
    if logs.wanted() == "json":
        run = _with_job_fields(run, worker)
    return run


def _with_job_fields(run: Runner, worker: str) -> Runner:
    def run_logged(message: dict[str, Any]) -> dict[str, Any]:
        fields = {"job_id": message["id"], "kind": message["kind"],
                  "attempt": message["attempt"], "worker": worker}  # fmt: skip
        trace = message.get("trace")
        if trace:
            parts = str(trace.get("tp", "")).split("-")
            if len(parts) == 4:
                fields["trace_id"] = parts[1]
        token = logs.current_job.set(fields)
        try:
            return run(message)
        finally:
            logs.current_job.reset(token)

    return run_logged
