"""/v1/jobs: submit (one or a batch, idempotent), list, get, cancel, retry, delete."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, require_scope, take_quota
from conveyor.api.batcher import SubmitBatcher
from conveyor.api.deps import ServiceDep, per_app
from conveyor.api.schemas import BatchResult, BatchSubmit, problems
from conveyor.api.staging import submit_with_files
from conveyor.models import Job, JobFilter, JobPage, JobState, NewJob
from conveyor.service import Service
from conveyor.storage.base import SAFE_NAME

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MAX_BODY_BYTES = 16 << 20
JOB_ID = "The job id (a UUIDv7)."

Reader = Annotated[Principal, Depends(require_scope("read"))]
Submitter = Annotated[Principal, Depends(require_scope("submit"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]

SUBMIT_EXAMPLES = {
    "one": {"summary": "One job", "value": {"kind": "demo.count", "input": {"n": 5}}},
    "batch": {
        "summary": "A batch",
        "value": {"jobs": [{"kind": "noop"}, {"kind": "demo.sleep", "input": {"seconds": 1}}]},
    },
}


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than {limit} bytes")


async def read_json(request: Request, limit: int = MAX_BODY_BYTES) -> Any:
    """The request body as JSON, refusing (413) before reading past `limit` bytes."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_large(limit)
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestValidationError(
            [{"loc": ["body"], "msg": f"the body is not valid JSON: {exc}", "type": "json"}]
        ) from None


Staged = dict[str, str]


def _split_files(item: Any, index: int | None) -> tuple[Any, Staged]:
    """Take the `files` map (name -> upload id) off one job body."""
    if not isinstance(item, dict) or "files" not in item:
        return item, {}
    item = dict(item)
    files = item.pop("files")
    loc = ["body", *(["jobs", index] if index is not None else []), "files"]
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and SAFE_NAME.match(k) and ".." not in k and isinstance(v, str)
        for k, v in files.items()
    ):
        raise RequestValidationError(
            [{"loc": loc, "msg": "files maps safe file names to upload ids", "type": "dict_type"}]
        )
    return item, files


def parse_submit(body: Any, key: str | None) -> tuple[list[NewJob], list[Staged], bool]:
    """The jobs asked for (Idempotency-Key applied), their staged files, and if a batch."""
    batch = isinstance(body, dict) and "jobs" in body
    try:
        if batch:
            raw = body.get("jobs")
            pairs = (
                [_split_files(item, i) for i, item in enumerate(raw)]
                if isinstance(raw, list)
                else []
            )
            jobs = BatchSubmit.model_validate(
                {**body, "jobs": [p[0] for p in pairs] if pairs else raw}
            ).jobs
            files = [p[1] for p in pairs] or [{} for _ in jobs]
        else:
            item, staged = _split_files(body, None)
            jobs, files = [NewJob.model_validate(item)], [staged]
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ["body", *e["loc"]]} for e in exc.errors(include_url=False)]
        ) from None
    if key is not None:
        for index, job in enumerate(jobs):
            wanted = f"{key}:{index}" if batch else key
            if job.idempotency_key not in (None, wanted):
                raise errors.InvalidInputError(
                    "the Idempotency-Key header and the body's idempotency_key differ"
                )
            job.idempotency_key = wanted
    return jobs, files, batch


_require_submit = require_scope("submit")


def idempotency_header(request: Request) -> str | None:
    """The `Idempotency-Key` header, checked as the OpenAPI document says (1-200 chars)."""
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise RequestValidationError(
            [{"loc": ["header", "Idempotency-Key"], "msg": "use 1 to 200 characters",
              "type": "string_length"}]
        )  # fmt: skip
    return key


def batcher(request: Request) -> SubmitBatcher:
    return per_app(request.app, "submit_batcher", SubmitBatcher)


def json_response(body: BaseModel, status: int, headers: dict[str, str] | None = None) -> Response:
    """Serialize once (FastAPI would validate the model again on the way out)."""
    return Response(body.model_dump_json(), status, headers, media_type="application/json")


