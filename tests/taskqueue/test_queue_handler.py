"""The original render service's client (`QueueHandler`), unchanged, against conveyor."""

from __future__ import annotations

import time
import uuid

from tests.api.conftest import ApiServer
from tests.taskqueue.queue_handler import QueueHandler


def handler(api: ApiServer, queue: str) -> QueueHandler:
    return QueueHandler(
        "cs-unplugged", queue, discovery_url=f"{api.url}/api/{{api}}/{{apiVersion}}"
    )


def test_queue_handler_round_trip(api: ApiServer, queue: str) -> None:
    tq = handler(api, queue)
    assert len(tq) == 0, "a queue that never had a task: 404, which the client reads as empty"
    ids = [tq.create_task({"n": n}, tag="task" if n else None) for n in range(3)]
    assert all(ids)
    assert len(tq) == 3
    listed = tq.list_tasks()  # checks `kind == "taskqueue#tasks"`, else returns []
    assert [t["id"] for t in listed] == ids
    assert [t["payload"] for t in listed] == [{"n": 0}, {"n": 1}, {"n": 2}]
    leased = tq.lease_tasks(tasks_to_fetch=5, lease_secs=60, tag="task")
    assert [t["payload"] for t in leased] == [{"n": 1}, {"n": 2}]
    patched = tq.update_task(leased[0]["id"], new_lease_secs=1)
    assert patched is not None
    assert patched["leaseTimestamp"] <= (time.time() + 1.5) * 1_000_000
    assert tq.delete_task(leased[1]["id"]) is True
    assert len(tq) == 2


def test_queue_handler_sees_an_unknown_task_as_an_error(api: ApiServer, queue: str) -> None:
    tq = handler(api, queue)
    assert tq.update_task(str(uuid.uuid4()), 1) is None
    assert tq.delete_task("nope") is False
