"""The render daemon: lease `task`-tagged tasks through the v1beta2 API, render, reply.

Run by `conveyor render-daemon` (see `conveyor.cli.render_daemon`).
"""

from __future__ import annotations

import base64
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import httpx

from conveyor.kinds.render.document import Document, render_document
from conveyor.kinds.render.kind import RETRY_LIMIT
from conveyor.kinds.render.payload import RenderInputError, RenderTask, decode_payload, parse_task
from conveyor.taskqueue.client import TaskQueueClient, TaskQueueHTTPError
from conveyor.taskqueue.replies import MAX_DOCUMENT_BYTES, RESULT_TAG, base64_size, failure

log = logging.getLogger("conveyor.render_daemon")

TASK_TAG = "task"
TASK_SECONDS = 50.0  # the original's time budget per task; the lease covers the whole batch
TIME_MULT = 1.33  # each retry gets this much more time, as in the original


class RenderTimeout(Exception):
    """A render took longer than its budget."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise `RenderTimeout` after `seconds` (SIGALRM: only in the main thread)."""
    if seconds <= 0 or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: FrameType | None) -> None:
        raise RenderTimeout(f"rendering took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class DaemonConfig:
    tasks: int = 20
    lease_s: float | None = None
    sleep_s: float = 10.0
    retry_limit: int = RETRY_LIMIT
    max_document_bytes: int = MAX_DOCUMENT_BYTES
    task_seconds: float = TASK_SECONDS
    retry_max_s: float = 60.0
    """Longest pause between tries while the API is unreachable (1 s, 2 s, 4 s, ... up to it)."""

    @property
    def lease(self) -> float:
        return self.lease_s if self.lease_s is not None else self.tasks * self.task_seconds

    def budget(self, retries: int) -> float:
        """Seconds a render may take: more on each retry."""
        return self.task_seconds * (1 + TIME_MULT * retries)


@dataclass
class DaemonStats:
    leased: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    unreachable: int = 0
    """Loops that found the API unreachable or failing (5xx) and waited for it."""


def is_outage(exc: Exception) -> bool:
    """The API is restarting or away (no connection, a timeout, a 5xx): wait and try again."""
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, TaskQueueHTTPError) and exc.status >= 500


class RenderDaemon:
    """One render daemon; `render` is replaceable for tests."""

    def __init__(
        self, client: TaskQueueClient, config: DaemonConfig,
        render: Callable[[RenderTask], Document] = render_document,
    ) -> None:  # fmt: skip
        self.client, self.config, self.render = client, config, render
        self.stats = DaemonStats()

    def run(
        self, burst: bool = False, max_loops: int | None = None,
        stop: threading.Event | None = None,
    ) -> DaemonStats:  # fmt: skip
        """Lease, process, sleep until `stop` is set; with `burst`, stop once no `task` task is
        left. While the API is away (restarting) it waits, backing off, and goes on."""
        stop = stop or threading.Event()
        loops, outage = 0, 0
        while (max_loops is None or loops < max_loops) and not stop.is_set():
            loops += 1
            try:
                idle = self.run_once() == 0
                if idle and burst and not any(t.get("tag") == TASK_TAG for t in self.client.list()):
                    break
            except Exception as exc:
                if not is_outage(exc):
                    raise
                outage += 1
                self.stats.unreachable += 1
                delay = min(self.config.retry_max_s, 2.0 ** (outage - 1))
                log.warning("the Task Queue API is unavailable (%s); trying again in %g s",
                            exc, delay)  # fmt: skip
                stop.wait(delay)
                continue
            if outage:
                log.info("the Task Queue API is back")
                outage = 0
            if idle:
                stop.wait(self.config.sleep_s)
        return self.stats

    def run_once(self) -> int:
        tasks = self.client.lease(self.config.tasks, self.config.lease, TASK_TAG)
        self.stats.leased += len(tasks)
        for task in tasks:
            self.process(task)
        return len(tasks)

    def process(self, task: dict[str, Any]) -> None:
        task_id = str(task["id"])
        try:
            result = self.result_for(task)
            self.client.insert(result, RESULT_TAG)
            self.client.delete(task_id)
        except Exception:
            # Anything unexpected (a render crash, the API going away): retry in a second.
            log.exception("task %s failed; it will be retried", task_id)
            self.stats.retried += 1
            try:
                self.client.patch(task_id, 1)
            except Exception as exc:  # the lease then simply runs out
                log.warning("could not shorten the lease of task %s: %s", task_id, exc)
            return
        if result["success"]:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1

    def result_for(self, task: dict[str, Any]) -> dict[str, Any]:
        task_id = str(task["id"])
        retries = int(task.get("retry_count", 0))
        if retries >= self.config.retry_limit:
            return failure(task_id, f"gave up after {self.config.retry_limit} retries")
        try:
            render_task = parse_task(decode_payload(str(task["payloadBase64"])))
            with time_limit(self.config.budget(retries)):
                document = self.render(render_task)
        except RenderInputError as exc:
            log.warning("task %s cannot be rendered: %s", task_id, exc)
            return failure(task_id, str(exc))
        if base64_size(len(document.pdf)) > self.config.max_document_bytes:
            url = self.client.attach(task_id, document.file, document.pdf)
            return {"kind": "result#link", "success": True, "url": url,
                    "filename": document.filename, "task_id": task_id}  # fmt: skip
        return {"kind": "result#document", "success": True, "filename": document.filename,
                "document": base64.b64encode(document.pdf).decode("ascii"),
                "task_id": task_id}  # fmt: skip
