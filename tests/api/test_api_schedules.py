"""/v1/schedules through a real `conveyor api`: create, read, replace, pause, resume, preview,
delete; problem+json for every bad input; admin scope to change, read scope to look."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.api.test_api_jobs import problem


@pytest.fixture
def clients(scoped: dict[str, httpx.Client]) -> dict[str, httpx.Client]:
    return scoped


def test_create_read_and_preview(clients: dict[str, httpx.Client]) -> None:
    admin = clients["admin"]
    body = {"id": "noon", "kind": "demo.count", "input": {"to": 3}, "cron": "0 12 * * *",
            "timezone": "Europe/Zurich", "overlap": "forbid"}  # fmt: skip
    r = admin.post("/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["source"] == "api" and made["overlap"] == "forbid" and not made["paused"]
    assert made["explain"] == "At 12:00 every day"
    assert len(made["next_runs"]) == 5
    assert made["state"]["last_tick"] is not None  # nothing before its creation is "missed"
    runs = admin.get("/v1/schedules/noon/next", params={"n": 7}).json()["next_runs"]
    local = [datetime.fromisoformat(t).astimezone(ZoneInfo("Europe/Zurich")) for t in runs]
    assert len(local) == 7 and all((t.hour, t.minute) == (12, 0) for t in local)
    assert local == sorted(local) and len({t.date() for t in local}) == 7
    listed = clients["read"].get("/v1/schedules").json()
    assert [s["id"] for s in listed] == ["noon"]
    assert clients["read"].get("/v1/schedules/noon").json()["input"] == {"to": 3}


def test_replace_pause_resume_delete(clients: dict[str, httpx.Client]) -> None:
    admin = clients["admin"]
    admin.post("/v1/schedules", json={"id": "tmp", "kind": "noop", "every_s": 60})
    r = admin.put("/v1/schedules/tmp", json={"kind": "noop", "every_s": 3600})
    assert r.status_code == 200 and r.json()["every_s"] == 3600
    runs = [datetime.fromisoformat(t).timestamp() for t in r.json()["next_runs"]]
    assert all(t % 3600 == 0 for t in runs)
    paused = admin.post("/v1/schedules/tmp/pause").json()
    assert paused["paused"] and paused["next_runs"] == []
    resumed = admin.post("/v1/schedules/tmp/resume").json()
    assert not resumed["paused"] and resumed["next_runs"]
    assert admin.delete("/v1/schedules/tmp").status_code == 204
    problem(admin.get("/v1/schedules/tmp"), 404, "schedule-not-found")
    problem(admin.delete("/v1/schedules/tmp"), 404, "schedule-not-found")


@pytest.mark.parametrize(
    ("body", "status", "type_", "says"),
    [
        ({"id": "b", "kind": "noop", "cron": "61 * * * *"}, 422, "invalid-request", "Bad minute"),
        ({"id": "b", "kind": "noop", "cron": "0 3 * * *", "timezone": "Mars/Base"}, 422,
         "invalid-request", "unknown time zone"),
        ({"id": "b", "kind": "noop"}, 422, "invalid-request", "exactly one of"),
        ({"id": "b c", "kind": "noop", "every_s": 5}, 422, "invalid-request", "pattern"),
        ({"id": "b", "kind": "nope", "every_s": 5}, 404, "kind-not-found", "unknown kind"),
        ({"id": "b", "kind": "demo.count", "input": {"to": "x"}, "every_s": 5}, 422,
         "invalid-input", "input.to"),
        ({"id": "b", "kind": "noop", "every_s": 5, "misfire": "sometimes"}, 422,
         "invalid-request", "misfire"),
    ],
)  # fmt: skip
def test_bad_schedules_are_problems(
    clients: dict[str, httpx.Client], body: dict[str, object], status: int, type_: str, says: str
) -> None:
    found = problem(clients["admin"].post("/v1/schedules", json=body), status, type_)
    assert says in found["detail"]


def test_duplicate_id_is_409(clients: dict[str, httpx.Client]) -> None:
    admin = clients["admin"]
    assert admin.post("/v1/schedules", json={"id": "dup", "kind": "noop", "every_s": 5}).is_success
    problem(admin.post("/v1/schedules", json={"id": "dup", "kind": "noop", "every_s": 9}),
            409, "already-exists")  # fmt: skip
    assert admin.get("/v1/schedules/dup").json()["every_s"] == 5


def test_reading_needs_read_and_changing_needs_admin(clients: dict[str, httpx.Client]) -> None:
    reader = clients["read"]
    problem(reader.post("/v1/schedules", json={"id": "r", "kind": "noop", "every_s": 5}),
            403, "forbidden")  # fmt: skip
    clients["admin"].post("/v1/schedules", json={"id": "r", "kind": "noop", "every_s": 5})
    for method, path in (("POST", "/v1/schedules/r/pause"), ("POST", "/v1/schedules/r/resume"),
                         ("PUT", "/v1/schedules/r"), ("DELETE", "/v1/schedules/r")):  # fmt: skip
        problem(reader.request(method, path, json={"kind": "noop", "every_s": 5}), 403, "forbidden")
    assert reader.get("/v1/schedules/r/next").status_code == 200


def test_openapi_documents_schedules_with_examples(clients: dict[str, httpx.Client]) -> None:
    doc = clients["read"].get("/openapi.json").json()
    create = doc["paths"]["/v1/schedules"]["post"]
    examples = create["requestBody"]["content"]["application/json"]["examples"]
    assert {"cron", "interval"} <= set(examples)
    assert "/v1/schedules/{schedule_id}/next" in doc["paths"]
    assert "/v1/limits/{target}" in doc["paths"] and "/v1/queues/{queue}/purge" in doc["paths"]
