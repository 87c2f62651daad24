"""/v1/limits and the queue controls through a real `conveyor api` on SQLite: an admin's
change is obeyed by the next lease without any restart; what waits behind a limit shows; a
paused queue hands out nothing; purge cancels what waits; unique keys return the first job."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_api_jobs import problem


def lease(client: httpx.Client, queue: str, n: int = 10) -> list[dict[str, Any]]:
    r = client.post(f"/v1/queues/{queue}/lease", json={"n": n, "lease_s": 60})
    assert r.status_code == 200, r.text
    return list(r.json()["jobs"])


def submit(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post("/v1/jobs", json={"kind": "noop", **body})


def test_an_admins_limit_is_obeyed_at_the_next_lease(scoped: dict[str, httpx.Client]) -> None:
    admin, worker = scoped["admin"], scoped["work"]
    r = admin.put("/v1/limits/queue:lim1", json={"max_running": 1})
    assert r.status_code == 200, r.text
    assert r.json()["source"] == "admin" and r.json()["by"] == "admin"
    ids = [submit(scoped["submit"], queue="lim1").json()["id"] for _ in range(3)]
    assert len(lease(worker, "lim1")) == 1
    waiting = admin.get(f"/v1/jobs/{ids[2]}").json()
    assert waiting["state"] == "queued" and waiting["waiting_reason"] == "concurrency_limited"
    view = scoped["read"].get("/v1/limits/queue:lim1").json()
    assert (view["running"], view["waiting"], view["held"]) == (1, 2, 2)
    admin.put("/v1/limits/queue:lim1", json={"max_running": 2})  # no restart of anything
    assert len(lease(worker, "lim1")) == 1
    assert admin.delete("/v1/limits/queue:lim1").status_code == 204
    assert len(lease(worker, "lim1")) == 1
    problem(admin.get("/v1/limits/queue:lim1"), 404, "limit-not-found")
    problem(admin.delete("/v1/limits/queue:lim1"), 404, "limit-not-found")


def test_a_kind_rate_limit_is_listed(scoped: dict[str, httpx.Client]) -> None:
    admin = scoped["admin"]
    admin.put("/v1/limits/kind:noop", json={"rate": 1000, "per_s": 1})
    listed = scoped["read"].get("/v1/limits").json()
    mine = next(v for v in listed if v["target"] == "kind:noop")
    assert mine["rate"] == 1000 and mine["per_s"] == 1 and mine["max_running"] is None
    admin.delete("/v1/limits/kind:noop")


def test_bad_limits_are_problems(scoped: dict[str, httpx.Client]) -> None:
    admin = scoped["admin"]
    problem(admin.put("/v1/limits/queue:q", json={}), 422, "invalid-request")  # neither
    problem(admin.put("/v1/limits/table:q", json={"max_running": 1}), 422, "invalid-request")
    body = {"max_running": 1, "strategy": "cancel_newest"}
    found = problem(admin.put("/v1/limits/queue:q", json=body), 422, "invalid-request")
    assert "applies to key:" in found["detail"]
    problem(admin.put("/v1/limits/queue:q", json={"rate": 0}), 422, "invalid-request")
    problem(scoped["read"].put("/v1/limits/queue:q", json={"rate": 5}), 403, "forbidden")
    problem(scoped["submit"].delete("/v1/limits/queue:q"), 403, "forbidden")


def test_pause_resume_and_purge_a_queue(scoped: dict[str, httpx.Client]) -> None:
    admin, worker = scoped["admin"], scoped["work"]
    first = submit(scoped["submit"], queue="ctl").json()["id"]
    paused = admin.post("/v1/queues/ctl/pause")
    assert paused.status_code == 200 and paused.json()["paused"] is True
    assert lease(worker, "ctl") == []
    assert admin.get(f"/v1/jobs/{first}").json()["waiting_reason"] == "queue_paused"
    stats = {q["name"]: q for q in scoped["read"].get("/v1/queues").json()}
    assert stats["ctl"]["paused"] is True
    assert admin.post("/v1/queues/ctl/resume").json()["paused"] is False
    assert [j["job"]["id"] for j in lease(worker, "ctl")] == [first]
    later = [submit(scoped["submit"], queue="ctl", delay_s=60 * i).json()["id"] for i in range(3)]
    purged = admin.post("/v1/queues/ctl/purge")
    assert purged.json() == {"queue": "ctl", "purged": 3}
    assert {admin.get(f"/v1/jobs/{i}").json()["state"] for i in later} == {"cancelled"}
    assert admin.get(f"/v1/jobs/{first}").json()["state"] == "running"  # left alone
    for path in ("pause", "resume", "purge"):
        problem(scoped["submit"].post(f"/v1/queues/ctl/{path}"), 403, "forbidden")
    problem(admin.post("/v1/queues/bad%20name/pause"), 422, "invalid-request")


def test_unique_key_returns_the_waiting_job(scoped: dict[str, httpx.Client]) -> None:
    client = scoped["submit"]
    one = submit(client, queue="uq", unique_key="report:42")
    two = submit(client, queue="uq", unique_key="report:42", input={})
    assert one.status_code == 201 and two.status_code == 200
    assert one.json()["id"] == two.json()["id"] and one.json()["unique_key"] == "report:42"
    other = submit(client, queue="uq", unique_key="report:43")
    assert other.status_code == 201 and other.json()["id"] != one.json()["id"]
    problem(submit(client, unique_scope="forever"), 422, "invalid-request")
    problem(submit(client, unique_key="k", unique_window_s=0), 422, "invalid-request")
