"""`conveyor render-daemon`: the pull model through the v1beta2 HTTP API."""

from __future__ import annotations

import base64
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.kinds.render import RenderTask
from conveyor.kinds.render.daemon import DaemonConfig, RenderDaemon
from conveyor.kinds.render.document import Document
from conveyor.taskqueue.client import TaskQueueClient
from tests.api.conftest import ApiServer
from tests.integration.harness import ROOT, wait_for
from tests.servers.http import free_port, serve_in_thread
from tests.taskqueue.conftest import MAX_DOCUMENT_BYTES, check_pdf, insert, lease, render_task
from tests.taskqueue.test_render_flow import BAD_INPUTS, consume_results


@pytest.fixture
def client(api: ApiServer, queue: str) -> Iterator[TaskQueueClient]:
    http = TaskQueueClient(api.url, "proj", queue)
    try:
        yield http
    finally:
        http.close()


def test_daemon_renders_replies_and_keeps_going(tq: Any, queue: str, api: ApiServer) -> None:
    small = insert(tq, queue, render_task("parity_cards", "letter", back_colour="red"), tag="task")
    big = insert(tq, queue, render_task("modulo_clock", copies=10), tag="task")
    bad = {name: insert(tq, queue, payload, tag="task") for name, (payload, _) in
           BAD_INPUTS.items()}  # fmt: skip
    other = insert(tq, queue, {"not": "for the daemon"}, tag="other")
    done = subprocess.run(
        [sys.executable, "-m", "conveyor", "render-daemon", "--url", api.url, "--project",
         "proj", "--queue", queue, "--tasks", "3", "--sleep", "0.2", "--burst",
         "--max-loops", "50", "--max-document-bytes", str(MAX_DOCUMENT_BYTES)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Creating layout" not in done.stderr, "no WeasyPrint log line per page at INFO"
    assert "leased 6 tasks" in done.stderr
    results = consume_results(tq, queue)
    assert len(results) == 6

    document = results[small["id"]]
    assert document["filename"] == "Parity Cards (6x6 - red back - letter).pdf"
    check_pdf(base64.b64decode(document["document"]), pages=2, paper="letter",
              header="Room letter 7")  # fmt: skip
    link = results[big["id"]]
    assert (link["kind"], link["success"]) == ("result#link", True)
    assert link["url"].startswith(f"{api.url}/v1/jobs/{big['id']}/files/")
    download = httpx.get(link["url"])
    assert download.headers["content-type"] == "application/pdf"  # opens as a PDF
    check_pdf(download.content, pages=10, paper="a4", header="Room a4 7")
    for name, (_, named) in BAD_INPUTS.items():
        failure = results[bad[name]["id"]]
        assert (failure["kind"], failure["success"]) == ("result#document", False)
        assert named in failure["error"], (name, failure["error"])
    # Only `task` tasks were taken; the rest of the queue is untouched.
    left = tq.tasks().list(project="proj", taskqueue=queue).execute()["items"]
    assert [t["id"] for t in left] == [other["id"]]


def test_daemon_gives_up_after_the_retry_limit(
    tq: Any, queue: str, client: TaskQueueClient
) -> None:
    task = insert(tq, queue, render_task("binary_cards"), tag="task")
    for leases in range(1, 4):  # three leases that run out, as if a daemon died each time
        assert [t["id"] for t in lease(tq, queue, n=1, secs=1)] == [task["id"]]
        wait_for(lambda n=leases: tq.tasks().get(project="proj", taskqueue=queue,
                                                   task=task["id"]).execute()["retry_count"] == n
                 and _leasable(tq, queue, task["id"]), timeout=10, interval=0.1)  # fmt: skip
    daemon = RenderDaemon(client, DaemonConfig(tasks=5, lease_s=60, sleep_s=0.1, retry_limit=3))
    wait_for(lambda: daemon.run_once(), timeout=10, interval=0.1)
    assert daemon.stats.failed == 1
    results = consume_results(tq, queue)
    assert results[task["id"]]["success"] is False
    assert "gave up after 3 retries" in results[task["id"]]["error"]


def _leasable(tq: Any, queue: str, task_id: str) -> bool:
    got = tq.tasks().get(project="proj", taskqueue=queue, task=task_id).execute()
    return bool(got["leaseTimestamp"] <= time.time() * 1_000_000)


def test_daemon_shortens_the_lease_on_an_unexpected_error(
    tq: Any, queue: str, client: TaskQueueClient
) -> None:
    task = insert(tq, queue, render_task("binary_cards"), tag="task")

    def broken(_: RenderTask) -> Document:
        raise RuntimeError("the renderer crashed")

    daemon = RenderDaemon(client, DaemonConfig(tasks=5, lease_s=600), render=broken)
    assert daemon.run_once() == 1
    assert daemon.stats.retried == 1
    got = tq.tasks().get(project="proj", taskqueue=queue, task=task["id"]).execute()
    assert got["leaseTimestamp"] <= (time.time() + 1.5) * 1_000_000  # 1 s, not 600 s
    assert consume_results(tq, queue) == {}  # no result: it will be retried
    retried = wait_for(lambda: lease(tq, queue, n=1, groupByTag=True, tag="task"), timeout=10,
                       interval=0.1)  # fmt: skip
    assert retried[0]["id"] == task["id"]
    assert retried[0]["retry_count"] == 1


def test_daemon_stops_a_render_that_runs_too_long(
    tq: Any, queue: str, client: TaskQueueClient
) -> None:
    insert(tq, queue, render_task("binary_cards"), tag="task")

    def stuck(_: RenderTask) -> Document:
        time.sleep(60)  # a render that hangs; the time limit must interrupt it
        raise AssertionError("not interrupted")

    config = DaemonConfig(tasks=1, lease_s=600, task_seconds=0.3)
    daemon = RenderDaemon(client, config, render=stuck)
    started = time.monotonic()
    assert daemon.run_once() == 1
    assert time.monotonic() - started < 10
    assert daemon.stats.retried == 1
    assert config.budget(2) == pytest.approx(0.3 * (1 + 1.33 * 2))


def test_daemon_waits_out_an_api_restart(tmp_path: Path, queue: str) -> None:
    """The API is down when the daemon starts and restarts under it: the daemon keeps going."""
    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    settings = Settings(home=tmp_path, store=f"sqlite:///{tmp_path / 'conveyor.db'}")
    client = TaskQueueClient(url, "proj", queue)
    config = DaemonConfig(tasks=5, lease_s=60, sleep_s=0.05, retry_max_s=0.1)
    pdf = Document("d.pdf", "d.pdf", b"%PDF-1.4 x", 1)
    daemon = RenderDaemon(client, config, render=lambda task: pdf)
    stop = threading.Event()
    thread = threading.Thread(target=daemon.run, kwargs={"stop": stop}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: daemon.stats.unreachable >= 1, timeout=10, what="a refused connection")
        for done in (1, 2):
            with serve_in_thread(create_app(settings), port=port):
                assert thread.is_alive()
                client.insert(render_task("binary_cards"), "task")
                wait_for(lambda n=done: daemon.stats.succeeded == n, timeout=20,  # type: ignore[misc]
                         what=f"render {done}")  # fmt: skip
                outages = daemon.stats.unreachable
            # The API is gone again: the daemon notices, waits, and is still there.
            wait_for(lambda n=outages: daemon.stats.unreachable > n, timeout=10)  # type: ignore[misc]
            assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=10)
        client.close()
    assert not thread.is_alive()
