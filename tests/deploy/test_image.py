"""The image, for real: build deploy/Dockerfile with podman on a local Debian base, then run an
api container and two worker containers against a private PostgreSQL or Redis on loopback.

- 200 jobs submitted through the api container all succeed;
- `podman stop` on a worker mid-job drains it: the jobs it held finish on the other worker;
- containers run as a non-root user, on a read-only root filesystem, and their health checks
  (the image's HEALTHCHECK, run with `podman healthcheck run`) pass;
- the final image holds no compiler.

Slow (a first run builds the base image: about 3 minutes; later runs reuse it): `make
test-deploy` runs it, `make test` does not (marker `image`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.deploy.podman import Podman, build_image, ensure_base_image, missing_tools
from tests.deploy.tools import loud_skip
from tests.integration.harness import wait_for
from tests.servers.http import free_port

pytestmark = [pytest.mark.image, pytest.mark.timeout(1800)]

IMAGE = "localhost/conveyor:test"
JOBS = 200
SLEEP_S = 1.0
CONCURRENCY = 4
UID = "10001"


@pytest.fixture(scope="module")
def podman() -> Podman:
    missing = missing_tools()
    if missing:
        loud_skip(f"{', '.join(missing)} not installed (`make test-deploy` installs them)")
    return Podman()


@pytest.fixture(scope="module")
def image(podman: Podman) -> str:
    started = time.monotonic()
    base = ensure_base_image(podman)
    print(f"base image ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    started = time.monotonic()
    build_image(podman, base, IMAGE)
    print(f"conveyor image built in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return IMAGE


@contextlib.contextmanager
def store_url(kind: str) -> Iterator[str]:
    if kind == "postgres":
        if importlib.util.find_spec("conveyor.store.postgres") is None:
            loud_skip("the PostgreSQL store (conveyor.store.postgres) is not in this tree yet")
        from tests.servers.postgres import running_server

        with running_server() as server:
            yield server.create_database(migrated=False)
    else:
        from tests.servers.redis import redis_available, running_redis

        if not redis_available():
            loud_skip("redis-server is not installed")
        with running_redis() as server:
            yield server.url


class Deployment:
    """The containers of one test run, removed at the end."""

    def __init__(self, podman: Podman, image: str, store: str) -> None:
        self.podman = podman
        self.image = image
        self.tag = uuid.uuid4().hex[:8]
        self.names: list[str] = []
        self.env = {
            "CONVEYOR_STORE": store,
            "CONVEYOR_IMPORTS": "conveyor.kinds.demo",
            "CONVEYOR_HOME": "/tmp/conveyor",
            "CONVEYOR_HEARTBEAT_S": "0.5",
            "CONVEYOR_LEASE_S": "10",
            # Shorter than a job: a stopped worker hands its running jobs back.
            "CONVEYOR_GRACE_S": "0.2",
        }

    def _env_args(self) -> list[str]:
        return [arg for name, value in self.env.items() for arg in ("-e", f"{name}={value}")]

    def once(self, *command: str) -> str:
        """Run a one-shot container (`db migrate`, `keys create`) and return its stdout."""
        done = self.podman(
            "run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "--health-interval", "disable", *self._env_args(), self.image, *command,
        )  # fmt: skip
        return done.stdout

    def start(self, role: str, *command: str) -> str:
        name = f"conveyor-e2e-{role}-{self.tag}"
        self.podman(
            "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
            # No systemd here to schedule health checks: `healthcheck run` runs them on demand.
            "--hostname", name, "--health-interval", "disable", *self._env_args(), self.image,
            *command,
        )  # fmt: skip
        self.names.append(name)
        return name

    def healthy(self, name: str) -> bool:
        return self.podman("healthcheck", "run", name, check=False).returncode == 0

    def logs(self) -> str:
        parts = []
        for name in self.names:
            done = self.podman("logs", "--tail", "40", name, check=False)
            parts.append(f"--- {name}\n{done.stdout}{done.stderr}")
        return "\n".join(parts)

    def remove(self) -> None:
        for name in self.names:
            self.podman("rm", "-f", "-t", "0", name, check=False)


def events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The job's event log so far (the SSE stream with follow=false)."""
    response = client.get(f"/v1/jobs/{job_id}/events", params={"follow": "false"})
    response.raise_for_status()
    return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]


def all_final(client: httpx.Client, ids: list[str]) -> dict[str, str] | None:
    states: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000, "kind": "demo.sleep"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/jobs", params=params).json()
        states.update({j["id"]: j["state"] for j in page["jobs"]})
        cursor = page.get("next_cursor")
        if not cursor:
            break
    done = {i: states.get(i, "?") for i in ids}
    final = {"succeeded", "failed", "cancelled"}
    return done if all(s in final for s in done.values()) else None


