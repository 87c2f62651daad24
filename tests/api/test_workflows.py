"""/v1/workflows through a real API and real workers on SQLite: references and conditions,
failure policies, validation problems naming the step, cancel and retry, the SSE stream, the
client and the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.client import Client
from conveyor.models import JobFilter
from conveyor.workflows import Flow, ref
from tests.api.conftest import ApiServer
from tests.api.test_api_jobs import problem
from tests.blocked import needs_blocked
from tests.integration.harness import start_worker, stop, wait_for, worker_env


def submit(http: httpx.Client, steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    response = http.post("/v1/workflows", json={"steps": steps, **extra})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/v1/workflows/{body['id']}"
    return body


def states(workflow: dict[str, Any]) -> dict[str, str]:
    return {step["name"]: step["state"] for step in workflow["steps"]}


def step(workflow: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in workflow["steps"] if s["name"] == name)
    return found


def finish(api: ApiServer, http: httpx.Client, workflow_id: str) -> dict[str, Any]:
    """Run a burst worker until nothing waits; the workflow then."""
    api.run_worker()
    body: dict[str, Any] = http.get(f"/v1/workflows/{workflow_id}").json()
    return body


@needs_blocked()
def test_results_flow_downstream_and_conditions_choose_branches(
    api: ApiServer, http: httpx.Client
) -> None:
    created = submit(http, {
        "count": {"kind": "demo.count", "input": {"to": 4, "delay": 0}},
        "double": {"kind": "demo.count",
                   "input": {"to": {"$ref": "steps.count.result.sum"}, "delay": 0}},
        "big": {"kind": "noop", "when": {"ref": "steps.count.result.sum", "op": "ge",
                                          "value": 10}},
        "small": {"kind": "noop", "when": {"ref": "steps.count.result.sum", "op": "lt",
                                            "value": 10}},
        "after_small": {"kind": "noop", "depends_on": ["small"]},
        "join": {"kind": "noop", "depends_on": ["double", "big", "small"],
                 "when": {"any": [{"step": "big", "state": "succeeded"},
                                  {"step": "small", "state": "succeeded"}]}},
    }, name="branches", tags=["t"])  # fmt: skip
    assert created["state"] == "pending"
    assert created["progress"] == {"done": 0, "total": 6, "blocked": 5, "queued": 1}
    assert step(created, "join")["depends_on"] == ["double", "big", "small"]
    jobs = http.get("/v1/jobs", params={"limit": 10}).json()["jobs"]
    assert {j["step"] for j in jobs if j["workflow_id"] == created["id"]} == set(states(created))

    done = finish(api, http, created["id"])
    assert done["state"] == "succeeded", done
    assert states(done) == {
        "count": "succeeded",
        "double": "succeeded",
        "big": "succeeded",
        "small": "skipped",
        "after_small": "skipped",
        "join": "succeeded",
    }
    assert step(done, "double")["result"] == {"total": 10, "sum": 55}
    assert step(done, "small")["error"]["reason"] == "skipped"
    assert done["progress"]["done"] == 6 and done["finished_at"] is not None
    listed = http.get("/v1/workflows", params={"state": "succeeded"}).json()["workflows"]
    assert created["id"] in [w["id"] for w in listed]
    # The step's job keeps its input as submitted (the template); it ran with the resolved value.
    job = http.get(f"/v1/jobs/{step(done, 'double')['job_id']}").json()
    assert job["input"]["to"] == {"$ref": "steps.count.result.sum"}


@needs_blocked()
def test_a_fatal_failure_stops_the_workflow_and_runs_its_handler(
    api: ApiServer, http: httpx.Client, tmp_path: Path
) -> None:
    created = submit(http, {
        # tolerant first (its failure is tolerated: gate still runs), then gate, whose
        # failure is fatal: no other step starts, but its handler does.
        "gate": {"kind": "test.step_gate", "input": {"dir": str(tmp_path)},
                 "depends_on": ["tolerant"], "on_failure": {"run": "alert"}},
        "alert": {"kind": "noop"},
        "after": {"kind": "noop", "depends_on": ["gate"]},
        "tolerant": {"kind": "test.step_gate", "input": {"dir": str(tmp_path / "none")},
                     "on_failure": "continue"},
        "uses_tolerant": {"kind": "demo.count", "depends_on": ["tolerant", "gate"],
                          "input": {"to": {"$ref": "steps.tolerant.result.attempt",
                                           "default": 2}, "delay": 0}},
    })  # fmt: skip
    done = finish(api, http, created["id"])
    assert done["state"] == "failed"
    assert states(done) == {
        "gate": "failed",
        "alert": "succeeded",
        "after": "upstream_failed",
        "tolerant": "failed",
        "uses_tolerant": "upstream_failed",
    }

    # Fix the cause and retry: the failed and stopped steps run again; alert keeps its result.
    (tmp_path / "open").touch()
    retried = http.post(f"/v1/workflows/{created['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert retried.json()["state"] in ("pending", "running")
    again = finish(api, http, created["id"])
    assert states(again) == {
        "gate": "succeeded",
        "alert": "succeeded",
        "after": "succeeded",
        "tolerant": "failed",
        "uses_tolerant": "succeeded",
    }
    assert again["state"] == "succeeded"  # tolerant's failure does not count
    assert step(again, "uses_tolerant")["result"] == {"total": 2, "sum": 3}
    problem(http.post(f"/v1/workflows/{created['id']}/retry"), 409, "invalid-state")
    problem(http.post(f"/v1/workflows/{created['id']}/cancel"), 409, "invalid-state")


@pytest.mark.parametrize(
    ("steps", "where", "text"),
    [
        ({"a": {"kind": "noop", "depends_on": ["b"]}, "b": {"kind": "noop", "depends_on": ["a"]}},
         "a", "cycle"),
        ({"a": {"kind": "noop", "depends_on": ["zz"]}}, "a", "unknown step 'zz'"),
        ({"a": {"kind": "no.such.kind"}}, "a", "unknown kind"),
        ({"a": {"kind": "noop"}, "b": {"kind": "demo.count", "input": {"to": 0}}}, "b",
         "minimum of 1"),
        ({"c": {"kind": "demo.count"},
          "d": {"kind": "demo.count", "input": {"to": {"$ref": "steps.c.result.nope"}}}},
         "d", "no output field 'nope'"),
        ({"e": {"kind": "noop", "input": {"x": {"$ref": "c.result"}}}}, "e", "steps.<step>"),
    ],
)  # fmt: skip
def test_mistakes_are_refused_naming_the_step(
    http: httpx.Client, steps: dict[str, Any], where: str, text: str
) -> None:
    before = http.get("/v1/workflows").json()["workflows"]
    body = problem(http.post("/v1/workflows", json={"steps": steps}), 422, "invalid-workflow")
    assert body["step"] == where
    assert text in body["detail"], body
    assert body["errors"][0]["loc"][:2] == ["steps", where]
    assert http.get("/v1/workflows").json()["workflows"] == before  # nothing was stored


def test_shape_errors_and_unknown_workflows(http: httpx.Client) -> None:
    problem(http.post("/v1/workflows", json={"steps": {}}), 422, "invalid-request")
    bad_name = {"steps": {"a.b": {"kind": "noop"}}}
    problem(http.post("/v1/workflows", json=bad_name), 422, "invalid-request")
    problem(http.get("/v1/workflows/nope"), 404, "workflow-not-found")
    problem(http.post("/v1/workflows/nope/cancel"), 404, "workflow-not-found")


@needs_blocked()
def test_cancel_stops_running_and_blocked_steps_and_retry_resumes(
    api: ApiServer, http: httpx.Client, tmp_path: Path
) -> None:
    created = submit(http, {
        "first": {"kind": "test.block", "input": {"dir": str(tmp_path), "name": "first"}},
        "second": {"kind": "noop", "depends_on": ["first"]},
    })  # fmt: skip
    env = worker_env(api.home, CONVEYOR_CANCEL_GRACE_S="0.2")
    worker = start_worker(api.store_url, api.home, "-c", "1", env=env)
    try:
        wait_for(lambda: list(tmp_path.glob("first.*.started")), 60, what="first started")
        cancelled = http.post(f"/v1/workflows/{created['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["cancel_requested"] is True
        done = wait_for(
            lambda: (w := http.get(f"/v1/workflows/{created['id']}").json())["state"]
            == "cancelled" and w, 60, what="the workflow cancelled",
        )  # fmt: skip
        assert states(done) == {"first": "cancelled", "second": "cancelled"}

        (tmp_path / "release").touch()
        retried = http.post(f"/v1/workflows/{created['id']}/retry").json()
        assert retried["cancel_requested"] is False
        again = wait_for(
            lambda: (w := http.get(f"/v1/workflows/{created['id']}").json())["state"]
            == "succeeded" and w, 60, what="the workflow succeeded after its retry",
        )  # fmt: skip
        assert states(again) == {"first": "succeeded", "second": "succeeded"}
    finally:
        stop(worker)


def test_the_event_stream_follows_the_workflow(api: ApiServer, http: httpx.Client) -> None:
    created = submit(http, {"a": {"kind": "noop"}, "b": {"kind": "noop", "depends_on": ["a"]}})
    finish(api, http, created["id"])
    text = http.get(f"/v1/workflows/{created['id']}/events").text
    messages = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        messages.append((fields["event"], json.loads(fields["data"])))
    steps = {data["step"]: data["state"] for event, data in messages if event == "step"}
    assert steps == {"a": "succeeded", "b": "succeeded"}
    assert messages[-1][0] == "workflow" and messages[-1][1]["state"] == "succeeded"


@needs_blocked()
def test_the_client_and_the_builder(api: ApiServer) -> None:
    flow = Flow("built")
    first = flow.step("first", "demo.count", {"to": 3, "delay": 0})
    flow.step("second", "demo.count", {"to": ref(first, "total"), "delay": 0})
    with Client(api.url) as client:
        created = client.submit_workflow(flow)
        assert created.progress.total == 2
        api.run_worker()
        done = client.wait_workflow(created.id, timeout=30)
        assert done.state == "succeeded"
        assert done.steps[1].result == {"total": 3, "sum": 6}
        newer = client.submit_workflow(flow.document())
        page = client.list_workflows(limit=1)
        assert [w.id for w in page.workflows] == [newer.id]  # newest first
        assert page.next_cursor is not None
        older = client.list_workflows(cursor=page.next_cursor, limit=1).workflows
        assert [w.id for w in older] == [created.id]
        client.cancel_workflow(newer.id)


def test_jobs_filter_by_workflow_and_parent(api: ApiServer, http: httpx.Client) -> None:
    created = submit(http, {"fan": {"kind": "demo.fanout", "input": {"n": 3}}})
    finish(api, http, created["id"])
    steps = http.get("/v1/jobs", params={"workflow_id": created["id"]}).json()["jobs"]
    assert [(j["step"], j["state"]) for j in steps] == [("fan", "succeeded")]
    assert steps[0]["result"] == {"children": 3, "succeeded": 3}
    children = http.get("/v1/jobs", params={"parent_id": steps[0]["id"]}).json()["jobs"]
    assert len(children) == 3 and {c["kind"] for c in children} == {"noop"}
    with Client(api.url) as client:
        page = client.list_jobs(JobFilter(parent_id=steps[0]["id"]))
        assert {j.id for j in page.jobs} == {c["id"] for c in children}
