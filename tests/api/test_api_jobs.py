"""/v1/jobs through a real uvicorn: submit, idempotency, list, get, cancel, retry, delete, SSE."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from conveyor.models import JobFilter
from tests.api.conftest import ApiServer

PROBLEM = "application/problem+json"


def problem(response: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["type"].endswith("/" + type_), body
    assert body["status"] == status
    return body


def sse_events(text: str) -> list[dict[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in fields:
            event = json.loads(fields["data"])
            assert int(fields["id"]) == event["seq"]
            assert fields["event"] == event["type"]
            events.append(event)
    return events


def test_submit_one_gives_201_and_location(http: httpx.Client) -> None:
    r = http.post("/v1/jobs", json={"kind": "demo.sleep", "input": {"seconds": 0}})
    assert r.status_code == 201, r.text
    job = r.json()
    assert job["state"] == "queued"
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert http.get(r.headers["location"]).json()["id"] == job["id"]


def test_submit_errors_are_problems(http: httpx.Client) -> None:
    body = problem(http.post("/v1/jobs", json={"kind": "no.such"}), 404, "kind-not-found")
    assert "demo.sleep" in body["detail"]
    bad = http.post("/v1/jobs", json={"kind": "demo.sleep", "input": {"seconds": -1}})
    body = problem(bad, 422, "invalid-input")
    assert body["errors"][0]["loc"] == ["input", "seconds"]
    problem(
        http.post("/v1/jobs", content=b"{nope", headers={"content-type": "application/json"}),
        422,
        "invalid-request",
    )
    body = problem(
        http.post("/v1/jobs", json={"kind": "noop", "priority": 5000}), 422, "invalid-request"
    )
    assert body["errors"][0]["loc"] == ["body", "priority"]
    problem(http.post("/v1/jobs", content=b" " * (17 << 20)), 413, "payload-too-large")


def test_batch_submit_is_atomic(http: httpx.Client) -> None:
    r = http.post("/v1/jobs", json={"jobs": [{"kind": "noop", "tags": ["batch-a"]}] * 500})
    assert r.status_code == 201, r.text
    assert len(r.json()["jobs"]) == 500
    bad = http.post(
        "/v1/jobs",
        json={
            "jobs": [
                {"kind": "noop", "tags": ["batch-b"]},
                {"kind": "demo.sleep", "input": {"seconds": -1}},
            ]
        },
    )
    body = problem(bad, 422, "invalid-input")
    assert body["errors"][0]["loc"][:2] == ["jobs", 1]
    assert http.get("/v1/jobs", params={"tag": "batch-b"}).json()["jobs"] == []
    problem(http.post("/v1/jobs", json={"jobs": [{"kind": "noop"}] * 1001}), 422, "invalid-request")


def test_idempotency_key_replays_and_conflicts(http: httpx.Client) -> None:
    headers = {"Idempotency-Key": "idem-1"}
    first = http.post("/v1/jobs", json={"kind": "noop"}, headers=headers)
    again = http.post("/v1/jobs", json={"kind": "noop"}, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"]
    other = http.post("/v1/jobs", json={"kind": "noop", "priority": 1}, headers=headers)
    problem(other, 422, "idempotency-conflict")


def test_twenty_concurrent_identical_submits_make_one_job(api: ApiServer) -> None:
    def submit(_: int) -> httpx.Response:
        with httpx.Client(base_url=api.url, timeout=30) as client:
            return client.post(
                "/v1/jobs",
                json={"kind": "noop", "tags": ["race"]},
                headers={"Idempotency-Key": "race-key"},
            )

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(submit, range(20)))
    assert all(r.status_code in (200, 201) for r in responses), [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    store = api.open_store()
    try:
        assert len(store.list_jobs(JobFilter(tag="race")).jobs) == 1
    finally:
        store.close()


def test_list_filters_and_cursor(http: httpx.Client) -> None:
    ids = [
        j["id"]
        for j in http.post(
            "/v1/jobs", json={"jobs": [{"kind": "noop", "tags": ["page"], "queue": "pages"}] * 5}
        ).json()["jobs"]
    ]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"tag": "page", "limit": 2, "queue": "pages", "state": "queued"}
        if cursor:
            params["cursor"] = cursor
        page = http.get("/v1/jobs", params=params).json()
        seen += [j["id"] for j in page["jobs"]]
        if not (cursor := page["next_cursor"]):
            break
    assert seen == sorted(ids, reverse=True)
    assert http.get("/v1/jobs", params={"tag": "page", "kind": "demo.sleep"}).json()["jobs"] == []
    created = http.get(f"/v1/jobs/{ids[0]}").json()["created_at"]
    later = http.get("/v1/jobs", params={"tag": "page", "created_after": created}).json()
    assert {j["id"] for j in later["jobs"]} <= set(ids)
    problem(http.get("/v1/jobs", params={"state": "bogus"}), 422, "invalid-request")
    problem(http.get("/v1/jobs", params={"limit": 0}), 422, "invalid-request")


def test_get_cancel_retry_delete(http: httpx.Client) -> None:
    problem(http.get("/v1/jobs/0190-nope"), 404, "job-not-found")
    job = http.post("/v1/jobs", json={"kind": "noop", "delay_s": 3600}).json()
    assert job["state"] == "scheduled"
    problem(http.delete(f"/v1/jobs/{job['id']}"), 409, "invalid-state")
    assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["state"] == "cancelled"
    problem(http.post(f"/v1/jobs/{job['id']}/cancel"), 409, "invalid-state")
    assert http.post(f"/v1/jobs/{job['id']}/retry").json()["state"] == "queued"
    problem(http.post(f"/v1/jobs/{job['id']}/retry"), 409, "invalid-state")
    http.post(f"/v1/jobs/{job['id']}/cancel")
    assert http.delete(f"/v1/jobs/{job['id']}").status_code == 204
    problem(http.get(f"/v1/jobs/{job['id']}"), 404, "job-not-found")
    problem(http.post("/v1/jobs/nope/cancel"), 404, "job-not-found")


def test_sse_streams_until_the_end_and_resumes(api: ApiServer, http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "demo.count", "input": {"to": 3, "delay": 0}}).json()
    api.run_worker()
    full = sse_events(http.get(f"/v1/jobs/{job['id']}/events").text)
    states = [e["data"]["state"] for e in full if e["type"] == "state"]
    assert states == ["queued", "running", "succeeded"]
    assert any(e["type"] == "progress" for e in full)
    assert [e["seq"] for e in full] == sorted(e["seq"] for e in full)
    middle = full[1]["seq"]
    resumed = http.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": str(middle)})
    assert [e["seq"] for e in sse_events(resumed.text)] == [e["seq"] for e in full[2:]]
    problem(http.get("/v1/jobs/nope/events"), 404, "job-not-found")


def test_sse_follows_a_live_job(api: ApiServer) -> None:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        job = http.post(
            "/v1/jobs", json={"kind": "demo.count", "input": {"to": 2, "delay": 0.05}}
        ).json()
        snapshot = sse_events(http.get(f"/v1/jobs/{job['id']}/events?follow=false").text)
        assert [e["data"]["state"] for e in snapshot] == ["queued"]
        with http.stream(
            "GET",
            f"/v1/jobs/{job['id']}/events",
            headers={"Last-Event-ID": str(snapshot[-1]["seq"])},
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            api.run_worker()
            text = "".join(stream.iter_text())
    live = sse_events(text)
    assert live[0]["seq"] > snapshot[-1]["seq"]
    assert live[-1]["data"]["state"] == "succeeded"


def test_catalog_health_metrics_docs(api: ApiServer, http: httpx.Client) -> None:
    kinds = {k["name"]: k for k in http.get("/v1/kinds").json()}
    assert kinds["demo.sleep"]["input_schema"]["properties"]["seconds"]
    assert http.get("/v1/kinds/demo.sleep").json()["examples"] == [{"seconds": 2}]
    problem(http.get("/v1/kinds/nope"), 404, "kind-not-found")
    queues = {q["name"]: q for q in http.get("/v1/queues").json()}
    assert "default" in queues
    assert http.get("/v1/workers").status_code == 200
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json() == {"status": "ready"}
    http.post("/v1/jobs", json={"kind": "noop", "tags": ["metrics"]})
    http.post("/v1/jobs", json={"kind": "demo.fail", "input": {"permanent": True}})
    api.run_worker()
    text = http.get("/metrics").text
    # What the chart's alert rules and the Grafana dashboard read (deploy/monitoring).
    assert re.search(r"^conveyor_store_up 1\.0$", text, re.M)
    assert re.search(r'^conveyor_queue_workers\{queue="default"\} 0\.0$', text, re.M)
    assert re.search(r"^conveyor_webhook_pending 0\.0$", text, re.M)
    assert "conveyor_webhook_oldest_pending_age_seconds 0.0" in text
    assert 'conveyor_job_failures_total{kind="demo.fail",reason="error"} 1.0' in text
    assert 'conveyor_queue_jobs{queue="default",state="queued"}' in text
    assert 'conveyor_job_transitions_total{kind="noop",state="succeeded"}' in text
    assert "conveyor_job_duration_seconds_bucket" in text
    assert "conveyor_job_wait_seconds_bucket" in text
    assert 'conveyor_http_requests_total{method="GET",route="/v1/queues",status="200"}' in text
    doc = http.get("/openapi.json").json()
    union = doc["components"]["schemas"]["TypedNewJob"]
    assert union["discriminator"]["propertyName"] == "kind"
    assert "demo.sleep" in union["discriminator"]["mapping"]
    member = doc["components"]["schemas"]["NewJob_demo_sleep"]
    assert member["properties"]["input"]["properties"]["seconds"]["maximum"] == 86400
    assert http.get("/docs").status_code == 200
    ids = [op["operationId"] for path in doc["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids)), "every operationId must be unique (OpenAPI)"
    problem(http.get("/v1/nothing-here"), 404, "not-found")


def test_submit_warns_when_no_live_worker_serves_it(api: ApiServer, http: httpx.Client) -> None:
    """A job nobody can run says so in the submit answer instead of waiting silently."""
    from tests.integration.harness import start_worker, stop, wait_for, worker_env

    alone = http.post("/v1/jobs", json={"kind": "noop", "queue": "unserved-q"}).json()
    assert "no live worker serves kind 'noop' in queue 'unserved-q'" in alone["warning"]
    home = api.home / "warn"
    env = worker_env(home, CONVEYOR_IMPORTS="conveyor.kinds.demo")  # not tests.testkinds
    worker = start_worker(api.store_url, home, "-c", "1", "-q", "served-q", env=env)
    try:
        wait_for(
            lambda: any("served-q" in w["queues"] for w in http.get("/v1/workers").json()),
            timeout=60, what="the worker's first beat",
        )  # fmt: skip
        served = wait_for(
            lambda: (r := http.post("/v1/jobs", json={"kind": "noop", "queue": "served-q"}).json())
            and r.get("warning") is None and r,
            timeout=10, what="a submit without a warning",
        )  # fmt: skip
        assert served["queue"] == "served-q"
        # A kind the worker did not import is not served by it, even in its queue.
        other = http.post("/v1/jobs", json={"kind": "test.block", "queue": "served-q",
                                            "input": {"dir": "/nonexistent"}}).json()  # fmt: skip
        assert "kind 'test.block'" in (other.get("warning") or ""), other
    finally:
        stop(worker)
