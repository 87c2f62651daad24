"""`--log-format json`: every line a JSON object; lines about a job name it, its kind, attempt,
worker and trace, whether conveyor or the handler logged them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conveyor.kinds.registry import import_kinds
from conveyor.models import NewJob
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import open_store
from tests.integration.harness import ROOT, worker_env

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TAG = f"traceparent=00-{TRACE}-00f067aa0ba902b7-01"


def test_worker_json_lines_carry_the_jobs_fields(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'c.db'}"
    store = open_store(store_url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo", "tests.testkinds"]).infos())
    service = Service(store, open_storage(f"file://{tmp_path / 'files'}"))
    failing, saying = service.submit_many([
        NewJob(kind="demo.fail", input={"permanent": True, "message": "no such customer"},
               tags=[TAG]),
        NewJob(kind="test.say", input={"message": "hello from the handler"}),
    ])  # fmt: skip
    store.close()
    worker = subprocess.run(
        [sys.executable, "-m", "conveyor", "worker", "--burst", "-c", "1", "--store", store_url,
         "--log-format", "json"],
        env=worker_env(tmp_path / "home"), cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert worker.returncode == 0, worker.stderr
    lines = [json.loads(line) for line in worker.stderr.splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= line.keys() for line in lines)
    started = next(line for line in lines if "serving" in line["message"])
    worker_id = started["message"].split()[1]

    (failed,) = [line for line in lines if line.get("job_id") == failing.id]
    assert failed["level"] == "warning" and "no such customer" in failed["message"]
    assert failed["kind"] == "demo.fail" and failed["attempt"] == 1
    assert failed["worker"] == worker_id and failed["trace_id"] == TRACE

    # A line the handler logged itself, in the child process, names its job too.
    (said,) = [line for line in lines if line["logger"] == "tests.say"]
    assert said["message"] == "hello from the handler"
    assert said["job_id"] == saying.id and said["kind"] == "test.say"
    assert said["attempt"] == 1 and said["worker"] == worker_id
    assert "trace_id" not in said  # not traced: no trace id to give


def test_api_json_lines_only(tmp_path: Path) -> None:
    """`conveyor api --log-format json`: its own lines and uvicorn's, nothing else on stderr."""
    import signal

    import httpx

    from tests.integration.harness import wait_for
    from tests.servers.http import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "api", "--port", str(port), "--store",
         f"sqlite:///{tmp_path / 'c.db'}", "--log-format", "json"],
        env=worker_env(tmp_path / "home"), cwd=ROOT, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return process.poll() is not None  # exited: the assertions below say why

    try:
        wait_for(up, timeout=60, what="the API")
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    messages = [line["message"] for line in lines]
    assert f"conveyor API on http://127.0.0.1:{port} (docs: /docs)" in messages
    assert any(line["logger"].startswith("uvicorn") for line in lines)
