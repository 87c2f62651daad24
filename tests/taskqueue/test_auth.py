"""API keys and scopes on the v1beta2 routes: answers in Google's error shape."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conveyor.api.auth import create_key
from conveyor.taskqueue.client import TaskQueueClient, TaskQueueHTTPError
from tests.api.conftest import ApiServer, running_api

PATH = "/taskqueue/v1beta2/projects/b~proj/taskqueues/secured"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, str, str]]:
    with running_api(tmp_path_factory.mktemp("tq-auth")) as server:
        store = server.open_store()
        try:
            _, reader = create_key(store, "reader", ["read"])
            _, worker = create_key(store, "daemon", ["submit", "work"])
        finally:
            store.close()
        yield server, reader, worker


def test_no_key_is_a_google_shaped_401(secured: tuple[ApiServer, str, str]) -> None:
    api, _, _ = secured
    response = httpx.get(f"{api.url}{PATH}/tasks")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_scopes(secured: tuple[ApiServer, str, str]) -> None:
    api, reader, worker = secured
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert httpx.get(f"{api.url}{PATH}/tasks", headers=as_reader).status_code == 200
    denied = httpx.post(f"{api.url}{PATH}/tasks/lease", headers=as_reader,
                        params={"leaseSecs": 10, "numTasks": 1})  # fmt: skip
    assert denied.status_code == 403
    assert denied.json()["error"]["errors"][0]["reason"] == "forbidden"
    client = TaskQueueClient(api.url, "proj", "secured", token=worker)
    try:
        task = client.insert({"n": 1}, "t")
        assert [t["id"] for t in client.lease(5, 30, "t")] == [task["id"]]
        client.delete(task["id"])
        with pytest.raises(TaskQueueHTTPError) as caught:
            client.delete(task["id"])
        assert caught.value.status == 404
    finally:
        client.close()
