"""The Swiss AI Center service contract for every kind declared with `swissai.service(...)`.

In the main API under `/swissai/{kind}/…`; `conveyor swissai serve KIND` serves one kind at the
root, as a stand-alone service does:

- `GET  /status` → `{"status": "Service is available"}`
- `GET  /tasks/{task_id}/status` → `{"status": "<status>"}` (pending, fetching, processing,
  saving, finished, error); 404 `{"detail": "Task … not found"}`
- `POST /compute` (a `ServiceTask`) → `{"status": "Task added to the queue"}`; 503
  `{"detail": "Queue is full"}` when `CONVEYOR_SWISSAI_MAX_TASKS` tasks wait or run.

Answers use FastAPI's own `{"detail": …}` shapes (not problem+json), as the originals do. The
task becomes a `swissai.compute` job whose callback is a webhook of the `swissai` format. Unlike
the originals, the status of a finished task stays readable (the job outlives the request), and
callback URLs and S3 endpoints must pass the SSRF guard.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.problems import native_errors
from conveyor.kinds.registry import import_kinds, registry
from conveyor.models import JobFilter, JobState, NewJob
from conveyor.service import Service
from conveyor.settings import Settings
from conveyor.swissai.declare import SwissAIService, lookup, publish, published
from conveyor.swissai.models import ServiceTask, TaskStatus
from conveyor.swissai.registration import announcing
from conveyor.swissai.sealing import seal
from conveyor.swissai.settings import SwissAISettings
from conveyor.webhooks.ssrf import CallbackPolicy, UnsafeURLError

log = logging.getLogger("conveyor.swissai")

TASKS = "swissai_tasks"
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,1023}$")
ACTIVE = [JobState.QUEUED, JobState.SCHEDULED, JobState.RUNNING]


def detail(status: int, message: Any) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


# -- the use cases ------------------------------------------------------------------------------


def compute_task(service: Service, declared: SwissAIService, body: Any, base_url: str) -> Response:
    try:
        task = ServiceTask.model_validate(body)
    except ValidationError as exc:
        return detail(422, exc.errors(include_url=False, include_context=False))
    settings = SwissAISettings()
    active = service.list_jobs(
        JobFilter(kind="swissai.compute", tag=f"swissai:{declared.kind}", state=ACTIVE),
        limit=settings.max_tasks,
    )
    if len(active.jobs) >= settings.max_tasks:
        return detail(503, "Queue is full")
    bad = [key for key in task.task.data_in if not KEY.match(key) or ".." in key]
    if bad:
        return detail(422, f"invalid S3 keys in data_in: {bad}")
    policy = CallbackPolicy.from_env()
    try:
        policy.check(task.callback_url, what="callback_url")
        policy.check(task.s3_host, what="s3_host")
    except UnsafeURLError as exc:
        return detail(422, str(exc))
    known = service.store.get_record(TASKS, task.task.id)
    if known is not None and known.get("kind") == declared.kind:
        job = _job(service, known["job_id"])
        if job is not None and not job.state.is_final:
            return JSONResponse({"status": "Task added to the queue"})  # a repeated request
    ensure_compute_kind(service)
    queue = service.kinds().get(declared.kind)
    sealed = seal({"access_key_id": task.s3_access_key_id,
                   "secret_access_key": task.s3_secret_access_key})  # fmt: skip
    job = service.submit(
        NewJob(
            kind="swissai.compute",
            queue=queue.queue if queue is not None else None,
            input={
                "kind": declared.kind,
                "task_id": task.task.id,
                "service_id": task.task.service_id,
                "pipeline_execution_id": task.task.pipeline_execution_id,
                "data_in": task.task.data_in,
                "s3": {
                    "host": task.s3_host,
                    "region": task.s3_region,
                    "bucket": task.s3_bucket,
                    "credentials": sealed,
                },
            },
            tags=[f"swissai:{declared.kind}", f"task:{task.task.id}"],
            webhook={
                "url": task.callback_url,
                "format": "swissai",
                "service": declared.slug,
                "service_url": base_url,
            },
        )
    )
    service.store.put_record(TASKS, task.task.id, {"job_id": job.id, "kind": declared.kind})
    log.info("swissai task %s of %s queued as job %s", task.task.id, declared.slug, job.id)
    return JSONResponse({"status": "Task added to the queue"})


def ensure_compute_kind(service: Service) -> None:
    """Register `swissai.compute` in the store the first time a task arrives, so the job can be
    submitted before any worker that imports it has started."""
    if "swissai.compute" in service.kinds():
        return
    import conveyor.swissai.compute  # noqa: F401 - declares swissai.compute

    service.store.register_kinds([registry.get("swissai.compute").info()])
    service.kinds(refresh=True)


def task_status(service: Service, declared: SwissAIService, task_id: str) -> Response:
    known = service.store.get_record(TASKS, task_id)
    job = _job(service, known["job_id"]) if known and known.get("kind") == declared.kind else None
    if job is None:
        return detail(404, f"Task {task_id} not found")
    return JSONResponse({"status": status_of(job.state, job.progress and job.progress.message)})


def status_of(state: JobState, message: str | None) -> str:
    """A job's state as a Swiss AI task status."""
    if state is JobState.SUCCEEDED:
        return TaskStatus.FINISHED.value
    if state in (JobState.FAILED, JobState.CANCELLED):
        return TaskStatus.ERROR.value
    if state is JobState.RUNNING:
        step = (message or "").split(":", 1)[0]
        known = (TaskStatus.FETCHING, TaskStatus.PROCESSING, TaskStatus.SAVING)
        return step if step in known else TaskStatus.FETCHING.value
    return TaskStatus.PENDING.value