@router.post(
    "",
    status_code=201,
    summary="Submit a job, or a batch of up to 1,000",
    response_model=Job | BatchResult,
    responses={
        200: {
            "model": Job | BatchResult,
            "description": "Idempotent replay: the job(s) first created with this key; or"
            " the job already holding the `unique_key`.",
        },
        **problems(401, 403, 404, 413, 422, 429),
    },
    openapi_extra={
        "parameters": [
            {
                "name": "Idempotency-Key",
                "in": "header",
                "required": False,
                "description": "Same key and body: the original job(s), not new ones (kept 24 h).",
                "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            }
        ],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/SubmitBody"},
                    "examples": SUBMIT_EXAMPLES,
                }
            },
        },
    },
)
async def submit(request: Request) -> Response:
    """Validate the input against the kind's schema and enqueue; the job is durable on 201.

    Send `{"jobs": [...]}` to submit up to 1,000 jobs atomically (all or none). With an
    `Idempotency-Key`, a repeated request returns the original job(s) with 200, and the same key
    with a different body is refused with 422. A `unique_key` held by a job in its
    `unique_scope` (`waiting`, or `active`: waiting or running; created within
    `unique_window_s` if given) returns that job with 200 instead of a new one.
    `files` (`{"name": "<upload id>"}`) attaches files staged with `PUT /v1/uploads/{name}`
    before the job can start.
    """
    # The hot path: auth and the header by hand, not as FastAPI dependencies, which cost a
    # quarter of this route's CPU; the OpenAPI above documents them all the same.
    principal = await _require_submit(request)
    jobs, files, batch = parse_submit(await read_json(request), idempotency_header(request))
    if principal.quota is not None and principal.quota.jobs_per_min:
        store = request.app.state.service.store
        await run_in_threadpool(take_quota, store, principal, "jobs", len(jobs))
    if any(files):
        service: Service = request.app.state.service
        created, replay = await run_in_threadpool(submit_with_files, service, jobs, files)
    else:
        created, replay = await batcher(request).submit(jobs)
    status = 200 if replay else 201
    serving = request.app.state.service.serving  # reads the worker records once a second
    created = (
        serving.annotate(created, refresh=False)
        if serving.fresh
        else await run_in_threadpool(serving.annotate, created)
    )
    if batch:
        return json_response(BatchResult(jobs=created), status)
    return json_response(created[0], status, {"Location": f"/v1/jobs/{created[0].id}"})


@router.get("", summary="List jobs, newest first", responses=problems(401, 403, 422))
async def list_jobs(
    service: ServiceDep,
    principal: Reader,
    state: Annotated[list[JobState] | None, Query(description="Repeatable.")] = None,
    kind: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=200)] = None,
    workflow_id: Annotated[str | None, Query(max_length=100, description="Its steps.")] = None,
    parent_id: Annotated[str | None, Query(max_length=100, description="Its children.")] = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    cursor: Annotated[str | None, Query(max_length=100, description="`next_cursor`.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
) -> JobPage:
    """Filter by state, kind, queue, tag and creation time; follow `next_cursor` for more."""
    flt = JobFilter(
        state=state, kind=kind, queue=queue, tag=tag, workflow_id=workflow_id,
        parent_id=parent_id, created_after=created_after, created_before=created_before,
    )  # fmt: skip
    return await run_in_threadpool(service.list_jobs, flt, cursor, limit)


@router.get("/{job_id}", summary="Get a job", responses=problems(401, 403, 404))
async def get_job(job_id: str, service: ServiceDep, principal: Reader) -> Job:
    """State, progress, result or error, attempts and timestamps."""
    return await run_in_threadpool(service.get, job_id)


@router.post("/{job_id}/cancel", summary="Cancel a job", responses=problems(401, 403, 404, 409))
async def cancel_job(job_id: str, service: ServiceDep, principal: Submitter) -> Job:
    """A waiting job is cancelled at once; a running one gets `cancel_requested` and its worker
    stops it. Finished jobs answer 409."""
    return await run_in_threadpool(service.cancel, job_id)


@router.post(
    "/{job_id}/retry", summary="Retry a failed job", responses=problems(401, 403, 404, 409)
)
async def retry_job(job_id: str, service: ServiceDep, principal: Submitter) -> Job:
    """Queue a failed or cancelled job again with a fresh attempt budget."""
    return await run_in_threadpool(service.retry, job_id)


@router.delete(
    "/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    responses=problems(401, 403, 404, 409),
)
async def delete_job(job_id: str, service: ServiceDep, principal: Admin) -> Response:
    """Delete a finished job, its events and its files. Waiting or running jobs answer 409."""
    await run_in_threadpool(service.delete, job_id)
    return Response(status_code=204)
