"""Google Task Queue REST API v1beta2 (pull queues), served from conveyor's store.

Mounted at `/taskqueue/v1beta2/projects/{project}/taskqueues/{taskqueue}`, with a discovery
document at `/api/taskqueue/v1beta2` and `/discovery/v1/apis/taskqueue/v1beta2/rest`, so
`googleapiclient.discovery.build("taskqueue", "v1beta2",
discoveryServiceUrl="http://host:port/api/{api}/{apiVersion}")` works. Errors use Google's
JSON shape (`{"error": {"code", "message", "errors": [{"domain", "reason", "message"}]}}`).
`/_ah/health` is an alias of `/readyz` (the original render service's health check).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, any_key, require_scope
from conveyor.api.deps import per_app
from conveyor.api.problems import native_errors
from conveyor.api.routes import health
from conveyor.taskqueue import batch, discovery
from conveyor.taskqueue.names import QueueRef, TaskQueueError, bad_request
from conveyor.taskqueue.service import TaskQueueService

PREFIX = "/taskqueue/v1beta2/projects/{project}/taskqueues/{taskqueue}"
BATCH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "One application/http part per call, in order.",
          "content": {"multipart/mixed": {"schema": {"type": "string"}}}},
    400: {"description": "Not a batch (Google's error shape)."},
    413: {"description": "The batch is too large."},
}  # fmt: skip
MAX_LEASE_S = 7 * 86_400
MAX_TASKS = 1000
REASONS = {400: "badRequest", 401: "required", 403: "forbidden", 404: "notFound",
           405: "methodNotAllowed", 409: "conflict", 410: "gone", 413: "tooLarge",
           429: "rateLimitExceeded", 503: "backendError"}  # fmt: skip


class TaskQueueSettings(BaseSettings):
    """`CONVEYOR_TASKQUEUE_*` settings of the compat layer."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_TASKQUEUE_", extra="ignore")

    max_document_bytes: int = Field(
        680 * 1024, ge=1, description="Larger render results are sent as result#link."
    )
    max_upload_bytes: int = Field(64 << 20, ge=1, description="Largest file a leaser attaches.")


