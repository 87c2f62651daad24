"""Conveyor jobs seen as Task Queue v1beta2 `Task` resources, and the reverse."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from conveyor.models import FINAL_STATES, Job, JobState
from conveyor.taskqueue.names import KINDS, QueueRef, bad_request, task_tag

TASK_KIND = "taskqueues#task"
MAX_PAYLOAD_BYTES = 1 << 20  # base64 text; Google's limit was 1 MB for pull tasks
TASK_FIELDS = frozenset({"id", "kind", "queueName", "payloadBase64", "enqueueTimestamp",
                         "leaseTimestamp", "retry_count", "tag"})  # fmt: skip


def micros(seconds: float) -> int:
    return round(seconds * 1_000_000)


def task_name(job: Job) -> str:
    """The task's id in the API: the name given at insert, or the job id."""
    name = (job.input or {}).get("name") if isinstance(job.input, dict) else None
    return str(name) if name else job.id


def belongs(job: Job, ref: QueueRef) -> bool:
    """True if the job is a live task of this Task Queue."""
    return job.kind in KINDS and job.queue in ref.queues and job.state not in FINAL_STATES


def lease_expiry(job: Job) -> float:
    """When the task can be leased (again): its lease expiry, or its due time if waiting."""
    if job.state is JobState.RUNNING and job.lease is not None:
        return job.lease.expires_at.timestamp()
    return job.run_at.timestamp()


def to_task(job: Job, ref: QueueRef, leased_now: bool = False) -> dict[str, Any]:
    """The Task JSON. Timestamps are microseconds since the epoch; `retry_count` counts leases
    (a task leased right now shows the count from before this lease, as the original did).
    """
    data = job.input if isinstance(job.input, dict) else {}
    return {
        "kind": TASK_KIND,
        "id": task_name(job),
        "queueName": str(data.get("queueName") or ref.taskqueue),
        "payloadBase64": str(data.get("payloadBase64", "")),
        "enqueueTimestamp": micros(job.created_at.timestamp()),
        "leaseTimestamp": micros(lease_expiry(job)),
        "retry_count": max(0, job.attempt - 1) if leased_now else job.attempt,
        "tag": task_tag(job.tags),
    }


def check_payload(body: dict[str, Any]) -> str:
    """The task's payloadBase64, checked to be base64 of at most `MAX_PAYLOAD_BYTES`."""
    payload = body.get("payloadBase64", "")
    if not isinstance(payload, str):
        raise bad_request("payloadBase64 must be a string.")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise bad_request(f"payloadBase64 is larger than {MAX_PAYLOAD_BYTES} bytes.")
    try:
        base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise bad_request("payloadBase64 is not valid base64.") from None
    return payload


def decoded_payload(job: Job) -> bytes:
    data = job.input if isinstance(job.input, dict) else {}
    return base64.b64decode(str(data.get("payloadBase64", "")))
