"""The Swiss AI Center service contract against a fake core engine and a real S3 (moto_server).

Real processes: `conveyor swissai serve KIND` and `conveyor worker` (which delivers the
callbacks through its webhook dispatcher), both on a temp SQLite store, stopped by PID.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from conveyor.store import open_store
from tests.integration.harness import PYTHONPATH
from tests.servers.http import free_port, serve_in_thread
from tests.servers.moto import Bucket, moto_server, s3_bucket  # noqa: F401
from tests.swissai.engine import Engine

ROOT = Path(__file__).resolve().parents[2]
SECRET = "moto-secret-key"  # the caller's S3 secret: must never be stored in clear


def wait_until(condition: Callable[[], Any], timeout: float = 30.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or condition}")


class Processes:
    """Starts conveyor processes with a shared environment; stops them all by PID."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.store_url = f"sqlite:///{tmp_path / 'conveyor.db'}"
        self.env = {**os.environ, "PYTHONPATH": PYTHONPATH, "CONVEYOR_HOME": str(tmp_path / "home"),
                    "CONVEYOR_STORE": self.store_url, **env}  # fmt: skip
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen([sys.executable, "-m", "conveyor", *args], env=self.env,
                                   stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                   start_new_session=True)  # fmt: skip
        self.running.append(process)
        return process

    def serve(self, kind: str, port: int) -> subprocess.Popen[bytes]:
        process = self.start("swissai", "serve", kind, "--port", str(port), name="serve")
        wait_until(lambda: _up(f"http://127.0.0.1:{port}/status"), what="the service to start")
        return process

    def worker(self) -> subprocess.Popen[bytes]:
        return self.start("worker", "--concurrency", "1", name="worker")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def stop_all(self) -> None:
        for process in reversed(self.running):
            self.stop(process)

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")


