"""Submission quotas on API keys: 429 problem+json with Retry-After, counted in the store so
two API processes on one store share one budget."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conveyor.api import auth
from conveyor.store import open_store
from tests.api.conftest import ApiServer, start_api
from tests.api.test_api_jobs import problem
from tests.integration.harness import stop


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, ApiServer]]:
    home: Path = tmp_path_factory.mktemp("quotas")
    url = f"sqlite:///{home / 'conveyor.db'}"
    first = start_api(home / "a", store_url=url)
    second = start_api(home / "b", store_url=url)
    try:
        yield first, second
    finally:
        stop(first.process)
        stop(second.process)


def key(server: ApiServer, quota: auth.Quota | None) -> dict[str, str]:
    store = open_store(server.store_url)
    try:
        raw = auth.create_key(store, "tenant", ["read", "submit"], quota)[1]
    finally:
        store.close()
    return {"Authorization": f"Bearer {raw}"}


def test_requests_quota_is_global_across_replicas(replicas: tuple[ApiServer, ApiServer]) -> None:
    a, b = replicas
    headers = key(a, auth.Quota(requests_per_min=3))
    for server in (a, b, a):
        assert httpx.get(f"{server.url}/v1/jobs", headers=headers).status_code == 200
    refused = httpx.get(f"{b.url}/v1/jobs", headers=headers)
    body = problem(refused, 429, "quota-exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert "3 requests a minute" in body["detail"]
    free = key(a, None)  # other keys are not affected
    assert httpx.get(f"{b.url}/v1/jobs", headers=free).status_code == 200


def test_jobs_quota_counts_jobs_not_requests(replicas: tuple[ApiServer, ApiServer]) -> None:
    a, b = replicas
    headers = key(a, auth.Quota(jobs_per_min=5))

    def batch(server: ApiServer, n: int) -> httpx.Response:
        body = {"jobs": [{"kind": "noop"} for _ in range(n)]}
        return httpx.post(f"{server.url}/v1/jobs", json=body, headers=headers)

    assert batch(a, 3).status_code == 201
    refused = batch(b, 3)  # 2 left
    problem(refused, 429, "quota-exceeded")
    assert int(refused.headers["retry-after"]) >= 1
    assert batch(b, 2).status_code == 201
    too_big = problem(batch(a, 6), 429, "quota-exceeded")
    assert "more than the key's quota of 5" in too_big["detail"]
    assert httpx.get(f"{a.url}/v1/jobs", headers=headers).status_code == 200  # reads go on


def test_a_changed_quota_applies_at_the_next_request(replicas: tuple[ApiServer, ApiServer]) -> None:
    a, _ = replicas
    headers = key(a, None)
    key_id = headers["Authorization"].removeprefix("Bearer cvk_").split("_")[0]
    assert httpx.get(f"{a.url}/v1/jobs", headers=headers).status_code == 200
    store = open_store(a.store_url)
    try:
        record = auth.set_quota(store, key_id, auth.Quota(requests_per_min=1))
    finally:
        store.close()
    assert record.public()["quota"] == {"requests_per_min": 1, "jobs_per_min": None}
    assert httpx.get(f"{a.url}/v1/jobs", headers=headers).status_code == 200
    problem(httpx.get(f"{a.url}/v1/jobs", headers=headers), 429, "quota-exceeded")
