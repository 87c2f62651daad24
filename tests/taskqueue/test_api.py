"""Task Queue v1beta2 through google-api-python-client against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from googleapiclient.errors import HttpError

from tests.api.conftest import ApiServer
from tests.integration.harness import ROOT, wait_for
from tests.taskqueue.conftest import decode, encode, insert, lease

NOW_TOLERANCE_US = 10_000_000  # timestamps within 10 s of now, in microseconds


def now_us() -> int:
    return int(time.time() * 1_000_000)


def status_of(call: Any) -> int:
    with pytest.raises(HttpError) as caught:
        call.execute()
    return int(caught.value.resp.status)


def test_discovery_is_served_at_both_paths(api: ApiServer) -> None:
    short = httpx.get(f"{api.url}/api/taskqueue/v1beta2").json()
    long = httpx.get(f"{api.url}/discovery/v1/apis/taskqueue/v1beta2/rest").json()
    assert short == long
    assert short["id"] == "taskqueue:v1beta2"
    assert short["baseUrl"] == f"{api.url}/taskqueue/v1beta2/projects/"
    assert set(short["resources"]["tasks"]["methods"]) == {
        "insert", "list", "get", "lease", "update", "patch", "delete"}  # fmt: skip
    missing = httpx.get(f"{api.url}/api/other/v1")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == 404


def test_insert_get_list_with_fields_and_units(tq: Any, queue: str, api: ApiServer) -> None:
    first = insert(tq, queue, {"n": 1}, tag="alpha")
    second = insert(tq, queue, b"not json at all")
    assert first["kind"] == "taskqueues#task"
    assert first["queueName"] == queue
    assert decode(first) == {"n": 1}
    assert abs(first["enqueueTimestamp"] - now_us()) < NOW_TOLERANCE_US
    assert abs(first["leaseTimestamp"] - now_us()) < NOW_TOLERANCE_US  # leasable at once
    assert first["retry_count"] == 0
    assert (first["tag"], second["tag"]) == ("alpha", "")
    got = tq.tasks().get(project="proj", taskqueue=queue, task=first["id"]).execute()
    assert got == first
    listed = tq.tasks().list(project="proj", taskqueue=queue).execute()
    assert [t["id"] for t in listed["items"]] == [first["id"], second["id"]]
    # The tasks are conveyor jobs: visible in /v1/jobs with the tag as a job tag.
    job = httpx.get(f"{api.url}/v1/jobs/{first['id']}").json()
    assert (job["kind"], job["queue"], job["tags"]) == (
        "taskqueue.task",
        f"proj.{queue}",
        ["alpha"],
    )


def test_named_task_and_duplicate_name(tq: Any, queue: str) -> None:
    task = insert(tq, queue, {"n": 1}, id="report-42")
    assert task["id"] == "report-42"
    got = tq.tasks().get(project="proj", taskqueue=queue, task="report-42").execute()
    assert decode(got) == {"n": 1}
    body = {"queueName": queue, "payloadBase64": encode({"n": 2}), "id": "report-42"}
    assert status_of(tq.tasks().insert(project="b~proj", taskqueue=queue, body=body)) == 409


def test_lease_by_tag_returns_pre_increment_retry_count(tq: Any, queue: str) -> None:
    insert(tq, queue, {"i": 0})
    tagged = [insert(tq, queue, {"i": i}, tag="a") for i in (1, 2)]
    insert(tq, queue, {"i": 3}, tag="b")
    leased = lease(tq, queue, n=10, secs=120, groupByTag=True, tag="a")
    assert sorted(t["id"] for t in leased) == sorted(t["id"] for t in tagged)
    assert all(t["retry_count"] == 0 for t in leased)
    assert all(abs(t["leaseTimestamp"] - (now_us() + 120_000_000)) < NOW_TOLERANCE_US
               for t in leased)  # fmt: skip
    stored = tq.tasks().get(project="proj", taskqueue=queue, task=tagged[0]["id"]).execute()
    assert stored["retry_count"] == 1
    assert lease(tq, queue, n=10, groupByTag=True, tag="a") == []  # all leased


def test_lease_groups_by_the_oldest_tasks_tag(tq: Any, queue: str) -> None:
    b1 = insert(tq, queue, {"i": 1}, tag="b")
    insert(tq, queue, {"i": 2}, tag="a")
    b2 = insert(tq, queue, {"i": 3}, tag="b")
    leased = lease(tq, queue, n=10, groupByTag=True)
    assert [t["id"] for t in leased] == [b1["id"], b2["id"]]
    # The empty tag is a group too.
    other = f"{queue}-x"
    u1 = insert(tq, other, {"i": 1})
    insert(tq, other, {"i": 2}, tag="t")
    u2 = insert(tq, other, {"i": 3})
    assert [t["id"] for t in lease(tq, other, n=10, groupByTag=True)] == [u1["id"], u2["id"]]


def test_group_by_tag_false_is_false(tq: Any, queue: str) -> None:
    """The original parsed `groupByTag=false` as true; here it leases every tag."""
    insert(tq, queue, {"i": 1}, tag="x")
    insert(tq, queue, {"i": 2}, tag="y")
    assert len(lease(tq, queue, n=10, groupByTag=False)) == 2


def test_lease_expiry_and_re_lease(tq: Any, queue: str) -> None:
    task = insert(tq, queue, {"i": 1})
    assert [t["id"] for t in lease(tq, queue, n=5, secs=1)] == [task["id"]]
    assert lease(tq, queue, n=5, secs=1) == []  # still leased
    again = wait_for(lambda: lease(tq, queue, n=5, secs=30), timeout=15, interval=0.2)
    assert [t["id"] for t in again] == [task["id"]]
    assert again[0]["retry_count"] == 1  # the second lease shows one lease before it
    got = tq.tasks().get(project="proj", taskqueue=queue, task=task["id"]).execute()
    assert got["retry_count"] == 2


def test_patch_and_update_extend_the_lease(tq: Any, queue: str) -> None:
    task = insert(tq, queue, {"i": 1})
    leased = lease(tq, queue, n=1, secs=60)[0]
    body = {"queueName": queue}
    patched = tq.tasks().patch(project="b~proj", taskqueue=queue, task=task["id"],
                               newLeaseSeconds=600, body=body).execute()  # fmt: skip
    assert abs(patched["leaseTimestamp"] - (now_us() + 600_000_000)) < NOW_TOLERANCE_US
    updated = tq.tasks().update(project="b~proj", taskqueue=queue, task=task["id"],
                                newLeaseSeconds=5, body=leased).execute()  # fmt: skip
    assert abs(updated["leaseTimestamp"] - (now_us() + 5_000_000)) < NOW_TOLERANCE_US
    assert updated["retry_count"] == 1
    wrong_id = {**leased, "id": "someone-else"}
    call = tq.tasks().update(project="b~proj", taskqueue=queue, task=task["id"],
                             newLeaseSeconds=5, body=wrong_id)  # fmt: skip
    assert status_of(call) == 400
    wrong_queue = {**leased, "queueName": "another-queue"}
    call = tq.tasks().update(project="b~proj", taskqueue=queue, task=task["id"],
                             newLeaseSeconds=5, body=wrong_queue)  # fmt: skip
    assert status_of(call) == 400


def test_patch_refused_when_not_leased_or_expired(tq: Any, queue: str) -> None:
    task = insert(tq, queue, {"i": 1})
    body = {"queueName": queue}
    never = tq.tasks().patch(project="b~proj", taskqueue=queue, task=task["id"],
                             newLeaseSeconds=10, body=body)  # fmt: skip
    assert status_of(never) == 409
    leased = lease(tq, queue, n=1, secs=1)[0]
    wait_for(lambda: now_us() > leased["leaseTimestamp"] + 50_000, timeout=5)
    late = tq.tasks().patch(project="b~proj", taskqueue=queue, task=task["id"],
                            newLeaseSeconds=10, body=body)  # fmt: skip
    assert status_of(late) == 410


def test_delete_acknowledges(tq: Any, queue: str, api: ApiServer) -> None:
    leased_task = insert(tq, queue, {"i": 1})
    waiting_task = insert(tq, queue, {"i": 2}, tag="later")
    lease(tq, queue, n=1, groupByTag=True, tag="")
    tq.tasks().delete(project="b~proj", taskqueue=queue, task=leased_task["id"]).execute()
    tq.tasks().delete(project="b~proj", taskqueue=queue, task=waiting_task["id"]).execute()
    for task in (leased_task, waiting_task):
        get = tq.tasks().get(project="proj", taskqueue=queue, task=task["id"])
        assert status_of(get) == 404
        again = tq.tasks().delete(project="b~proj", taskqueue=queue, task=task["id"])
        assert status_of(again) == 404
    assert tq.tasks().list(project="proj", taskqueue=queue).execute()["items"] == []
    states = [httpx.get(f"{api.url}/v1/jobs/{t['id']}").json()["state"]
              for t in (leased_task, waiting_task)]  # fmt: skip
    assert states == ["succeeded", "cancelled"]
    unknown = tq.tasks().delete(project="b~proj", taskqueue=queue, task="no-such-task")
    assert status_of(unknown) == 404


def test_get_stats(tq: Any, queue: str) -> None:
    first = insert(tq, queue, {"i": 1})
    insert(tq, queue, {"i": 2})
    insert(tq, queue, {"i": 3})
    lease(tq, queue, n=2)
    plain = tq.taskqueues().get(project="proj", taskqueue=queue).execute()
    assert plain == {"kind": "taskqueues#taskqueue", "id": queue}
    stats = tq.taskqueues().get(project="proj", taskqueue=queue, getStats=True).execute()["stats"]
    assert stats == {"totalTasks": 3, "oldestTask": first["enqueueTimestamp"],
                     "leasedLastMinute": 2, "leasedLastHour": 2}  # fmt: skip
    unknown = tq.taskqueues().get(project="proj", taskqueue=f"{queue}-never", getStats=True)
    assert status_of(unknown) == 404  # Google's answer; the mimic said 200 for any name


def test_another_queue_or_project_does_not_see_the_task(tq: Any, queue: str) -> None:
    task = insert(tq, queue, {"i": 1})
    assert status_of(tq.tasks().get(project="proj", taskqueue=f"{queue}-2", task=task["id"])) == 404
    assert status_of(tq.tasks().get(project="other", taskqueue=queue, task=task["id"])) == 404


BAD_REQUESTS = [
    ("POST", "/tasks/lease", {}, None, "leaseSecs"),
    ("POST", "/tasks/lease", {"leaseSecs": "10"}, None, "numTasks"),
    ("POST", "/tasks/lease", {"leaseSecs": "10", "numTasks": "1001"}, None, "numTasks"),
    ("POST", "/tasks/lease", {"leaseSecs": "10", "numTasks": "0"}, None, "numTasks"),
    ("POST", "/tasks/lease", {"leaseSecs": "ten", "numTasks": "1"}, None, "leaseSecs"),
    ("POST", "/tasks/lease", {"leaseSecs": "10", "numTasks": "1.5"}, None, "numTasks"),
    ("POST", "/tasks/lease", {"leaseSecs": "10", "numTasks": "1", "groupByTag": "maybe"}, None,
     "groupByTag"),
    ("POST", "/tasks/lease", {"leaseSecs": "10", "numTasks": "1", "tag": "a"}, None,
     "without groupByTag"),
    ("POST", "/tasks", {}, b"{not json", "not JSON"),
    ("POST", "/tasks", {}, b"[1, 2]", "JSON object"),
    ("POST", "/tasks", {}, b"", "body"),
    ("POST", "/tasks", {}, b'{"payloadBase64": "***"}', "base64"),
    ("POST", "/tasks", {}, b'{"payloadBase64": "", "colour": "red"}', "colour"),
    ("POST", "/tasks", {}, b'{"payloadBase64": "", "id": "bad name!"}', "name"),
    ("POST", "/tasks", {}, b'{"payloadBase64": "", "queueName": "elsewhere"}', "queueName"),
    ("PATCH", "/tasks/x", {}, b"{}", "newLeaseSeconds"),
    ("PATCH", "/tasks/x", {"newLeaseSeconds": "-1"}, b"{}", "newLeaseSeconds"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "path", "params", "body", "named"), BAD_REQUESTS)
def test_bad_requests_are_google_shaped_400s(
    api: ApiServer, queue: str, method: str, path: str, params: dict[str, str],
    body: bytes | None, named: str,
) -> None:  # fmt: skip
    url = f"{api.url}/taskqueue/v1beta2/projects/b~proj/taskqueues/{queue}{path}"
    response = httpx.request(method, url, params=params, content=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["errors"][0]["reason"] == "badRequest"
    assert named in error["message"]


@pytest.mark.parametrize(
    ("project", "taskqueue"), [("Bad_Project", "q"), ("proj", "bad.queue"), ("proj", "x" * 101)]
)
def test_bad_names_are_400(api: ApiServer, project: str, taskqueue: str) -> None:
    url = f"{api.url}/taskqueue/v1beta2/projects/{project}/taskqueues/{taskqueue}/tasks"
    response = httpx.get(url)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == 400


def test_missing_task_is_404_for_get_patch_update_delete(tq: Any, queue: str) -> None:
    tasks = tq.tasks()
    kw: dict[str, Any] = {"project": "b~proj", "taskqueue": queue, "task": "nope"}
    assert status_of(tasks.get(**kw)) == 404
    assert status_of(tasks.patch(newLeaseSeconds=1, body={}, **kw)) == 404
    assert status_of(tasks.update(newLeaseSeconds=1, body={}, **kw)) == 404
    assert status_of(tasks.delete(**kw)) == 404


def test_health_alias(api: ApiServer) -> None:
    assert httpx.get(f"{api.url}/_ah/health").json() == httpx.get(f"{api.url}/readyz").json()


def test_tasks_are_jobs_in_the_cli(tq: Any, queue: str, api: ApiServer) -> None:
    task = insert(tq, queue, {"i": 1}, tag="cli")
    shown = subprocess.run(
        [sys.executable, "-m", "conveyor", "jobs", "show", task["id"], "--store", api.store_url,
         "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    job = json.loads(shown.stdout)
    assert (job["kind"], job["state"], job["tags"]) == ("taskqueue.task", "queued", ["cli"])


def test_batch_requests(tq: Any, queue: str, api: ApiServer) -> None:
    """google-api-python-client's `new_batch_http_request()` against `/batch`."""
    answers: dict[str, Any] = {}

    def collect(request_id: str, response: Any, exception: Any) -> None:
        answers[request_id] = exception if exception is not None else response

    first = tq.new_batch_http_request(callback=collect)
    for n in range(3):
        body = {"queueName": queue, "payloadBase64": encode({"n": n}), "tag": "b"}
        first.add(
            tq.tasks().insert(project="b~proj", taskqueue=queue, body=body), request_id=str(n)
        )
    first.add(tq.tasks().get(project="proj", taskqueue=queue, task="nope"), request_id="missing")
    first.execute()
    assert [decode(answers[str(n)]) for n in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert isinstance(answers["missing"], HttpError)
    assert answers["missing"].resp.status == 404
    second = tq.new_batch_http_request(callback=collect)
    second.add(tq.tasks().list(project="proj", taskqueue=queue), request_id="list")
    second.add(
        tq.taskqueues().get(project="proj", taskqueue=queue, getStats=True), request_id="stats"
    )
    second.execute()
    assert [t["id"] for t in answers["list"]["items"]] == [answers[str(n)]["id"] for n in range(3)]
    assert answers["stats"]["stats"]["totalTasks"] == 3

    not_a_batch = httpx.post(f"{api.url}/batch", json={"a": 1})
    assert not_a_batch.status_code == 400
    assert not_a_batch.json()["error"]["errors"][0]["reason"] == "badRequest"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/taskqueue/v1beta2/projects/proj/taskqueues/q/tasks/x/nothing", 404),
        ("GET", "/taskqueue/v1/anything", 404),
        ("PUT", "/taskqueue/v1beta2/projects/proj/taskqueues/q/tasks/lease", 405),
        ("GET", "/batch", 405),
    ],
)
def test_unknown_routes_answer_in_googles_shape(
    api: ApiServer, method: str, path: str, status: int
) -> None:
    response = httpx.request(method, f"{api.url}{path}")
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == status
    assert error["errors"][0]["reason"] == ("notFound" if status == 404 else "methodNotAllowed")
    if status == 405:
        assert "allow" in response.headers
