"""PUT /v1/uploads/{name}: stage an input file before the job that uses it is submitted.

Submitting `{"kind": ..., "files": {"name": "<upload id>"}}` moves staged files into the new
job's inputs before the job becomes visible to workers, so it can never start without them.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep, SettingsDep
from conveyor.api.routes.files import body_chunks, check_upload
from conveyor.api.schemas import Upload, problems
from conveyor.storage import check_name

router = APIRouter(prefix="/v1/uploads", tags=["files"])

UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


def upload_key(upload_id: str, name: str) -> str:
    if not UPLOAD_ID.match(upload_id):
        raise errors.InvalidInputError(f"invalid upload id {upload_id!r}", upload_id=upload_id)
    return f"uploads/{upload_id}/{check_name(name)}"


def upload_prefix(upload_id: str) -> str:
    return f"uploads/{upload_id}/"


@router.put(
    "/{name}",
    status_code=201,
    summary="Stage an input file",
    responses=problems(400, 401, 403, 413, 415),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stage(
    name: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    principal: Annotated[Principal, Depends(require_scope("submit"))],
) -> Upload:
    """Stream the body into staging; pass the returned `id` in the submit body's `files`."""
    check_name(name)
    limit = check_upload(request, settings.max_upload_bytes)
    upload_id = uuid.uuid4().hex
    key = upload_key(upload_id, name)
    size = await run_in_threadpool(service.storage.write, key, body_chunks(request), limit)
    return Upload(id=upload_id, name=name, size=size)
