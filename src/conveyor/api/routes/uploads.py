"""PUT /v1/uploads/{name}: stage an input file before the job that uses it is submitted.

Submitting `{"kind": ..., "files": {"name": "<upload id>"}}` moves staged files into the new
job's inputs before the job becomes visible to workers, so it can never start without them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from conveyor.api import staging
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep, SettingsDep
from conveyor.api.routes.files import body_chunks, check_upload
from conveyor.api.schemas import Upload, problems
from conveyor.api.staging import upload_key
from conveyor.storage import check_name

router = APIRouter(prefix="/v1/uploads", tags=["files"])


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
    upload_id = await run_in_threadpool(staging.stage, service, name, body_chunks(request), limit)
    size = await run_in_threadpool(lambda: service.storage.stat(upload_key(upload_id, name)).size)
    return Upload(id=upload_id, name=name, size=size)
