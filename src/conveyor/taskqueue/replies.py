"""Result tasks for render jobs that conveyor workers ran, as the original consumers expect.

A task routed to a conveyor kind (tag `task` → `render.taskqueue`) gets a reply record when it
is inserted. When the Task Queue is next used (lease, list, stats), finished jobs with a reply
record get their `result`-tagged task: `result#document` (the PDF in base64) for documents up
to the size threshold, `result#link` (a URL to the job's output file) above it, and a failed
`result#document` with an `error` message when the job failed. The record is deleted once the
result task is in; the insert is idempotent, so a crash in between cannot post twice.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import quote

from conveyor.errors import ConveyorError
from conveyor.models import Job, JobState
from conveyor.storage import BlobStorage, job_key

COLLECTION = "taskqueue_replies"
RESULT_TAG = "result"
#: Like the original's MAX_QUEUE_TASK_SIZE: larger documents are sent as links.
MAX_DOCUMENT_BYTES = 680 * 1024


def failure(task_id: str, message: str) -> dict[str, Any]:
    """A failed `result#document`; `error` says why (the original sent no reason)."""
    return {"kind": "result#document", "success": False, "filename": None, "document": None,
            "error": message, "task_id": task_id}  # fmt: skip


def file_url(base_url: str, job_id: str, file: str) -> str:
    """conveyor's download route for a job's output file."""
    return f"{base_url.rstrip('/')}/v1/jobs/{job_id}/files/{quote(file)}"


def base64_size(n: int) -> int:
    return 4 * ((n + 2) // 3)


def document_result(
    storage: BlobStorage,
    job_id: str,
    task_id: str,
    filename: str,
    file: str,
    base_url: str,
    max_document_bytes: int,
) -> dict[str, Any]:
    """`result#document` with the PDF inline, or `result#link` when it is too large."""
    key = job_key(job_id, "out", file)
    if base64_size(storage.stat(key).size) > max_document_bytes:
        return {"kind": "result#link", "success": True, "url": file_url(base_url, job_id, file),
                "filename": filename, "task_id": task_id}  # fmt: skip
    pdf = b"".join(storage.read(key))
    return {"kind": "result#document", "success": True, "filename": filename,
            "document": base64.b64encode(pdf).decode("ascii"), "task_id": task_id}  # fmt: skip


def reply_for(
    job: Job, task_id: str, storage: BlobStorage, base_url: str, max_document_bytes: int
) -> dict[str, Any] | None:
    """The result payload for a finished job, or None when no reply is due."""
    result = job.result if isinstance(job.result, dict) else {}
    if job.state is JobState.SUCCEEDED:
        if "file" not in result:
            return None  # acknowledged (deleted) by a Task Queue client, which replied itself
        try:
            return document_result(storage, job.id, task_id, str(result.get("filename")),
                                   str(result["file"]), base_url, max_document_bytes)  # fmt: skip
        except ConveyorError as exc:
            return failure(task_id, f"the rendered document is missing: {exc}")
    if job.state is JobState.CANCELLED:
        return failure(task_id, "the render job was cancelled")
    message = job.error.message if job.error else "the render job failed"
    return failure(task_id, message)
