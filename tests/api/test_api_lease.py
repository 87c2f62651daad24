"""The lease API for external workers, fenced by lease tokens, through a real uvicorn."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_api_jobs import problem


def lease_one(http: httpx.Client, queue: str, **body: Any) -> dict[str, Any]:
    r = http.post(f"/v1/queues/{queue}/lease", json={"n": 1, "lease_s": 30, **body})
    assert r.status_code == 200, r.text
    leased: list[dict[str, Any]] = r.json()["jobs"]
    assert len(leased) == 1
    return leased[0]


def test_lease_heartbeat_complete(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "queue": "ext-a"}).json()
    leased = lease_one(http, "ext-a", worker="rust-1")
    assert leased["job"]["id"] == job["id"]
    assert leased["job"]["state"] == "running"
    token = leased["token"]
    beat = http.post(
        f"/v1/jobs/{job['id']}/heartbeat",
        json={
            "token": token,
            "progress": {"current": 1, "total": 2, "message": "half"},
            "logs": ["working"],
        },
    )
    assert beat.json() == {"status": "ok"}
    assert http.get(f"/v1/jobs/{job['id']}").json()["progress"]["message"] == "half"
    out = http.put(
        f"/v1/jobs/{job['id']}/files/out.txt",
        params={"direction": "out", "token": token},
        content=b"result",
    )
    assert out.status_code == 201, out.text
    done = http.post(f"/v1/jobs/{job['id']}/complete", json={"token": token, "result": {"ok": 1}})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "succeeded"
    assert done.json()["result"] == {"ok": 1}
    assert http.get(f"/v1/jobs/{job['id']}/files/out.txt").content == b"result"
    assert http.post("/v1/queues/ext-a/lease", json={"n": 5}).json() == {"jobs": []}


def test_stale_token_gets_409_and_changes_nothing(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "queue": "ext-b"}).json()
    first = lease_one(http, "ext-b")
    released = http.post(f"/v1/jobs/{job['id']}/release", json={"token": first["token"]})
    assert released.json()["state"] == "queued"
    second = lease_one(http, "ext-b")
    assert second["token"] != first["token"]
    before = http.get(f"/v1/jobs/{job['id']}").json()
    stale = first["token"]
    for path, body in [
        ("heartbeat", {"token": stale, "progress": {"current": 9}}),
        ("complete", {"token": stale, "result": "forged"}),
        ("fail", {"token": stale, "error": {"type": "X", "message": "forged"}}),
        ("release", {"token": stale}),
    ]:
        problem(http.post(f"/v1/jobs/{job['id']}/{path}", json=body), 409, "stale-lease")
    problem(
        http.put(
            f"/v1/jobs/{job['id']}/files/o.txt",
            params={"direction": "out", "token": stale},
            content=b"forged",
        ),
        409,
        "stale-lease",
    )
    after = http.get(f"/v1/jobs/{job['id']}").json()
    assert after == before
    assert http.get(f"/v1/jobs/{job['id']}/files").json()["files"] == []
    failed = http.post(
        f"/v1/jobs/{job['id']}/fail",
        json={"token": second["token"], "error": {"type": "Boom", "message": "no"}, "retry": False},
    )
    assert failed.json()["state"] == "failed"
    assert failed.json()["error"]["type"] == "Boom"


def test_cancel_reaches_an_external_worker(http: httpx.Client) -> None:
    job = http.post("/v1/jobs", json={"kind": "noop", "queue": "ext-c"}).json()
    leased = lease_one(http, "ext-c")
    http.post(f"/v1/jobs/{job['id']}/cancel")
    beat = http.post(f"/v1/jobs/{job['id']}/heartbeat", json={"token": leased["token"]})
    assert beat.json() == {"status": "cancel"}
    done = http.post(f"/v1/jobs/{job['id']}/release", json={"token": leased["token"]})
    assert done.json()["state"] == "cancelled"


def test_lease_filters_and_errors(http: httpx.Client) -> None:
    http.post(
        "/v1/jobs",
        json={
            "jobs": [
                {"kind": "noop", "queue": "ext-d"},
                {"kind": "demo.sleep", "queue": "ext-d", "tags": ["gpu"], "input": {"seconds": 0}},
            ]
        },
    )
    tagged = lease_one(http, "ext-d", tag="gpu")
    assert tagged["job"]["kind"] == "demo.sleep"
    by_kind = lease_one(http, "ext-d", kinds=["noop"])
    assert by_kind["job"]["kind"] == "noop"
    problem(http.post("/v1/queues/ext-d/lease", json={"n": 0}), 422, "invalid-request")
    problem(http.post("/v1/queues/bad%20q/lease", json={}), 422, "invalid-request")
    problem(http.post("/v1/jobs/nope/heartbeat", json={"token": "t"}), 404, "job-not-found")
    problem(http.post("/v1/jobs/nope/complete", json={"token": "t"}), 404, "job-not-found")
