"""S11: client ↔ API partition with Idempotency-Key retries.

A reset proxy between `conveyor.Client` and a real `conveyor api` delivers every request but
resets ~30% of the responses, so the server often did the work and the client never heard.
The client retries with the same key. Pass: exactly one job per key, every retry answers the
original id, a key reused with a different body is refused with 422, and concurrent submits with
one key make one job. On every shared store: SQLite in the PR tier, PostgreSQL and Redis nightly
(each adds 10-15 s).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conveyor.client import Client
from conveyor.models import JobFilter
from tests.api.conftest import ApiServer, start_api
from tests.integration.harness import stop
from tests.reliability.conftest import SQLITE_IN_PR, ModuleStore
from tests.reliability.reset_proxy import ResetProxy
from tests.reliability.security_results import record

pytestmark = pytest.mark.parametrize("module_store", SQLITE_IN_PR, indirect=True, scope="module")
DROP = 0.3
USER_RETRIES = 30  # a caller re-submitting with the same key after the client gives up


@pytest.fixture(scope="module")
def api(module_store: ModuleStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(tmp_path_factory.mktemp("s11"), store_url=module_store.url)
    try:
        yield server
    finally:
        stop(server.process)


def _submit(client: Client, key: str, tag: str) -> str:
    for _ in range(USER_RETRIES):
        try:
            return client.submit("noop", tags=[tag], idempotency_key=key).id
        except httpx.TransportError:
            continue
    raise AssertionError(f"{key}: no answer after {USER_RETRIES} resubmits")


def _jobs_tagged(api: ApiServer, tag: str) -> list[str]:
    store = api.open_store()
    try:
        ids: list[str] = []
        cursor = None
        while True:
            page = store.list_jobs(JobFilter(tag=tag), cursor=cursor, limit=500)
            ids += [j.id for j in page.jobs]
            if not page.next_cursor:
                return ids
            cursor = page.next_cursor
    finally:
        store.close()


def _run(api: ApiServer, store: str, n: int, tag: str, tier: str) -> None:
    proxy = ResetProxy(int(api.url.rsplit(":", 1)[1]), DROP, seed=11)
    keys = [f"{tag}-{i}" for i in range(n)]
    failures: list[str] = []
    with proxy.running() as url, Client(url, retries=3, backoff_s=0.002, timeout=10) as client:
        answered = {key: _submit(client, key, tag) for key in keys}
        # concurrent same-key probes through the same faulty link: 20 keys x 5 callers each
        probe_keys = [f"{tag}-probe-{i}" for i in range(20)]

        def probe(key: str) -> str:
            with Client(url, retries=3, backoff_s=0.002, timeout=10) as own:
                return _submit(own, key, tag)

        with ThreadPoolExecutor(10) as pool:
            probe_ids = list(pool.map(probe, [k for k in probe_keys for _ in range(5)]))
    stats = proxy.stats
    for i, key in enumerate(probe_keys):
        if len(set(probe_ids[i * 5 : i * 5 + 5])) != 1:
            failures.append(f"concurrent probes of {key} got different ids")

    stored = _jobs_tagged(api, tag)
    if len(stored) != len(set(stored)):
        failures.append("a job id is listed twice")
    if len(stored) != n + len(probe_keys):
        failures.append(f"{len(stored)} jobs stored for {n + len(probe_keys)} keys")
    if set(answered.values()) | set(probe_ids) != set(stored):
        failures.append("answered ids and stored ids differ")

    conflicts = 0
    with httpx.Client(base_url=api.url, timeout=30) as direct:
        for key, job_id in answered.items():  # a late retry answers the original job
            again = direct.post("/v1/jobs", json={"kind": "noop", "tags": [tag]},
                                headers={"Idempotency-Key": key})  # fmt: skip
            if again.status_code != 200 or again.json()["id"] != job_id:
                failures.append(f"{key}: replay gave {again.status_code} {again.text[:80]}")
        for key in keys[:50]:  # the same key with a different body
            other = direct.post("/v1/jobs", json={"kind": "noop", "tags": [tag], "priority": 7},
                                headers={"Idempotency-Key": key})  # fmt: skip
            conflicts += other.status_code == 422
    if conflicts != 50:
        failures.append(f"{50 - conflicts} of 50 same-key/different-body probes not refused")
    assert stats.resets > n * DROP / 2, stats  # the fault really happened

    cases = n + len(probe_ids) + n + 50
    record("S11 idempotent submit", cases, len(failures),
           f"{n} keyed submits + 100 concurrent probes through a proxy resetting "
           f"{stats.resets}/{stats.responses} responses; {len(stored)} jobs for "
           f"{n + len(probe_keys)} keys; {conflicts}/50 different-body replays → 422",
           store=store, tier=tier)  # fmt: skip
    assert not failures, failures


def test_partitioned_submits_make_exactly_one_job_per_key(
    api: ApiServer, module_store: ModuleStore
) -> None:
    n = int(os.environ.get("S11_JOBS", "300"))
    tier = "pr" if module_store.name == "sqlite" else "soak"
    _run(api, module_store.name, n, "s11", tier)


@pytest.mark.soak
def test_partitioned_submits_soak(api: ApiServer, module_store: ModuleStore) -> None:
    _run(api, module_store.name, 1000, "s11-soak", "soak")
