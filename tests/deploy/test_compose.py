"""compose.yaml and its development overlay, checked by docker-compose 1.29.2 itself.

`docker-compose config` validates each file against the compose schema, interpolates the
variables from `.env.example` and merges the overlay; the tests then check the merged result
keeps the promises in deploy/compose.yaml's header (and docs/deploy/compose.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.tools import docker_compose, loud_skip

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ENV_EXAMPLE = DEPLOY / ".env.example"
BACKING = ("postgres", "redis", "minio")
LONG_RUNNING = ("postgres", "redis", "minio", "api", "worker", "nginx")
ONE_SHOT = ("preflight", "migrate", "minio-init")


@pytest.fixture(scope="module")
def compose() -> Path:
    try:
        return docker_compose()
    except RuntimeError as exc:
        loud_skip(f"docker-compose 1.29.2 could not be installed: {exc}")
        raise


def config(compose: Path, *files: str, env_file: Path | None = ENV_EXAMPLE) -> dict[str, Any]:
    args = [str(compose), "--project-directory", str(DEPLOY)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    for name in files:
        args += ["-f", str(DEPLOY / name)]
    done = subprocess.run([*args, "config"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    loaded: dict[str, Any] = yaml.safe_load(done.stdout)
    return loaded


@pytest.fixture(scope="module")
def production(compose: Path) -> dict[str, Any]:
    return config(compose, "compose.yaml")


@pytest.fixture(scope="module")
def development(compose: Path) -> dict[str, Any]:
    return config(compose, "compose.yaml", "compose.dev.yaml")


def test_services_and_health_checks(production: dict[str, Any]) -> None:
    services = production["services"]
    assert set(services) == {*LONG_RUNNING, *ONE_SHOT}
    for name in LONG_RUNNING:
        service = services[name]
        assert service["healthcheck"]["test"], name
        assert service["restart"] == "unless-stopped", name
    for name in ONE_SHOT:
        assert services[name]["restart"] == "no", name
    assert services["redis"]["profiles"] == ["redis"]  # the optional second store


def test_migrate_runs_once_before_api_and_workers(production: dict[str, Any]) -> None:
    services = production["services"]
    assert services["migrate"]["command"] == ["db", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        needs = services[name]["depends_on"]
        assert needs["migrate"]["condition"] == "service_completed_successfully", name
        assert needs["minio-init"]["condition"] == "service_completed_successfully", name
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_production_publishes_only_nginx(production: dict[str, Any]) -> None:
    services = production["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"nginx"}
    for name in BACKING:
        assert "ports" not in services[name], f"{name} must not be reachable from outside"
    assert services["api"]["expose"] == ["8000"]


def test_workers_scale_and_drain(production: dict[str, Any]) -> None:
    worker = production["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale worker=4
    assert worker["command"] == ["worker"]
    grace = float(worker["environment"]["CONVEYOR_GRACE_S"])
    stop = worker["stop_grace_period"]
    match = re.fullmatch(r"(\d+)s", stop)
    assert match and int(match[1]) > grace, (stop, grace)


def test_conveyor_services_share_one_image_and_a_read_only_root(
    production: dict[str, Any],
) -> None:
    services = production["services"]
    images = {services[n]["image"] for n in ("migrate", "api", "worker")}
    assert len(images) == 1
    for name in ("migrate", "api", "worker"):
        service = services[name]
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        env = service["environment"]
        assert env["CONVEYOR_STORE"].startswith("postgresql://conveyor@postgres")
        assert env["CONVEYOR_STORAGE"].startswith("s3://")
        assert env["CONVEYOR_S3_ENDPOINT_URL"] == "http://minio:9000"


def test_named_volumes_keep_the_data(production: dict[str, Any]) -> None:
    assert set(production["volumes"]) == {"pgdata", "redisdata", "miniodata"}
    mounts = {n: s.get("volumes", []) for n, s in production["services"].items()}
    assert any(v.startswith("pgdata:") for v in mounts["postgres"])
    assert any(v.startswith("miniodata:") for v in mounts["minio"])


def test_no_secret_is_written_in_the_files() -> None:
    """Every password or key comes from `${...}` interpolation (deploy/.env)."""
    secret = re.compile(r"(PASSWORD|SECRET|ACCESS_KEY)[A-Z_]*:\s*(.+)$")
    for name in ("compose.yaml", "compose.dev.yaml"):
        for line in (DEPLOY / name).read_text().splitlines():
            found = secret.search(line)
            if found:
                assert found[2].strip().startswith("${"), f"{name}: {line.strip()}"


def test_missing_secrets_are_refused(compose: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    args = [str(compose), "--project-directory", str(DEPLOY), "--env-file", str(empty),
            "-f", str(DEPLOY / "compose.yaml"), "config"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=False)
    assert done.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in done.stderr


def test_development_overlay(development: dict[str, Any], production: dict[str, Any]) -> None:
    services = development["services"]
    for name in ("api", "worker", "migrate"):
        service = services[name]
        assert any(v.endswith(":/app/src:ro") for v in service["volumes"]), name
        assert service["environment"]["PYTHONPATH"] == "/app/src"
        assert service["read_only"] is False  # editable, reloadable
        assert service["build"]["args"]["DEV_PACKAGES"] == "watchfiles"
    assert "--reload" in services["api"]["command"]
    assert "--log-level=debug" in services["api"]["command"]
    assert services["worker"]["command"][0] == "watchfiles"
    assert "--log-level debug" in " ".join(services["worker"]["command"])
    # Ports are published, on loopback only.
    for name in ("api", "postgres", "minio"):
        assert services[name]["ports"], name
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    # The overlay keeps the production ordering.
    assert services["api"]["depends_on"] == production["services"]["api"]["depends_on"]


def test_nginx_streams_uploads_and_events() -> None:
    locations = (DEPLOY / "nginx-locations.conf").read_text()
    main = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"^client_max_body_size 1g;", locations, re.M)
    sse = locations[locations.index("location ~ ^/v1/jobs/[^/]+/events$") :]
    sse = sse[: sse.index("}")]
    assert "proxy_buffering off;" in sse and "proxy_read_timeout 24h;" in sse
    files = locations[locations.index("location ~ ^/v1/jobs/[^/]+/files/") :]
    assert "proxy_request_buffering off;" in files[: files.index("}")]
    assert "X-Forwarded-For" in locations
    assert "ssl_certificate" in main  # the TLS server, ready to enable
    assert main.count("include /etc/nginx/conveyor-locations.conf;") == 2
    assert (
        "nginx-locations.conf:/etc/nginx/conveyor-locations.conf:ro"
        in (DEPLOY / "compose.yaml").read_text()
    )


def run_preflight(production: dict[str, Any], **env: str) -> subprocess.CompletedProcess[str]:
    """The preflight service's own script, with the environment compose would give it."""
    service = production["services"]["preflight"]
    assert service["entrypoint"] == ["python", "-c"]
    given = {**service["environment"], **env}
    return subprocess.run([sys.executable, "-c", service["command"][0]], env=given,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_example_passwords_and_demo_kinds_are_refused_at_start(
    production: dict[str, Any],
) -> None:
    services = production["services"]
    # Nothing starts before the preflight passed: the databases wait for it, the rest for them.
    for name in ("postgres", "minio"):
        assert services[name]["depends_on"]["preflight"]["condition"] == (
            "service_completed_successfully"
        )
    as_shipped = run_preflight(production)  # .env.example, unchanged
    assert as_shipped.returncode == 1
    assert "POSTGRES_PASSWORD is an example" in as_shipped.stderr
    assert "MINIO_ROOT_PASSWORD is an example" in as_shipped.stderr
    strong = {"POSTGRES_PASSWORD": "n0t-an-example-pg", "MINIO_ROOT_PASSWORD": "n0t-an-example-s3"}
    assert run_preflight(production, **strong).returncode == 0
    short = run_preflight(production, **{**strong, "POSTGRES_PASSWORD": "hunter2"})
    assert short.returncode == 1 and "shorter than 12" in short.stderr
    # The demo kinds (demo.crash kills workers) are off unless asked for by name.
    assert "conveyor.kinds.demo" not in services["worker"]["environment"]["CONVEYOR_IMPORTS"]
    demo = {**strong, "CONVEYOR_IMPORTS": "myapp.kinds, conveyor.kinds.demo"}
    refused = run_preflight(production, **demo)
    assert refused.returncode == 1 and "demo.crash" in refused.stderr
    assert run_preflight(production, **demo, CONVEYOR_ALLOW_DEMO="1").returncode == 0


def test_every_service_has_resource_limits(production: dict[str, Any]) -> None:
    for name, service in production["services"].items():
        assert service.get("mem_limit"), f"{name} has no memory limit"
        assert float(service.get("cpus", 0)) > 0, f"{name} has no CPU limit"
    worker = production["services"]["worker"]
    assert worker["mem_limit"] == "2g" and float(worker["cpus"]) == 2