@pytest.mark.parametrize("backend", ["postgres", "redis"])
def test_image_serves_jobs_and_survives_a_worker_stop(
    podman: Podman, image: str, backend: str
) -> None:
    # The final stage has no compiler and runs as the conveyor user.
    probe = podman("run", "--rm", "--health-interval", "disable", "--entrypoint", "sh", image, "-c",
                   "id -u; command -v gcc cc c++ make || true", check=True)  # fmt: skip
    assert probe.stdout.split() == [UID], probe.stdout
    with store_url(backend) as url:
        deployment = Deployment(podman, image, url)
        try:
            run_scenario(deployment)
        except BaseException:
            print(deployment.logs(), file=sys.stderr)
            raise
        finally:
            deployment.remove()


def run_scenario(deployment: Deployment) -> None:
    started = time.monotonic()
    if deployment.env["CONVEYOR_STORE"].startswith("postgres"):
        deployment.once("db", "migrate")
    key = json.loads(deployment.once("keys", "create", "e2e", "--scope", "admin", "--json"))["key"]

    port = free_port()
    api = deployment.start("api", "api", "--host", "127.0.0.1", "--port", str(port))
    w1 = deployment.start("worker1", "worker", "--concurrency", str(CONCURRENCY))
    w2 = deployment.start("worker2", "worker", "--concurrency", str(CONCURRENCY))
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )  # fmt: skip

    def ready() -> bool:
        with contextlib.suppress(httpx.HTTPError):
            return client.get("/readyz").status_code == 200
        return False

    wait_for(ready, interval=0.1, what="the api container to be ready")
    for name in (api, w1, w2):
        assert deployment.podman("exec", name, "id", "-u").stdout.strip() == UID
    wait_for(lambda: deployment.healthy(api), interval=0.1, what="the api health check")
    wait_for(
        lambda: deployment.healthy(w1) and deployment.healthy(w2),
        interval=0.1,
        what="the worker health checks",
    )
    assert client.get("/v1/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401

    # 200 jobs through the api container: half one by one, half in one batch.
    job = {"kind": "demo.sleep", "input": {"seconds": SLEEP_S}}
    ids = []
    for _ in range(JOBS // 2):
        response = client.post("/v1/jobs", json=job)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    response = client.post("/v1/jobs", json={"jobs": [job] * (JOBS - JOBS // 2)})
    assert response.status_code == 201, response.text
    ids += [j["id"] for j in response.json()["jobs"]]
    assert len(set(ids)) == JOBS

    # Stop worker 1 while it runs jobs; they must finish on worker 2.
    def w1_running() -> list[str]:
        page = client.get("/v1/jobs", params={"state": "running", "limit": 1000}).json()
        return [j["id"] for j in page["jobs"] if j["lease"]["owner"].startswith(f"{w1}:")]

    try:
        held = wait_for(w1_running, interval=0.1, what="worker 1 to run jobs")
    except AssertionError:
        print("workers:", client.get("/v1/workers").text, file=sys.stderr)
        print("queues:", client.get("/v1/queues").text, file=sys.stderr)
        raise
    stop_started = time.monotonic()
    deployment.podman("stop", "-t", "30", w1)
    stop_s = time.monotonic() - stop_started
    exit_code = deployment.podman("inspect", "-f", "{{.State.ExitCode}}", w1).stdout.strip()
    assert exit_code == "0", f"worker 1 did not drain cleanly (exit {exit_code})"

    states = wait_for(
        lambda: all_final(client, ids), timeout=300, interval=0.1, what="all jobs to finish"
    )
    elapsed = time.monotonic() - started
    counts = {s: list(states.values()).count(s) for s in set(states.values())}
    assert counts == {"succeeded": JOBS}, counts

    # A job's "running" events name the worker of each attempt: find the ones worker 1 held
    # when it stopped (run by worker 1, then again by worker 2).
    runs = {
        job_id: [e["data"]["worker"] for e in events(client, job_id)
                 if e["type"] == "state" and e["data"].get("state") == "running"]
        for job_id in ids
    }  # fmt: skip
    moved = [i for i, ws in runs.items() if len(ws) > 1 and ws[0].startswith(f"{w1}:")]
    assert all(runs[i][-1].startswith(f"{w2}:") for i in moved), {i: runs[i] for i in moved}
    assert all(len(ws) == 1 or i in moved for i, ws in runs.items())
    assert deployment.healthy(api) and deployment.healthy(w2)
    print(
        f"\n[image e2e] {deployment.env['CONVEYOR_STORE'].split(':')[0]}: {JOBS} jobs succeeded "
        f"in {elapsed:.1f}s; worker 1 stopped in {stop_s:.1f}s while running {len(held)} "
        f"job(s) at first look; {len(moved)} job(s) it held finished on worker 2",
        file=sys.stderr,
    )
    assert moved, "no job held by the stopped worker was finished by the other one"
