"""Webhooks for a workflow's own transitions (`workflow.running`, `.succeeded`, `.failed`,
`.cancelled`), created by the webhook dispatcher.

A workflow's state is derived from its steps, so there is no event in the feed to follow: the
dispatcher looks, on each pass, at the workflows that have a webhook and transitions not yet
sent (`workflow_hooks` records, written at submit and retry), and creates a delivery when the
derived state moved. The delivery is written before the hook record moves on, under a key made
of the workflow, its generation (retries) and the state, so a dispatcher that dies in between
finds the delivery already there: each transition is sent once (with a stable `webhook-id`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from conveyor import errors
from conveyor.store.base import Store
from conveyor.webhooks.config import WebhookSpec, parse_spec
from conveyor.workflows.service import COLLECTION, HOOKS, view_of
from conveyor.workflows.status import FINAL_WORKFLOW_STATES
from conveyor.workflows.views import Workflow

log = logging.getLogger("conveyor.webhooks")

Create = Callable[[str, dict[str, Any]], None]
"""Writes a pending delivery under a key unless one exists (the dispatcher's)."""


def body(workflow: Workflow, kind: str, at: float) -> str:
    """The delivery's JSON: the workflow's state, progress and each step's state."""
    data = {
        "workflow_id": workflow.id, "name": workflow.name, "state": workflow.state,
        "progress": workflow.progress.model_dump(),
        "steps": {s.name: {"state": s.state, "job_id": s.job_id} for s in workflow.steps},
    }  # fmt: skip
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return json.dumps({"type": kind, "timestamp": stamp, "data": data}, separators=(",", ":"))


def collect(store: Store, create: Create) -> int:
    """Create the deliveries of every workflow transition not sent yet; how many."""
    created = 0
    for workflow_id, hook in store.list_records(HOOKS):
        record = store.get_record(COLLECTION, workflow_id)
        spec = _spec(record)
        if record is None or spec is None:
            store.delete_record(HOOKS, workflow_id)  # deleted, or no (valid) webhook
            continue
        workflow = view_of(store, record)
        state = workflow.state
        if state == hook.get("notified") or state == "pending":
            continue
        kind = f"workflow.{state}"
        if spec.wants(kind):
            key = f"{workflow_id}/{int(hook.get('generation', 0)):06d}-{state}"
            now = store.now()
            create(key, {
                "id": f"msg_{key.replace('/', '_')}", "job_id": workflow_id,
                "workflow_id": workflow_id, "seq": 0, "event": kind, "url": spec.url,
                "method": "POST", "format": spec.format, "secret_id": spec.secret_id,
                "body": body(workflow, kind, now), "status": "pending", "attempts": [],
                "attempt_count": 0, "created_at": now, "next_at": now,
            })  # fmt: skip
            created += 1
        if state in FINAL_WORKFLOW_STATES:
            store.delete_record(HOOKS, workflow_id)  # until a retry starts it again
        else:
            store.put_record(HOOKS, workflow_id, {**hook, "notified": state})
    return created


def _spec(record: dict[str, Any] | None) -> WebhookSpec | None:
    raw = (record or {}).get("document", {}).get("webhook")
    if not raw:
        return None
    try:
        return parse_spec(raw)
    except errors.InvalidInputError as exc:
        log.warning("workflow %s has an invalid webhook (%s); skipping it", record, exc)
        return None