def _up(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture
def engine() -> Iterator[tuple[Engine, str]]:
    fake = Engine()
    with serve_in_thread(fake.app()) as url:
        yield fake, url


def environment(engine_url: str, service_url: str, **extra: str) -> dict[str, str]:
    return {
        "CONVEYOR_IMPORTS": "conveyor.kinds.examples",
        "CONVEYOR_CALLBACK_ALLOW": "127.0.0.0/8",
        "CONVEYOR_SWISSAI_ENGINE_URLS": engine_url,
        "CONVEYOR_SWISSAI_SERVICE_URL": service_url,
        "CONVEYOR_SWISSAI_PING_S": "0.3",
        "CONVEYOR_SWISSAI_RETRY_DELAY_S": "0.2",
        "CONVEYOR_WEBHOOK_POLL_S": "0.05",
        "CONVEYOR_WEBHOOK_BACKOFF_S": "0.1",
        "CONVEYOR_HEARTBEAT_S": "0.2",
        **extra,
    }


def service_task(bucket: Bucket, task_id: str, data_in: list[str], callback: str) -> dict[str, Any]:
    return {
        "s3_access_key_id": bucket.access_key,
        "s3_secret_access_key": bucket.secret_key,
        "s3_region": bucket.region,
        "s3_host": bucket.endpoint,
        "s3_bucket": bucket.name,
        "task": {
            "id": task_id,
            "data_in": data_in,
            "data_out": None,
            "status": "pending",
            "service_id": str(uuid.uuid4()),
            "pipeline_execution_id": None,
        },
        "callback_url": callback,
    }


def put(bucket: Bucket, ext: str, data: bytes) -> str:
    key = f"{uuid.uuid4()}{ext}"
    bucket.client().put_object(Bucket=bucket.name, Key=key, Body=data)
    return key


def get(bucket: Bucket, key: str) -> bytes:
    body: bytes = bucket.client().get_object(Bucket=bucket.name, Key=key)["Body"].read()
    return body


def png(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_register_compute_callback_and_sleep(
    engine: tuple[Engine, str],
    s3_bucket: Bucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake, engine_url = engine
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs = Processes(tmp_path, environment(engine_url, base))
    try:
        serve = procs.serve("image.resize", port)
        # Registration: announced (after the engine could reach /status), then pinged.
        service = wait_until(lambda: fake.by_slug("image-resize"), what="registration")
        assert service["url"] == base
        assert service["status"] == "available"
        assert [f["name"] for f in service["data_in_fields"]] == ["image", "settings"]
        assert service["data_out_fields"] == [
            {"name": "result", "type": ["image/png", "image/jpeg"], "format_hint": None}
        ]
        assert service["tags"] == [{"name": "Image Processing", "acronym": "IP"}]
        assert service["has_ai"] is False
        wait_until(lambda: fake.count("POST", "/services/image-resize/ping") >= 2, what="pings")

        image = put(s3_bucket, ".png", png((64, 48)))
        settings = put(s3_bucket, ".json", json.dumps({"width": 16}).encode())
        empty = put(s3_bucket, ".json", b"{}")
        ok_id, bad_id, half_id, short_id = (str(uuid.uuid4()) for _ in range(4))
        tasks = {
            ok_id: [image, settings],
            bad_id: [put(s3_bucket, ".txt", b"not an image"), settings],
            half_id: [image, empty],
            short_id: [image],  # the engine always sends every field: a short list is refused
        }
        for task_id, data_in in tasks.items():
            body = service_task(s3_bucket, task_id, data_in, f"{engine_url}/tasks/{task_id}")
            answer = httpx.post(f"{base}/compute", json=body, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"status": "Task added to the queue"}
        status = httpx.get(f"{base}/tasks/{ok_id}/status", timeout=10)
        assert status.json() == {"status": "pending"}  # no worker yet
        unknown = httpx.get(f"{base}/tasks/{uuid.uuid4()}/status", timeout=10)
        assert unknown.status_code == 404
        assert unknown.json()["detail"].startswith("Task ")

        procs.worker()
        wait_until(lambda: len(fake.callbacks) == 4, what="four callbacks")
        assert fake.rejected == {}, "the engine took every callback"

        (done,) = fake.callbacks[ok_id]
        assert done["status"] == "finished"
        assert done["error_message"] is None
        assert done["service"] == "image-resize"
        (key,) = done["data_out"]
        assert key.endswith(".png") and uuid.UUID(key.removesuffix(".png"))
        with Image.open(io.BytesIO(get(s3_bucket, key))) as result:
            assert (result.format, result.size) == ("PNG", (16, 12))
        (half,) = fake.callbacks[half_id]
        with Image.open(io.BytesIO(get(s3_bucket, half["data_out"][0]))) as result:
            assert result.size == (32, 24)  # no settings: half the size

        (short,) = fake.callbacks[short_id]
        assert short["status"] == "error"
        assert "takes one per data_in field" in short["error_message"]

        (bad,) = fake.callbacks[bad_id]
        assert bad["status"] == "error"
        assert bad["data_out"] == []  # the engine's TaskUpdate requires a list
        assert "Wrong file extension for image" in bad["error_message"]
        assert "text/plain" in bad["error_message"]

        for task_id, expected in ((ok_id, "finished"), (bad_id, "error")):
            got = httpx.get(f"{base}/tasks/{task_id}/status", timeout=10).json()
            assert got == {"status": expected}

        # The statuses went pending → fetching → processing → saving in the job's log.
        store = open_store(procs.store_url)
        try:
            job_id = store.get_record("swissai_tasks", ok_id)["job_id"]  # type: ignore[index]
            lines = [e.data["line"] for e in store.events(job_id) if e.type == "log"]
            assert [x for x in lines if x.startswith("swissai status")] == [
                "swissai status: fetching",
                "swissai status: processing",
                "swissai status: saving",
            ]
            job = store.get(job_id)
            assert job.input["s3"]["credentials"] != SECRET
            assert SECRET not in json.dumps(job.input)
        finally:
            store.close()

        procs.stop(serve)  # shutdown: the engine's next check finds it sleeping, not unavailable
        fake.check_availability()
        assert fake.by_slug("image-resize")["status"] == "sleeping"  # type: ignore[index]
    finally:
        procs.stop_all()
    # Credentials never reach the store or the logs in clear.
    for path in tmp_path.glob("conveyor.db*"):
        assert SECRET.encode() not in path.read_bytes()
    assert SECRET not in procs.log("serve") + procs.log("worker")


def test_available_from_the_announcement(engine: tuple[Engine, str], tmp_path: Path) -> None:
    """The engine's availability check (every 30 s) must never find a new service without a
    heartbeat (it would show it `sleeping`), even with the default 20 s between pings."""
    fake, engine_url = engine
    port = free_port()
    env = environment(engine_url, f"http://127.0.0.1:{port}", CONVEYOR_SWISSAI_PING_S="20")
    procs = Processes(tmp_path, env)
    try:
        procs.serve("text.stats", port)
        wait_until(lambda: fake.count("POST", "/services/text-stats/ping") >= 1, timeout=10,
                   what="a ping right after the announcement")  # fmt: skip
        assert fake.count("POST", "/services") == 1
        fake.check_availability()
        assert fake.by_slug("text-stats")["status"] == "available"  # type: ignore[index]
    finally:
        procs.stop_all()
    fake.check_availability()
    assert fake.by_slug("text-stats")["status"] == "sleeping"  # type: ignore[index]


def test_reregistration_after_409_and_queue_full(
    engine: tuple[Engine, str],
    s3_bucket: Bucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    fake, engine_url = engine
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    old_id = str(uuid.uuid4())
    fake.services[old_id] = {"id": old_id, "slug": "text-stats", "url": "http://old:1",
                             "status": "sleeping", "name": "old"}  # fmt: skip
    procs = Processes(tmp_path, environment(engine_url, base, CONVEYOR_SWISSAI_MAX_TASKS="2"))
    try:
        procs.serve("text.stats", port)
        wait_until(lambda: fake.count("PATCH", f"/services/{old_id}") >= 1, what="PATCH")
        assert fake.count("GET", "/services/slug/text-stats") >= 1
        updated = fake.services[old_id]
        assert (updated["url"], updated["status"], updated["name"]) == (
            base,
            "available",
            "Text statistics",
        )
        assert len(fake.services) == 1, "the 409 was resolved by updating, not duplicating"

        key = put(s3_bucket, ".txt", b"a b\n")
        answers = []
        for _ in range(3):
            task_id = str(uuid.uuid4())
            body = service_task(s3_bucket, task_id, [key], f"{engine_url}/tasks/{task_id}")
            answers.append(httpx.post(f"{base}/compute", json=body, timeout=10))
        assert [a.status_code for a in answers] == [200, 200, 503]
        assert answers[2].json() == {"detail": "Queue is full"}

        bad = httpx.post(f"{base}/compute", json={"task": {}}, timeout=10)
        assert bad.status_code == 422
        assert isinstance(bad.json()["detail"], list)
        metadata = service_task(s3_bucket, str(uuid.uuid4()), [key], "http://169.254.169.254/x")
        refused = httpx.post(f"{base}/compute", json=metadata, timeout=10)
        assert refused.status_code in (422, 503)  # guard or full queue: never accepted
        assert httpx.get(f"{base}/", timeout=10, follow_redirects=False).status_code == 301
    finally:
        procs.stop_all()


def test_status_through_the_lifecycle_on_the_main_api(
    engine: tuple[Engine, str],
    s3_bucket: Bucket,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`/swissai/{kind}/…` on the main API; statuses observed while the kind is held."""
    from conveyor.api.app import create_app
    from conveyor.settings import Settings

    fake, engine_url = engine
    gate = tmp_path / "gate"
    env = environment(engine_url, "", CONVEYOR_IMPORTS="tests.swissai.gate_kind",
                      GATE_FILE=str(gate), CONVEYOR_SWISSAI_ENGINE_URLS="")  # fmt: skip
    procs = Processes(tmp_path, env)
    for name, value in procs.env.items():
        if name.startswith("CONVEYOR_"):
            monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path / "home", store=procs.store_url,
                        imports="tests.swissai.gate_kind")  # fmt: skip
    try:
        with serve_in_thread(create_app(settings)) as api:
            root = f"{api}/swissai/test.gate"
            assert httpx.get(f"{root}/status", timeout=10).json() == {
                "status": "Service is available"
            }
            assert httpx.get(f"{api}/swissai/nope/status", timeout=10).status_code == 404
            unknown = httpx.get(f"{root}/no/such/route", timeout=10)  # FastAPI's own shape
            assert (unknown.status_code, unknown.json()) == (404, {"detail": "Not Found"})
            wrong = httpx.delete(f"{root}/compute", timeout=10)
            assert (wrong.status_code, wrong.json()) == (405, {"detail": "Method Not Allowed"})
            task_id = str(uuid.uuid4())
            key = put(s3_bucket, ".txt", b"hello swiss ai\n")
            body = service_task(s3_bucket, task_id, [key], f"{engine_url}/tasks/{task_id}")
            assert httpx.post(f"{root}/compute", json=body, timeout=10).status_code == 200
            seen: list[str] = []

            def observe(target: str) -> bool:
                status = httpx.get(f"{root}/tasks/{task_id}/status", timeout=10).json()["status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                return status == target

            observe("pending")
            procs.worker()
            wait_until(lambda: observe("processing"), what="processing")
            gate.touch()
            wait_until(lambda: observe("finished"), what="finished")
            wait_until(lambda: task_id in fake.callbacks, what="the callback")
        order = ["pending", "fetching", "processing", "saving", "finished"]
        assert seen[0] == "pending" and "processing" in seen and seen[-1] == "finished"
        assert [order.index(s) for s in seen] == sorted(order.index(s) for s in seen)
        (update,) = fake.callbacks[task_id]
        assert update["status"] == "finished"
        assert get(s3_bucket, update["data_out"][0]) == b"HELLO SWISS AI\n"
        assert update["data_out"][0].endswith(".txt")
    finally:
        procs.stop_all()


def test_the_docs_example_service(
    engine: tuple[Engine, str],
    s3_bucket: Bucket,  # noqa: F811
    tmp_path: Path,
) -> None:
    """examples/swissai_keywords.py (shown in docs/swissai.md) behind a stand-alone service."""
    fake, engine_url = engine
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = environment(engine_url, base, CONVEYOR_IMPORTS="examples.swissai_keywords")
    procs = Processes(tmp_path, env)
    try:
        procs.serve("examples.keywords", port)
        wait_until(lambda: fake.by_slug("keywords"), what="registration")
        texts = {
            str(uuid.uuid4()): "The cat and the dog. The cat sat on the mat; a dog barked.",
            str(uuid.uuid4()): "Queues, queues and more queues",
            str(uuid.uuid4()): b"\xff\xfe not utf-8",
        }
        for task_id, text in texts.items():
            data = text.encode() if isinstance(text, str) else text
            body = service_task(s3_bucket, task_id, [put(s3_bucket, ".txt", data)],
                                f"{engine_url}/tasks/{task_id}")  # fmt: skip
            assert httpx.post(f"{base}/compute", json=body, timeout=10).status_code == 200
        procs.worker()
        wait_until(lambda: len(fake.callbacks) == 3, what="three callbacks")
        first, second, bad = ([*fake.callbacks[t]] for t in texts)
        keys, summary = first[0]["data_out"]
        assert keys.endswith(".csv") and summary.endswith(".json")
        assert get(s3_bucket, keys).decode().splitlines()[:3] == ["word,count", "cat,2", "dog,2"]
        assert json.loads(get(s3_bucket, summary)) == {
            "words": 14, "keywords": ["cat", "dog", "sat", "mat", "barked"]
        }  # fmt: skip
        assert second[0]["status"] == "finished"
        assert bad[0]["status"] == "error"
        assert bad[0]["error_message"] == "the text is not UTF-8"
        store = open_store(procs.store_url)
        try:
            jobs = [store.get(store.get_record("swissai_tasks", t)["job_id"])  # type: ignore[index]
                    for t in list(texts)[:2]]  # fmt: skip
        finally:
            store.close()
        loaded = {job.result["result"]["model_loaded_at"] for job in jobs}  # type: ignore[index]
        assert len(loaded) == 1, "one worker child loaded the model once for both tasks"
    finally:
        procs.stop_all()
