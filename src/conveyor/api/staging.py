"""Staged input files: uploaded before their job exists, moved in before it can be claimed.

Used by `PUT /v1/uploads/{name}` + `POST /v1/jobs` with `files`, and by the local CLI's
`submit --file`, so a job never starts without its inputs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from conveyor import errors
from conveyor.models import Job, NewJob
from conveyor.service import Service
from conveyor.storage import check_name, job_key, job_prefix

Staged = dict[str, str]
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def upload_key(upload_id: str, name: str) -> str:
    if not UPLOAD_ID.match(upload_id):
        raise errors.InvalidInputError(f"invalid upload id {upload_id!r}", upload_id=upload_id)
    return f"uploads/{upload_id}/{check_name(name)}"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/"


def new_upload_id() -> str:
    return uuid.uuid4().hex


def stage(service: Service, name: str, chunks: Iterable[bytes], limit: int | None) -> str:
    """Store a file in staging; return its upload id."""
    upload_id = new_upload_id()
    service.storage.write(upload_key(upload_id, name), chunks, limit)
    return upload_id


def submit_with_files(
    service: Service, jobs: list[NewJob], files: list[Staged]
) -> tuple[list[Job], bool]:
    """Move staged uploads into each job's inputs *before* enqueueing, so no worker can claim
    a job whose files are not there yet."""
    specs = service.prepare(jobs)
    for spec, staged in zip(specs, files, strict=True):
        for name, upload_id in staged.items():
            source = upload_key(upload_id, name)
            service.storage.stat(source)  # 404 names the missing upload
            service.storage.write(job_key(spec.id, "in", name), service.storage.read(source))
    try:
        created = service.store.enqueue(specs)
    except BaseException:
        for spec in specs:
            service.storage.delete_prefix(job_prefix(spec.id))
        raise
    replay = True
    for spec, job in zip(specs, created, strict=True):
        if job.id != spec.id:  # an idempotent replay: the original job has its files
            service.storage.delete_prefix(job_prefix(spec.id))
        else:
            replay = False
    for staged in files:
        for upload_id in set(staged.values()):
            service.storage.delete_prefix(upload_prefix(upload_id))
    return created, replay
