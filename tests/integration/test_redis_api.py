"""A real `conveyor api` on Redis through a Redis crash (reliability-plan S8, API side).

While redis-server is down the API answers `503 store-unavailable` (problem+json, Retry-After)
within 2 s, never a 500 or a hang; after the restart an acknowledged job is still there, the
API serves again without being restarted, and a worker runs the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.store import open_store
from tests.integration.harness import start_server, start_worker, stop, wait_for
from tests.servers.redis import RedisServer

pytestmark = [pytest.mark.redis, pytest.mark.timeout(120)]
PROBLEM = "application/problem+json"


@pytest.fixture
def redis(redis_factory: Callable[..., RedisServer]) -> RedisServer:
    server = redis_factory(appendfsync="always")
    store = open_store(server.url)
    store.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    store.close()
    return server


@pytest.fixture
def api(redis: RedisServer, tmp_path: Path) -> Iterator[str]:
    home = tmp_path / "home"
    home.mkdir()
    url, process = start_server("api", redis.url, home)
    try:
        yield url
    finally:
        stop(process)
        assert "Traceback" not in (home / "api.log").read_text()


def unavailable(response: httpx.Response, took: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["type"].endswith("/store-unavailable")
    assert response.headers.get("retry-after") == "1"
    assert took < 2.0


def test_api_answers_503_while_redis_is_down_and_recovers(
    api: str, redis: RedisServer, tmp_path: Path
) -> None:
    http = httpx.Client(base_url=api, timeout=10)
    created = http.post("/v1/jobs", json={"kind": "noop"})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    redis.kill()
    for method, path, body in (
        ("GET", f"/v1/jobs/{job_id}", None),
        ("POST", "/v1/jobs", {"kind": "noop"}),
        ("GET", "/v1/jobs", None),
    ):
        started = time.monotonic()
        response = http.request(method, path, json=body)
        unavailable(response, time.monotonic() - started)

    redis.start()
    got = wait_for(lambda: (r := http.get(f"/v1/jobs/{job_id}")).status_code == 200 and r, 10)
    assert got.json()["state"] == "queued", "the acknowledged job survived the crash"
    worker = start_worker(redis.url, tmp_path / "home", "--burst", "-c", "1")
    try:
        assert worker.wait(60) == 0
    finally:
        stop(worker)
    assert http.get(f"/v1/jobs/{job_id}").json()["state"] == "succeeded"
