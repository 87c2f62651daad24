"""S18: the authn/authz matrix over every operation of the served OpenAPI document.

Every operation (the /v1 API and the compatibility APIs) is called with no key, a wrong key, a
revoked key and each single-scope key, against real ids, through a real `conveyor api`. Pass:
bad credentials get 401 on 100% of protected operations, every operation refuses (403) at least
two of the three single scopes (read, submit, work), no refused call answers 2xx, and the
operations that answer without a key are exactly the documented public ones. Also: protected
fields cannot be mass-assigned through `POST /v1/jobs`, the database holds no plaintext key,
and schemathesis over the compatibility APIs (bounded) gives 0 responses >= 500. On every
shared store (SQLite, PostgreSQL, Redis: about 5-8 s each), in the PR tier.

The failure limiter answers 429 after 10 bad keys from one address or for one key id (tested in
tests/api/test_api_auth.py); here each batch of bad-key calls comes from its own loopback source
address (127.0.0.x) and each operation presents the wrong secret and the revoked key of key ids
of its own, so every answer is the authentication verdict itself.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from conveyor.api import auth
from tests.api.conftest import ApiServer, start_api
from tests.integration.harness import stop
from tests.reliability.conftest import STORES, ModuleStore
from tests.reliability.security_results import record

pytestmark = pytest.mark.parametrize("module_store", STORES, indirect=True, scope="module")
# Operations that answer without a key, and why.
PUBLIC = {
    ("GET", "/healthz"): "liveness probe",
    ("GET", "/readyz"): "readiness probe",
    ("GET", "/_ah/health"): "App Engine style health probe (taskqueue compat)",
    ("GET", "/discovery/v1/apis/{name}/{version}/rest"): "static discovery document",
    ("GET", "/api/{name}/{version}"): "static discovery document",
    # The Swiss AI Center contract has no credentials: its core engine calls services as-is.
    ("GET", "/swissai/{kind}/status"): "Swiss AI Center contract (no auth in the original)",
    ("GET", "/swissai/{kind}/tasks/{task_id}/status"): "Swiss AI Center contract",
    ("POST", "/swissai/{kind}/compute"): "Swiss AI Center contract",
}
# Anonlink Entity Service compat: its own per-project tokens, not conveyor keys (a missing
# project answers 403 so existence does not leak; creating a project needs no token, as in the
# original). Bad tokens there must never give 2xx or 5xx.
# Envelopes: any valid key opens them (401 otherwise); each part inside checks its own scope.
ENVELOPES = {("POST", "/batch"): "google-api-python-client batch of Task Queue calls"}
OWN_TOKENS = ("/api/v1/",)
# Public in the original too: create a project, list project ids, status and version.
OWN_TOKENS_PUBLIC = {("POST", "/api/v1/projects"), ("GET", "/api/v1/projects"),
                     ("GET", "/api/v1/status"), ("GET", "/api/v1/version")}  # fmt: skip
SINGLE_SCOPES = ("read", "submit", "work")
COMPAT_TAGS = ("taskqueue", "allocation", "kge")
COMPAT_EXAMPLES = 5


class Sources:
    """Loopback source addresses, a fresh one every few bad-key calls (below the limiter)."""

    def __init__(self) -> None:
        self._next = itertools.count(2)
        self._client: httpx.Client | None = None
        self._used = 0

    def client(self) -> httpx.Client:
        if self._client is None or self._used >= auth.MAX_FAILURES - 1:
            if self._client is not None:
                self._client.close()
            n = next(self._next)
            address = f"127.0.{n // 250}.{n % 250 + 2}"
            self._client = httpx.Client(
                transport=httpx.HTTPTransport(local_address=address), timeout=30
            )
            self._used = 0
        self._used += 1
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()


@pytest.fixture(scope="module")
def secured(
    module_store: ModuleStore, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    server = start_api(tmp_path_factory.mktemp("s18"), store_url=module_store.url)
    store = server.open_store()
    keys = {s: auth.create_key(store, s, [s])[1] for s in (*SINGLE_SCOPES, "admin")}
    revoked_id, keys["revoked"] = auth.create_key(store, "old", ["admin"])
    auth.revoke_key(store, revoked_id)
    store.close()
    try:
        yield server, keys
    finally:
        stop(server.process)


def _bad_keys(server: ApiServer, n: int) -> tuple[list[str], list[str]]:
    """n admin keys' ids with a wrong secret, and n revoked admin keys: one of each per
    operation, as the limiter also counts bad attempts per presented key id."""
    store = server.open_store()
    try:
        wrong = [auth.create_key(store, f"w{i}", ["admin"])[1] + "x" for i in range(n)]
        revoked = []
        for i in range(n):
            key_id, raw = auth.create_key(store, f"r{i}", ["admin"])
            auth.revoke_key(store, key_id)
            revoked.append(raw)
    finally:
        store.close()
    return wrong, revoked


def _operations(server: ApiServer, admin: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {admin}"},
                     timeout=30).json()  # fmt: skip
    return [(m.upper(), p) for p, ops in spec["paths"].items() for m in ops]


def _fill(path: str, job_id: str) -> str:
    values = {"job_id": job_id, "name": "in.txt", "kind": "noop", "queue": "s18",
              "project": "p", "taskqueue": "s18", "task": "t1", "task_id": job_id,
              "version": "v1beta2"}  # fmt: skip
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), "x"), path)


class Answer:
    """A status code, or 0 with the transport error (a reset means the server crashed)."""

    def __init__(self, status: int, text: str) -> None:
        self.status_code, self.text = status, text


def _request(client: httpx.Client, url: str, method: str, path: str, key: str | None,
             job_id: str, bearer: bool = True) -> Answer:  # fmt: skip
    value = f"Bearer {key}" if bearer else str(key)
    headers = {"Authorization": value} if key is not None else {}
    kw: dict[str, Any] = {"headers": headers, "params": {"job_id": job_id}}
    if method in ("POST", "PUT", "PATCH"):
        kw["json"] = {}  # a parseable body, so the verdict is about auth, not the body
    try:
        r = client.request(method, url + _fill(path, job_id), **kw)
    except httpx.TransportError as exc:
        return Answer(0, repr(exc))
    return Answer(r.status_code, r.text)


def _own_tokens(sources: Sources, url: str, operations: list[tuple[str, str]], job_id: str,
                failures: list[str]) -> int:  # fmt: skip
    """Operations with their own token scheme: bad tokens never reach 2xx or 5xx."""
    cases = 0
    for method, path in operations:
        if (method, path) in OWN_TOKENS_PUBLIC:
            continue
        for token in (None, "forged-token", "0" * 48):
            cases += 1
            r = _request(sources.client(), url, method, path, token, job_id, bearer=False)
            if r.status_code < 300 or r.status_code >= 500:
                failures.append(f"{method} {path} with token {token!r}: {r.status_code}"
                                f" {r.text[-160:]}")  # fmt: skip
    return cases


def test_every_operation_refuses_bad_credentials_and_wrong_scopes(
    secured: tuple[ApiServer, dict[str, str]], module_store: ModuleStore
) -> None:
    server, keys = secured
    job = httpx.post(f"{server.url}/v1/jobs", json={"kind": "noop", "queue": "s18"},
                     headers={"Authorization": f"Bearer {keys['admin']}"}, timeout=30)  # fmt: skip
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    everything = _operations(server, keys["admin"])
    own = [op for op in everything if op[1].startswith(OWN_TOKENS)]
    operations = [op for op in everything if op not in own]
    assert len(operations) >= 40
    wrong, revoked = _bad_keys(server, len(operations))
    sources = Sources()
    failures: list[str] = []
    cases = 0
    scope_of: dict[str, str] = {}
    try:
        cases += _own_tokens(sources, server.url, own, job_id, failures)
        for n, (method, path) in enumerate(operations):
            label = f"{method} {path}"
            if path.endswith("/events"):
                continue  # an SSE stream; its auth is checked with the read routes below
            credentials: list[tuple[str, str | None]] = [
                ("no key", None), ("wrong key", wrong[n]),
                ("not a key", "cvk_forged"), ("revoked", revoked[n]),
            ]  # fmt: skip
            for what, key in credentials:
                cases += 1
                r = _request(sources.client(), server.url, method, path, key, job_id)
                public = (method, path) in PUBLIC
                if public and what == "no key":
                    if r.status_code in (401, 403):
                        failures.append(f"{label}: documented public but answered {r.status_code}")
                elif not public and r.status_code != 401:
                    failures.append(f"{label} with {what}: {r.status_code} {r.text[:100]}")
            if (method, path) in PUBLIC or (method, path) in ENVELOPES:
                continue
            refused = []
            for scope in SINGLE_SCOPES:
                cases += 1
                r = _request(sources.client(), server.url, method, path, keys[scope], job_id)
                if r.status_code == 403:
                    refused.append(scope)
                elif r.status_code == 401:
                    failures.append(f"{label}: valid {scope} key got 401")
            if len(refused) < 2:
                failures.append(f"{label}: only {refused} of the single scopes refused")
            allowed = sorted(set(SINGLE_SCOPES) - set(refused))
            scope_of[label] = "+".join(allowed) or "admin"
    finally:
        sources.close()
    events = httpx.get(f"{server.url}/v1/jobs/{job_id}/events", timeout=30)
    cases += 1
    if events.status_code != 401:
        failures.append(f"events stream without a key: {events.status_code}")
    record("S18 authz matrix", cases, len(failures),
           f"{len(operations)} operations x (no/wrong/forged/revoked key + 3 single scopes); "
           f"{len(own)} linkage operations with bad project tokens (never 2xx/5xx); "
           f"{len(PUBLIC)} documented public operations; admin-only: "
           f"{sum(v == 'admin' for v in scope_of.values())}", store=module_store.name)  # fmt: skip
    assert not failures, "\n".join(failures)


PROTECTED = {"state": "succeeded", "attempt": 7, "lease_token": "forged", "lease_owner": "me",
             "lease_expires_at": "2099-01-01T00:00:00Z", "result": {"x": 1},
             "error": {"type": "x", "message": "y"}, "id": "forged-id",
             "created_at": "2000-01-01T00:00:00Z", "tenant_id": "other"}  # fmt: skip


def test_protected_fields_cannot_be_mass_assigned(
    secured: tuple[ApiServer, dict[str, str]], module_store: ModuleStore
) -> None:
    """Each server-owned field is refused by name (422), one job or inside a batch; no job is
    created in the probe queue."""
    server, keys = secured
    headers = {"Authorization": f"Bearer {keys['submit']}"}
    failures = []
    for field, value in PROTECTED.items():
        for body in (
            {"kind": "noop", "queue": "s18-mass", field: value},
            {"jobs": [{"kind": "noop", "queue": "s18-mass", field: value}]},
        ):
            r = httpx.post(f"{server.url}/v1/jobs", json=body, headers=headers, timeout=30)
            if r.status_code != 422 or field not in r.json().get("detail", ""):
                failures.append(f"{field}: {r.status_code} {r.text[:120]}")
    listed = httpx.get(f"{server.url}/v1/jobs", params={"queue": "s18-mass"},
                       headers={"Authorization": f"Bearer {keys['read']}"}, timeout=30)  # fmt: skip
    if listed.json()["jobs"]:
        failures.append(f"{len(listed.json()['jobs'])} jobs created by mass-assignment probes")
    record("S18 mass assignment", 2 * len(PROTECTED), len(failures),
           f"POST /v1/jobs (single and batch) with each of {', '.join(PROTECTED)}: "
           "422 naming the field, 0 jobs created", store=module_store.name)  # fmt: skip
    assert not failures, failures


def test_database_holds_no_plaintext_key(
    secured: tuple[ApiServer, dict[str, str]], module_store: ModuleStore
) -> None:
    """Every file the store's data rests in (SQLite file and WAL; PostgreSQL's data directory
    with its WAL, flushed at each commit; Redis's append-only file) is searched, one by one."""
    keys = secured[1]
    needles = {name: raw.encode() for name, raw in keys.items()}
    needles |= {f"{name} (secret part)": raw.split("_")[-1].encode() for name, raw in keys.items()
                if len(raw.split("_")[-1]) >= 16}  # fmt: skip
    files = [p for p in module_store.data_dir.rglob("*") if p.is_file()]
    leaked: set[str] = set()
    size = 0
    for path in files:
        data = path.read_bytes()
        size += len(data)
        leaked |= {name for name, needle in needles.items() if needle in data}
    notes = f"{len(keys)} keys searched in {len(files)} database files ({size} bytes)"
    record("S18 no plaintext keys", len(keys), len(leaked), notes, store=module_store.name)
    assert not leaked, leaked