def google_error(exc: TaskQueueError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _translate(exc: Exception) -> tuple[TaskQueueError, dict[str, str] | None]:
    if isinstance(exc, TaskQueueError):
        return exc, None
    if isinstance(exc, HTTPException):
        reason = REASONS.get(exc.status_code, "error")
        headers = dict(exc.headers) if exc.headers else None
        return TaskQueueError(exc.status_code, reason, str(exc.detail)), headers
    if isinstance(exc, RequestValidationError):
        return bad_request(f"Invalid request: {exc.errors()}"), None
    assert isinstance(exc, errors.ConveyorError)
    return TaskQueueError(exc.status, REASONS.get(exc.status, exc.type), exc.message), None


class GoogleErrorRoute(APIRoute):
    """Every error of these routes (auth and store errors too) in Google's JSON shape."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except (TaskQueueError, HTTPException, RequestValidationError,
                    errors.ConveyorError) as exc:  # fmt: skip
                error, headers = _translate(exc)
                return google_error(error, headers)

        return route


def _routing_error(status: int, detail: str, headers: dict[str, str] | None) -> Response:
    reason = REASONS.get(status, "error")
    return google_error(TaskQueueError(status, reason, detail), headers)


# Unknown paths and methods under the API's prefixes answer in Google's shape too.
for _prefix in ("/taskqueue/", "/api/taskqueue/", "/discovery/", "/batch"):
    native_errors(_prefix, _routing_error)

router = APIRouter()
api = APIRouter(route_class=GoogleErrorRoute, tags=["taskqueue v1beta2"])
Read = Depends(require_scope("read"))
Submit = Depends(require_scope("submit"))
Work = Depends(require_scope("work"))
AnyKey = Depends(any_key)

router.add_api_route(
    "/_ah/health", health.readyz, methods=["GET"], tags=["health"],
    summary="Alias of /readyz (the original render service's health check)",
)  # fmt: skip


def taskqueue_settings(request: Request) -> TaskQueueSettings:
    return per_app(request.app, "taskqueue_settings", lambda _: TaskQueueSettings())


def taskqueue_service(request: Request) -> TaskQueueService:
    max_document_bytes = taskqueue_settings(request).max_document_bytes
    return per_app(request.app, "taskqueue", lambda service: TaskQueueService(
        service.store, service.storage, max_document_bytes))  # fmt: skip


# -- parsing (by hand, so that every bad parameter is a Google-shaped 400) --------------------


def parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0", ""):
        return False
    raise bad_request(f"{name} must be true or false, not {value!r}.")


def parse_number(name: str, value: str | None, low: float, high: float) -> float:
    if value is None or not value.strip():
        raise bad_request(f"Missing required parameter {name}.")
    try:
        number = float(value)
    except ValueError:
        raise bad_request(f"{name} must be a number, not {value!r}.") from None
    if not low <= number <= high:
        raise bad_request(f"{name} must be between {low:g} and {high:g}, not {value}.")
    return number


def parse_int(name: str, value: str | None, low: int, high: int) -> int:
    number = parse_number(name, value, low, high)
    if number != int(number):
        raise bad_request(f"{name} must be a whole number, not {value}.")
    return int(number)


async def json_body(request: Request, required: bool = True) -> dict[str, Any] | None:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise bad_request("The request needs a JSON Task body.")
        return None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"The body is not JSON: {exc}.") from None
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object (a Task).")
    return body


# -- discovery ------------------------------------------------------------------------------


@api.get("/api/{name}/{version}", summary="Discovery document (discoveryServiceUrl form)")
@api.get("/discovery/v1/apis/{name}/{version}/rest", summary="Discovery document")
async def discovery_document(name: str, version: str, request: Request) -> dict[str, Any]:
    if (name, version) != ("taskqueue", "v1beta2"):
        raise TaskQueueError(404, "notFound", f"No discovery document for {name} {version}.")
    return discovery.document(str(request.base_url))


# -- taskqueues.get and tasks.* -------------------------------------------------------------


@api.get(PREFIX, summary="taskqueues.get")
async def get_taskqueue(
    project: str, taskqueue: str, request: Request, _: Principal = Read
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    stats = parse_bool("getStats", request.query_params.get("getStats"))
    tq = taskqueue_service(request)
    if stats:
        await run_in_threadpool(tq.send_replies, ref, str(request.base_url))
    return await run_in_threadpool(tq.taskqueue, ref, stats)


@api.post(PREFIX + "/tasks", summary="tasks.insert")
async def insert_task(
    project: str, taskqueue: str, request: Request, _: Principal = Submit
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    body = await json_body(request)
    assert body is not None
    return await run_in_threadpool(taskqueue_service(request).insert, ref, body)


@api.get(PREFIX + "/tasks", summary="tasks.list")
async def list_tasks(
    project: str, taskqueue: str, request: Request, _: Principal = Read
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    tq = taskqueue_service(request)
    await run_in_threadpool(tq.send_replies, ref, str(request.base_url))
    return await run_in_threadpool(tq.list, ref)


@api.post(PREFIX + "/tasks/lease", summary="tasks.lease")
async def lease_tasks(
    project: str, taskqueue: str, request: Request, principal: Principal = Work
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    query = request.query_params
    lease_s = parse_number("leaseSecs", query.get("leaseSecs"), 0.001, MAX_LEASE_S)
    n = parse_int("numTasks", query.get("numTasks"), 1, MAX_TASKS)
    group = parse_bool("groupByTag", query.get("groupByTag"))
    tag = query.get("tag")
    if tag is not None and not group:
        raise bad_request("In query tag specified without groupByTag.")
    host = request.client.host if request.client else "?"
    tq = taskqueue_service(request)
    await run_in_threadpool(tq.send_replies, ref, str(request.base_url))
    owner = f"taskqueue:{principal.name}@{host}"
    return await run_in_threadpool(tq.lease, ref, owner, lease_s, n, group, tag)


@api.get(PREFIX + "/tasks/{task}", summary="tasks.get")
async def get_task(
    project: str, taskqueue: str, task: str, request: Request, _: Principal = Read
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    return await run_in_threadpool(taskqueue_service(request).get, ref, task)


async def _renew(
    project: str, taskqueue: str, task: str, request: Request, full: bool
) -> dict[str, Any]:
    ref = QueueRef.parse(project, taskqueue)
    seconds = parse_number(
        "newLeaseSeconds", request.query_params.get("newLeaseSeconds"), 0, MAX_LEASE_S
    )
    body = await json_body(request, required=False)
    checked = (body or {}) if full else None
    return await run_in_threadpool(taskqueue_service(request).renew, ref, task, seconds, checked)


@api.post(PREFIX + "/tasks/{task}", summary="tasks.update")
async def update_task(
    project: str, taskqueue: str, task: str, request: Request, _: Principal = Work
) -> dict[str, Any]:
    return await _renew(project, taskqueue, task, request, full=True)


@api.patch(PREFIX + "/tasks/{task}", summary="tasks.patch")
async def patch_task(
    project: str, taskqueue: str, task: str, request: Request, _: Principal = Work
) -> dict[str, Any]:
    return await _renew(project, taskqueue, task, request, full=False)


@api.delete(PREFIX + "/tasks/{task}", status_code=204, summary="tasks.delete")
async def delete_task(
    project: str, taskqueue: str, task: str, request: Request, _: Principal = Work
) -> Response:
    ref = QueueRef.parse(project, taskqueue)
    await run_in_threadpool(taskqueue_service(request).delete, ref, task)
    return Response(status_code=204)


@api.put(PREFIX + "/tasks/{task}/files/{name}", summary="Attach an output file (conveyor)")
async def attach_file(
    project: str, taskqueue: str, task: str, name: str, request: Request,
    _: Principal = Work,
) -> dict[str, Any]:  # fmt: skip
    """Not part of Google's API: the holder of a task's lease stores an output file of the
    task's job; the answer's `url` is conveyor's download route for it (for `result#link`).
    """
    ref = QueueRef.parse(project, taskqueue)
    tq = taskqueue_service(request)
    limit = taskqueue_settings(request).max_upload_bytes
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise TaskQueueError(413, "tooLarge", f"The file is larger than {limit} bytes.")
    return await run_in_threadpool(tq.attach, ref, task, name, bytes(data), str(request.base_url))


MAX_BATCH_BYTES = 32 << 20
BATCH_TARGET = "/taskqueue/v1beta2/"
CREDENTIALS = ("authorization", "x-api-key")


@api.post("/batch", summary="A batch of v1beta2 calls (google-api-python-client's batch)",
          response_class=Response, responses=BATCH_RESPONSES)  # fmt: skip
@api.post("/batch/taskqueue/v1beta2", summary="A batch of v1beta2 calls", response_class=Response,
          responses=BATCH_RESPONSES, include_in_schema=False)  # fmt: skip
async def run_batch(request: Request, _: Principal = AnyKey) -> Response:
    """Each part is one Task Queue call, run in order through this API (its own auth checks,
    with the batch's credentials when the part has none); the answer holds one part per call.
    The batch itself needs a valid key (google-api-python-client sends its credentials on it)."""
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BATCH_BYTES:
            raise TaskQueueError(413, "tooLarge", f"A batch is at most {MAX_BATCH_BYTES} bytes.")
    parts = batch.parse(request.headers.get("content-type", ""), bytes(raw))
    outer = [(k, v) for k, v in request.headers.items() if k.lower() in CREDENTIALS]
    peer = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
    transport = httpx.ASGITransport(app=request.app, client=peer)
    answers = []
    async with httpx.AsyncClient(transport=transport, base_url=str(request.base_url)) as inner:
        for part in parts:
            if not part.target.startswith(BATCH_TARGET):
                error = bad_request(f"A batch may only call {BATCH_TARGET}…, not {part.target}.")
                answers.append(
                    batch.Answer(
                        part.content_id,
                        error.status,
                        "Bad Request",
                        "application/json",
                        json.dumps(error.body()).encode(),
                    )
                )
                continue
            own = {k.lower() for k, _ in part.headers}
            headers = part.headers + [(k, v) for k, v in outer if k.lower() not in own]
            reply = await inner.request(part.method, part.target, headers=headers,
                                        content=part.body or None)  # fmt: skip
            answers.append(
                batch.Answer(
                    part.content_id,
                    reply.status_code,
                    reply.reason_phrase,
                    reply.headers.get("content-type"),
                    reply.content,
                )
            )
    content_type, body = batch.render(answers)
    return Response(body, media_type=content_type)


router.include_router(api)
