"""The auth matrix through a real uvicorn: no key, wrong key, wrong scope, revoked, rate limit,
and `conveyor api` refusing to listen beyond loopback without keys."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.api import auth
from tests.api.conftest import ApiServer, running_api
from tests.api.test_api_jobs import problem
from tests.integration.harness import ROOT, worker_env


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    with running_api(tmp_path_factory.mktemp("auth")) as server:
        store = server.open_store()
        keys = {}
        for scopes in (["read"], ["submit"], ["work"], ["admin"], ["read", "submit"]):
            keys["+".join(scopes)] = auth.create_key(store, "+".join(scopes), scopes)[1]
        revoked_id, keys["revoked"] = auth.create_key(store, "old", ["admin"])
        auth.revoke_key(store, revoked_id)
        store.close()
        yield server, keys


def call(
    server: ApiServer, method: str, path: str, key: str | None, **kw: object
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.request(method, server.url + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


def test_no_key_is_401_with_challenge(secured: tuple[ApiServer, dict[str, str]]) -> None:
    server, _ = secured
    r = call(server, "GET", "/v1/jobs", None)
    problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert call(server, "GET", "/healthz", None).status_code == 200


def test_wrong_and_revoked_keys_are_401(secured: tuple[ApiServer, dict[str, str]]) -> None:
    server, keys = secured
    problem(call(server, "GET", "/v1/jobs", keys["admin"] + "x"), 401, "unauthorized")
    problem(call(server, "GET", "/v1/jobs", keys["revoked"]), 401, "unauthorized")
    problem(call(server, "GET", "/v1/jobs", "not-a-key"), 401, "unauthorized")


def test_scopes(secured: tuple[ApiServer, dict[str, str]]) -> None:
    server, keys = secured
    submit = {"json": {"kind": "noop", "queue": "authq"}}
    matrix = [
        # (method, path, kwargs, scopes allowed)
        ("GET", "/v1/jobs", {}, {"read", "admin", "read+submit"}),
        ("GET", "/v1/kinds", {}, {"read", "admin", "read+submit"}),
        ("GET", "/metrics", {}, {"read", "admin", "read+submit"}),
        ("POST", "/v1/jobs", submit, {"submit", "admin", "read+submit"}),
        ("POST", "/v1/queues/authq/lease", {"json": {"n": 1}}, {"work", "admin"}),
    ]
    for method, path, kw, allowed in matrix:
        for name in ("read", "submit", "work", "admin", "read+submit"):
            r = call(server, method, path, keys[name], **kw)
            if name in allowed:
                assert r.status_code < 400, (name, path, r.text)
            else:
                problem(r, 403, "forbidden")
    job = call(server, "POST", "/v1/jobs", keys["submit"], json={"kind": "noop"}).json()
    call(server, "POST", f"/v1/jobs/{job['id']}/cancel", keys["submit"])
    problem(call(server, "DELETE", f"/v1/jobs/{job['id']}", keys["submit"]), 403, "forbidden")
    assert call(server, "DELETE", f"/v1/jobs/{job['id']}", keys["admin"]).status_code == 204


def test_repeated_bad_keys_are_rate_limited_but_valid_keys_pass(tmp_path: Path) -> None:
    """Bad keys from one address get 429 after MAX_FAILURES; a valid key from that same
    address (behind a proxy: everyone) still passes, as does one whose id was guessed at."""
    with running_api(tmp_path / "limit") as server:
        store = server.open_store()
        good_id, good = auth.create_key(store, "good", ["read"])
        store.close()
        statuses = [
            call(server, "GET", "/v1/jobs", "cvk_bad_guess").status_code
            for _ in range(auth.MAX_FAILURES + 1)
        ]
        assert statuses[:-1] == [401] * auth.MAX_FAILURES
        problem(call(server, "GET", "/v1/jobs", "cvk_bad_guess"), 429, "too-many-requests")
        assert call(server, "GET", "/v1/jobs", good).status_code == 200
        # Guessing one key's secret is limited too (its id is in the count), the key works.
        wrong_secret = f"cvk_{good_id}_{'0' * 43}"
        r = call(server, "GET", "/v1/jobs", wrong_secret)
        problem(r, 429, "too-many-requests")
        assert int(r.headers["retry-after"]) > 0
        assert call(server, "GET", "/v1/jobs", good).status_code == 200


def test_api_refuses_public_bind_without_keys(tmp_path: Path) -> None:
    home = tmp_path / "public"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "api",
            "--host",
            "0.0.0.0",
            "--port",
            "1",
            "--store",
            f"sqlite:///{home / 'c.db'}",
        ],
        env=worker_env(home),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "conveyor keys create" in result.stderr