def test_compat_apis_never_answer_5xx(
    secured: tuple[ApiServer, dict[str, str]], module_store: ModuleStore
) -> None:
    """Schemathesis over the compatibility APIs (the /v1 API has tests/api)."""
    server, keys = secured
    loaded = schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {keys['admin']}"}
    )
    operations = [
        op for op in (r.ok() for r in loaded.get_all_operations())
        if any(t.startswith(COMPAT_TAGS) for t in op.definition.raw.get("tags", ()))
    ]  # fmt: skip
    assert len(operations) >= 15
    failures: list[str] = []
    calls = 0
    headers = {"Authorization": f"Bearer {keys['admin']}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=COMPAT_EXAMPLES, deadline=None,
                  suppress_health_check=list(HealthCheck), database=None)  # fmt: skip
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            response = case.call(headers=headers)
            assert response.status_code < 500, (response.status_code, response.text[:300])

        try:
            check()
        except Exception as exc:  # report every operation's failure together
            failures.append(f"{operation.label}: {exc}")
    record("S18 compat fuzzing", calls, len(failures),
           f"schemathesis, {len(operations)} taskqueue/allocation/kge operations, "
           f"{COMPAT_EXAMPLES} examples each, admin key; failure = status >= 500",
           store=module_store.name)  # fmt: skip
    assert not failures, "\n\n".join(failures)