def _job(service: Service, job_id: str) -> Any:
    try:
        return service.get(job_id)
    except errors.JobNotFoundError:
        return None


def _service(request: Request) -> Service:
    found: Service = request.app.state.service
    return found


def _base_url(request: Request, suffix: str) -> str:
    configured = SwissAISettings().service_url
    base = configured.rstrip("/") if configured else str(request.base_url).rstrip("/")
    return base + suffix


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


# -- routes: every declared kind under /swissai/{kind} ---------------------------------------------


def _prepare(service: Service, settings: Settings) -> None:
    """Know the declared kinds (import them if this process can) and the compute kind."""
    try:
        import_kinds(settings.import_list)
    except errors.ConfigurationError as exc:
        log.info("swissai: kinds not importable here (%s); using published declarations", exc)
    publish(service.store)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    settings: Settings = app.state.settings
    await run_in_threadpool(_prepare, service, settings)
    swiss = SwissAISettings()
    bodies = []
    if swiss.engines:
        if not swiss.service_url:
            log.warning("CONVEYOR_SWISSAI_ENGINE_URLS is set but CONVEYOR_SWISSAI_SERVICE_URL is"
                        " not: cannot tell the engines where the services are")  # fmt: skip
        else:
            base = swiss.service_url.rstrip("/")
            declared = await run_in_threadpool(published, service.store)
            bodies = [d.registration(f"{base}/swissai/{d.kind}") for d in declared]
    async with announcing(swiss, bodies):
        yield


router = APIRouter(prefix="/swissai", tags=["swissai"], lifespan=lifespan)
# Unknown paths and methods answer FastAPI's `{"detail": ...}`, as the engine's services do.
native_errors(
    "/swissai/", lambda status, text, headers: JSONResponse({"detail": text}, status, headers)
)


async def _declared(request: Request, kind: str) -> SwissAIService | None:
    return await run_in_threadpool(lookup, _service(request).store, kind)


@router.get("/{kind}/status", summary="Service availability (Swiss AI Center)")
async def kind_status(kind: str, request: Request) -> Response:
    if await _declared(request, kind) is None:
        return detail(404, f"Service {kind} not found")
    return JSONResponse({"status": "Service is available"})


@router.get("/{kind}/tasks/{task_id}/status", summary="A task's status (Swiss AI Center)")
async def kind_task_status(kind: str, task_id: str, request: Request) -> Response:
    declared = await _declared(request, kind)
    if declared is None:
        return detail(404, f"Service {kind} not found")
    return await run_in_threadpool(task_status, _service(request), declared, task_id)


@router.post("/{kind}/compute", summary="Queue a task (Swiss AI Center `ServiceTask`)")
async def kind_compute(kind: str, request: Request) -> Response:
    declared = await _declared(request, kind)
    if declared is None:
        return detail(404, f"Service {kind} not found")
    body = await _body(request)
    base = _base_url(request, f"/swissai/{kind}")
    return await run_in_threadpool(compute_task, _service(request), declared, body, base)


# -- one kind at the root: `conveyor swissai serve KIND` -------------------------------------------


def create_service_app(settings: Settings, kind: str) -> FastAPI:
    """A stand-alone Swiss AI service for one declared kind, at the root path."""
    from conveyor.storage import open_storage
    from conveyor.store import open_store

    @asynccontextmanager
    async def service_lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = open_store(settings.store_url)
        service = Service(store, open_storage(settings.storage_url))
        app.state.settings, app.state.service = settings, service
        await run_in_threadpool(_prepare, service, settings)
        declared = lookup(store, kind)
        if declared is None:
            store.close()
            raise errors.ConfigurationError(
                f"{kind!r} is not declared as a Swiss AI service; import its module"
            )
        app.state.declared = declared
        swiss = SwissAISettings()
        bodies = []
        if swiss.engines and swiss.service_url:
            bodies = [declared.registration(swiss.service_url.rstrip("/"))]
        try:
            async with announcing(swiss, bodies):
                yield
        finally:
            store.close()

    app = FastAPI(title=f"conveyor Swiss AI service: {kind}", lifespan=service_lifespan)
    from conveyor.api.bodies import JsonGuard

    app.add_middleware(JsonGuard)  # hostile JSON is a 422 here too, not a 500

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs", status_code=301)

    @app.get("/status", summary="Service availability")
    async def status() -> Response:
        return JSONResponse({"status": "Service is available"})

    @app.get("/tasks/{task_id}/status", summary="A task's status")
    async def one_task_status(task_id: str, request: Request) -> Response:
        declared = request.app.state.declared
        return await run_in_threadpool(task_status, _service(request), declared, task_id)

    @app.post("/compute", summary="Queue a task (`ServiceTask`)")
    async def compute(request: Request) -> Response:
        body = await _body(request)
        declared = request.app.state.declared
        base = _base_url(request, "")
        return await run_in_threadpool(compute_task, _service(request), declared, body, base)

    return app
