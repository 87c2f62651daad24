"""The Project Allocation service's own API, at `/allocation/…`, on `allocate` jobs.

Same paths, parameters and answers as the original Flask app (`app/main.py`):

- `POST /allocation/allocate_json/` `{"pref", "staff", "config"?}` → 202 `{"id"}`
- `POST /allocation/allocate_file/` multipart `pref` + `proj` CSVs, optional `config` JSON file
  → 202 `{"id"}`; 400 naming the missing file, column or malformed line
- `GET /allocation/get_status/?job_id=` → RQ's status word as text (`queued`, `started`,
  `finished`, `failed`, `scheduled`, `canceled`)
- `GET /allocation/get_progress/?job_id=` → `{"percent": …}`
- `GET /allocation/get_config/?job_id=` → the config the job runs with (defaults filled in)
- `GET /allocation/get_result/?job_id=` → `{student: project}` (0 = unallocated), 204 until
  the job has finished
- `DELETE|GET|POST /allocation/deletejob?jobid=` → 204 (cancels first if the job still runs)

Unknown jobs answer 204 with no body, as the original did. Unlike the original, jobs live in
the store, not in one web process's memory: every API process answers for every job, and a
restart loses nothing. The original's `?configSearch=` is honoured by its heuristic (load and
rank limits from the data); the exact solver needs no depth or run-count search.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from conveyor import errors
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.api.problems import problem
from conveyor.api.routes.jobs import read_json
from conveyor.kinds.allocate import csvio
from conveyor.kinds.allocate.models import (
    MAX_NAMED,
    AllocateInput,
    AllocationConfig,
    preference_problems,
)
from conveyor.kinds.registry import registry
from conveyor.models import Job, JobState, NewJob
from conveyor.service import Service

router = APIRouter(prefix="/allocation", tags=["allocation (Project Allocation API)"])

KIND = "allocate"
MAX_FILE_BYTES = 32 << 20
RQ_STATUS = {
    JobState.BLOCKED: "deferred",
    JobState.SCHEDULED: "scheduled",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "started",
    JobState.SUCCEEDED: "finished",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "canceled",
}

Reader = Annotated[Principal, Depends(require_scope("read"))]
Submitter = Annotated[Principal, Depends(require_scope("submit"))]
Admin = Annotated[Principal, Depends(require_scope("admin"))]
JobIdParam = Annotated[str | None, Query(description="The id `allocate_*` answered with.")]


class BadRequest(ValueError):
    """The request is malformed; answered 400 with this message."""


def bad_request(message: str) -> JSONResponse:
    return problem(400, "invalid-allocation-request", message)


#: The 204 these routes answer for unknown jobs, documented (the OpenAPI must say it).
NO_CONTENT: dict[int | str, dict[str, Any]] = {
    204: {"description": "No such job (or no result yet): an empty answer, as the original's"}
}


def no_content() -> Response:
    """204: what the original answered for unknown jobs (and unfinished results)."""
    return Response(status_code=204)


# -- the use cases ------------------------------------------------------------------------------


def config_search(data: dict[str, Any]) -> None:
    """The original `configHeuristic`: supervisors take the median project count + 1, and
    only the best 40% of ranks count (`maxRank`); the local search also gets its run count."""
    config = data.setdefault("config", {})
    per_supervisor = Counter(str(k) for k in data["staff"].values())
    if per_supervisor:
        config["defaultLoad"] = int(statistics.median(per_supervisor.values())) + 1
    ranks = [int(r) for choices in data["pref"].values() for _, r in choices]
    if ranks:
        config["maxRank"] = max(1, math.ceil(max(ranks) * 0.4))
    students = len(data["pref"])
    config["numRuns"] = 30 if students <= 500 else int(0.05 * (students - 500) + 30)


def submit(service: Service, data: Any, search: bool) -> str:
    """Validate an allocation request and enqueue it; return the job id."""
    if not isinstance(data, dict) or "pref" not in data or "staff" not in data:
        raise BadRequest('the body must be a JSON object with "pref" and "staff" (and "config")')
    try:
        parsed = AllocateInput.model_validate(data)
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:20])
        raise BadRequest(f"invalid allocation request: {fields}") from None
    body = parsed.model_dump(mode="json", exclude_none=True)
    if search:
        config_search(body)
    _ensure_kind(service)
    try:
        job = service.submit(NewJob(kind=KIND, input=body))
    except errors.InvalidInputError as exc:
        raise BadRequest(exc.message) from None
    return job.id


def _ensure_kind(service: Service) -> None:
    """Register the kind from this process if no worker has yet, so submits never wait."""
    try:
        service.kind(KIND)
    except errors.KindNotFoundError:
        service.store.register_kinds([registry.get(KIND).info()])
        service.kinds(refresh=True)


def find(service: Service, job_id: str | None) -> Job | None:
    """The allocation job with this id, or None (the original's "unknown job")."""
    if not job_id:
        return None
    try:
        job = service.get(job_id)
    except errors.JobNotFoundError:
        return None
    return job if job.kind == KIND else None


def percent(job: Job) -> float:
    if job.state == JobState.SUCCEEDED:
        return 100.0
    progress = job.progress
    if progress is None or not progress.total:
        return 0.0
    return round(max(0.0, min(100.0, 100.0 * progress.current / progress.total)), 2)


def legacy_result(job: Job) -> dict[str, Any]:
    """`{student: project}` as the original returned it: numeric ids as numbers, 0 = none."""
    allocation = (job.result or {}).get("allocation", {})
    return {student: _legacy_id(project) for student, project in allocation.items()}


def _legacy_id(project: str | None) -> int | str:
    if project is None:
        return 0
    return int(project) if project.isdigit() else project


def delete(service: Service, job: Job) -> Response:
    if not job.state.is_final:
        job = service.cancel(job.id)
    if not job.state.is_final:
        return JSONResponse(
            {"detail": "the job is running; cancel requested, delete again once it stopped"},
            status_code=202,
        )
    service.delete(job.id)
    return Response(status_code=204)


# -- files ----------------------------------------------------------------------------------------


async def _read(upload: UploadFile, what: str) -> str:
    if upload.filename and not upload.filename.lower().endswith((".csv", ".json", ".txt")):
        raise BadRequest(f"{what}: {upload.filename!r} is not a .csv file")
    data = await upload.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BadRequest(f"{what}: larger than {MAX_FILE_BYTES} bytes")
    return csvio.decode(data, what)


def _given(value: Any) -> Any:
    """An upload, or None for a file input left empty (browsers send an empty part with an
    empty file name for it)."""
    if isinstance(value, UploadFile) and not value.filename and not value.size:
        return None
    return value


async def from_files(request: Request) -> dict[str, Any]:
    """The JSON request equivalent to the uploaded `pref`, `proj` and `config` files."""
    try:
        form = await request.form(max_files=3, max_fields=10)
    except Exception as exc:  # the multipart parser's errors have no common base
        raise BadRequest(f"the body must be multipart/form-data: {exc}") from None
    uploads = {name: _given(form.get(name)) for name in ("pref", "proj", "config")}
    missing = [n for n in ("pref", "proj") if not isinstance(uploads[n], UploadFile)]
    if missing:
        raise BadRequest(f"missing file(s): {', '.join(missing)} (multipart fields pref, proj)")
    pref_file, proj_file, config_file = (uploads[n] for n in ("pref", "proj", "config"))
    assert isinstance(pref_file, UploadFile) and isinstance(proj_file, UploadFile)
    lines: dict[str, int] = {}
    try:
        pref = csvio.read_preferences(await _read(pref_file, "pref"), lines=lines)
        staff, capacity = csvio.read_projects(await _read(proj_file, "proj"))
    except csvio.CsvError as exc:
        raise BadRequest(str(exc)) from None
    rows = {student: f"pref: line {n} ({student})" for student, n in lines.items()}
    problems = preference_problems(pref, set(staff), rows)
    if problems:
        more = f" (and {len(problems) - MAX_NAMED} more)" if len(problems) > MAX_NAMED else ""
        raise BadRequest("; ".join(problems[:MAX_NAMED]) + more)
    config: dict[str, Any] = {}
    if isinstance(config_file, UploadFile):
        try:
            config = json.loads(await _read(config_file, "config"))
        except (json.JSONDecodeError, csvio.CsvError) as exc:
            raise BadRequest(f"config: not a JSON file: {exc}") from None
        if not isinstance(config, dict):
            raise BadRequest("config: the file must hold a JSON object")
    if capacity:
        config.setdefault("projectCapacity", {}).update(capacity)
    return {"pref": pref, "staff": staff, "config": config}


# -- routes ---------------------------------------------------------------------------------------


async def _accepted(service: Service, data: Any, config_search: bool) -> Response:
    """Submit the allocation; 202 with the job id, or 400 if the data is refused."""
    try:
        job_id = await run_in_threadpool(submit, service, data, config_search)
    except BadRequest as exc:
        return bad_request(str(exc))
    return JSONResponse({"id": job_id}, status_code=202)


@router.post("/allocate_json/", status_code=202, summary="Submit an allocation (JSON)")
async def allocate_json(
    request: Request,
    service: ServiceDep,
    _: Submitter,
    configSearch: str | None = None,
) -> Response:
    try:
        data = await read_json(request, MAX_FILE_BYTES)  # 413 past the limit
    except RequestValidationError:
        return bad_request("the body is not valid JSON")
    return await _accepted(service, data, bool(configSearch))


@router.post("/allocate_file/", status_code=202, summary="Submit an allocation (CSV files)")
async def allocate_file(
    request: Request,
    service: ServiceDep,
    _: Submitter,
    configSearch: str | None = None,
) -> Response:
    try:
        data = await from_files(request)
    except BadRequest as exc:
        return bad_request(str(exc))
    return await _accepted(service, data, bool(configSearch))


@router.get(
    "/get_status/", summary="RQ status word", responses=NO_CONTENT, response_class=PlainTextResponse
)
async def get_status(service: ServiceDep, _: Reader, job_id: JobIdParam = None) -> Response:
    job = await run_in_threadpool(find, service, job_id)
    if job is None:
        return no_content()
    return PlainTextResponse(RQ_STATUS[job.state])


@router.get("/get_progress/", summary="Progress in percent", responses=NO_CONTENT)
async def get_progress(service: ServiceDep, _: Reader, job_id: JobIdParam = None) -> Response:
    job = await run_in_threadpool(find, service, job_id)
    if job is None:
        return no_content()
    return JSONResponse({"percent": percent(job)})


@router.get("/get_config/", summary="The config the job runs with", responses=NO_CONTENT)
async def get_config(service: ServiceDep, _: Reader, job_id: JobIdParam = None) -> Response:
    job = await run_in_threadpool(find, service, job_id)
    if job is None:
        return no_content()
    config = AllocationConfig.model_validate((job.input or {}).get("config", {}))
    return JSONResponse(config.model_dump(mode="json"))


@router.get("/get_result/", summary="{student: project} once finished", responses=NO_CONTENT)
async def get_result(service: ServiceDep, _: Reader, job_id: JobIdParam = None) -> Response:
    job = await run_in_threadpool(find, service, job_id)
    if job is None or job.state != JobState.SUCCEEDED:
        return no_content()
    return JSONResponse(legacy_result(job))


async def deletejob(
    service: ServiceDep, _: Admin, jobid: Annotated[str | None, Query()] = None
) -> Response:
    job = await run_in_threadpool(find, service, jobid)
    if job is None:
        return no_content()
    return await run_in_threadpool(delete, service, job)


# The original answered all three methods; one route each, so each has its own operationId
# (OpenAPI requires them unique, and generated clients name their methods after them).
for _method in ("DELETE", "GET", "POST"):
    router.add_api_route(
        "/deletejob", deletejob, methods=[_method], summary="Delete a job", status_code=204,
        operation_id=f"allocation_deletejob_{_method.lower()}",
    )  # fmt: skip
