"""A workflow's webhook fires on the workflow's own transitions (not on its steps' events), once
per transition, signed, and again for the run a retry starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.kinds.registry import import_kinds
from conveyor.models import JobError
from conveyor.service import Service
from conveyor.storage import open_storage
from conveyor.store import Store, open_store
from conveyor.store.base import complete, fail
from conveyor.webhooks.config import WebhookSettings
from conveyor.webhooks.dispatcher import Dispatcher, deliveries_of
from conveyor.webhooks.signing import generate_secret
from conveyor.workflows import WorkflowSubmit
from conveyor.workflows.gate import Gate
from conveyor.workflows.service import Workflows
from tests.blocked import needs_blocked
from tests.integration.harness import wait_for
from tests.servers.http import serve_in_thread
from tests.webhooks.receiver import Receiver
from tests.webhooks.test_dispatcher import FAST, LOOPBACK


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'conveyor.db'}")
    opened.register_kinds(import_kinds(["conveyor.kinds.demo"]).infos())
    yield opened
    opened.close()


def work(store: Store, failing: set[str]) -> None:
    """Run every claimable step as a worker would (through the gate), failing `failing`."""
    gate = Gate(store)
    while claimed := gate.admit(store.claim(["default"], "test", 10, 30)):
        for job in claimed:
            assert job.lease is not None
            if job.step in failing:
                error = JobError(type="Boom", message="it broke")
                fail(store, job.id, job.lease.token, error, retry=False)
            else:
                complete(store, job.id, job.lease.token, {})


@needs_blocked()
def test_transitions_are_sent_once_each(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONVEYOR_CALLBACK_ALLOW", "127.0.0.0/8")
    secret = generate_secret()
    receiver = Receiver([secret])
    flows = Workflows(Service(store, open_storage(f"file://{tmp_path / 'files'}")))
    with serve_in_thread(receiver.app()) as base:
        doc = WorkflowSubmit.model_validate({
            "name": "hooked", "webhook": {"url": f"{base}/wf", "events": ["workflow.*"]},
            "steps": {"a": {"kind": "noop"}, "b": {"kind": "noop", "depends_on": ["a"]}},
        })  # fmt: skip
        created = flows.submit(doc)
        dispatcher = Dispatcher(store, WebhookSettings(**FAST, secrets=secret), LOOPBACK)
        dispatcher.step()  # pending: nothing to say yet
        assert deliveries_of(store, created.id) == []

        # Run a alone: the workflow is running. Then a second look changes nothing.
        claimed = store.claim(["default"], "test", 1, 30)
        assert claimed[0].lease is not None
        complete(store, claimed[0].id, claimed[0].lease.token, {})
        for _ in range(2):
            dispatcher.last_workflows = 0.0
            dispatcher.step()
        work(store, failing={"b"})
        dispatcher.last_workflows = 0.0
        dispatcher.step()
        wait_for(lambda: len(receiver.delivered()) == 2, 30, what="two workflow webhooks")

        # A retry runs the failed step again: its transitions are sent again.
        flows.retry(created.id)
        work(store, failing=set())
        for _ in range(2):
            dispatcher.last_workflows = 0.0
            dispatcher.step()
        wait_for(lambda: len(receiver.delivered()) == 3, 30, what="the retry's webhook")
        dispatcher.close()

    hits = receiver.delivered()
    payloads: list[dict[str, Any]] = [h.payload for h in hits]
    assert [p["type"] for p in payloads] == [
        "workflow.running",
        "workflow.failed",
        "workflow.succeeded",
    ]
    assert all(h.verified for h in hits)
    assert len({h.id for h in hits}) == 3  # one stable id per transition
    failed = payloads[1]["data"]
    assert failed["workflow_id"] == created.id and failed["name"] == "hooked"
    assert failed["steps"]["b"]["state"] == "failed"
    assert failed["progress"]["done"] == 2
    assert [d["status"] for d in deliveries_of(store, created.id)] == ["delivered"] * 3
