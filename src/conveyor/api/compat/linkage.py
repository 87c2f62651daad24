"""The Anonlink Entity Service's REST API at `/api/v1/…`, on `linkage.*` jobs.

Same paths, bodies, states and tokens as the original (`openapi.yaml` of
data61/anonlink-entity-service, and where they differ its views at 7508502), so
`anonlink-client` works unmodified when given `--server http://host:port`. The raw token
travels in the `Authorization` header; a missing project or run answers 403 (existence does not
leak), then a missing header 401 where the original said so (uploads, a project's description,
its run list); errors are problem+json. Which token reads what is the original's: the result
token everything; receipt tokens a permutations project's description, run status and own
result; update tokens only their upload. A run's work is
conveyor jobs tagged `linkage-run:<run_id>` (the run job and its chunk child jobs), visible in
`/v1/jobs`, the CLI and the dashboard. Creating a project needs no token, as in the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.deps import per_app
from conveyor.api.problems import problem
from conveyor.api.routes.jobs import read_json
from conveyor.kinds.linkage import encodings, plan
from conveyor.kinds.linkage.runs import (
    Forbidden,
    Invalid,
    Linkage,
    NotReady,
    RunFailed,
    Unauthorized,
)
from conveyor.service import Service

log = logging.getLogger(__name__)
MAX_UPLOAD_BYTES = 1 << 30
#: How often the runs in progress are advanced; with none, how often to look for new ones.
ADVANCE_EVERY_S = 0.25
IDLE_EVERY_S = 2.0
T = TypeVar("T")


class LinkageSettings(BaseSettings):
    """`CONVEYOR_LINKAGE_*`: how runs are split into sub-jobs."""

    model_config = SettingsConfigDict(env_prefix="CONVEYOR_LINKAGE_")
    chunk_comparisons: int = Field(
        plan.DEFAULT_AIM, ge=1000, description="Comparisons per chunk sub-job (aimed at)."
    )
    rate_limit: float = Field(
        0.0, ge=0, description="Requests per second per client (0: no limit); past it, 503."
    )


class RateLimiter:
    """A token bucket per client (its token, else its address), as the original's nginx
    limit: past the rate the API answers 503 and the client retries with backoff."""

    def __init__(self, rate: float) -> None:
        self.rate, self.burst = rate, max(1.0, rate)
        self.buckets: dict[str, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self.lock:
            level, at = self.buckets.get(client, (self.burst, now))
            level = min(self.burst, level + (now - at) * self.rate)
            if len(self.buckets) > 10_000:  # forget idle clients
                self.buckets.clear()
            if level < 1.0:
                self.buckets[client] = (level, now)
                return False
            self.buckets[client] = (level - 1.0, now)
            return True


async def rate_limit(request: Request) -> None:
    """503 (`Retry-After: 1`) once a client goes past `CONVEYOR_LINKAGE_RATE_LIMIT`."""
    limiter = per_app(
        request.app, "linkage_limiter", lambda _: RateLimiter(LinkageSettings().rate_limit)
    )
    if limiter.rate <= 0:
        return
    client = _token(request) or (request.client.host if request.client else "-")
    if not limiter.allow(client):
        raise HTTPException(503, "Rate limit exceeded: try again later",
                            headers={"Retry-After": "1"})  # fmt: skip


def _for_app(app: FastAPI) -> Linkage | None:
    service: Service | None = getattr(app.state, "service", None)
    if service is None:
        return None
    return per_app(app, "linkage", lambda svc: Linkage(svc, LinkageSettings().chunk_comparisons))


def _linkage(request: Request) -> Linkage:
    found = _for_app(request.app)
    assert found is not None  # the app's lifespan has opened the service
    return found


async def _advance_forever(app: FastAPI) -> None:
    """Move active runs along even when no client polls (the original's Celery chord)."""
    busy = 0
    while True:
        await asyncio.sleep(ADVANCE_EVERY_S if busy else IDLE_EVERY_S)
        linkage = _for_app(app)
        if linkage is None:
            continue
        try:
            busy = await run_in_threadpool(linkage.advance_all)
        except Exception:  # keep the loop alive across store hiccups; logged for the operator
            log.exception("linkage: advancing runs failed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_advance_forever(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


router = APIRouter(
    prefix="/api/v1",
    tags=["linkage (Anonlink Entity Service API)"],
    lifespan=lifespan,
    dependencies=[Depends(rate_limit)],
)


def _token(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value and value.lower().startswith("bearer "):
        value = value[7:]
    return value.strip() if value else None


async def _call(func: Callable[..., T], *args: Any) -> T | Response:
    """Run a use case in the threadpool; map its exceptions to the original's statuses."""
    try:
        return await run_in_threadpool(func, *args)
    except Forbidden as exc:
        return problem(403, "linkage-forbidden", str(exc), title="Forbidden")
    except Unauthorized as exc:
        return problem(401, "linkage-unauthorized", str(exc), title="Unauthorized")
    except (Invalid, encodings.EncodingError) as exc:
        return _invalid(str(exc))
    except NotReady as exc:
        return problem(404, "linkage-run-not-complete", str(exc), title="Not Found")
    except RunFailed as exc:
        return problem(500, "linkage-run-failed", str(exc), title="Run failed")
    except errors.ConveyorError as exc:
        return problem(exc.status, exc.type, exc.message)


def _invalid(message: str) -> Response:
    return problem(400, "linkage-invalid", message, title="Bad Request")


async def _json(request: Request) -> Any:
    """The body as JSON; a 400 problem `Response` if it is not JSON."""
    try:
        return await read_json(request, MAX_UPLOAD_BYTES)
    except RequestValidationError:
        return _invalid("the body is not valid JSON")


async def _upload_token(lk: Linkage, project_id: str, request: Request) -> str | Response:
    """The request's upload token, checked first as the original did: 403 for a missing
    project or a token that is not the project's, 401 without a token."""
    token = _token(request)
    found = await _call(lambda: lk.project(project_id, token, upload=True, token_required=True))
    return found if isinstance(found, Response) else token or ""


BLOCKING_OFF = "Blocking has been disabled for this project, but received blocking information"
BLOCKING_ON = 'Expecting blocking information. Either in "blocks" or "clksnblocks"'


def _consistent(data: Any, uses_blocking: bool) -> None:
    """The original's `abort_if_inconsistent_upload`: blocks where the project has none, or
    none where it needs them, are refused with 403 before the encodings are read."""
    if not isinstance(data, dict):
        return  # from_json says what is wrong with it
    has_blocks = "blocks" in data or "clknblocks" in data
    if has_blocks and not uses_blocking:
        raise Forbidden(BLOCKING_OFF)
    if uses_blocking and not has_blocks:
        raise Forbidden(BLOCKING_ON)


def _out(value: Any, status: int = 200) -> Response:
    return value if isinstance(value, Response) else JSONResponse(value, status_code=status)


@router.get("/status", summary="Service status")
async def status(request: Request) -> Response:
    lk = _linkage(request)
    found = await _call(
        lambda: {"status": "ok", "project_count": len(lk.list_projects()), "rate": lk.rate()}
    )
    return _out(found)


@router.get("/version", summary="Versions")
async def version() -> Response:
    from importlib.metadata import version as dist_version

    body = {
        "anonlink": dist_version("anonlink"),
        "entityservice": f"conveyor-{dist_version('conveyor')}",
        "python": platform.python_version(),
    }
    return JSONResponse(body)


@router.get("/projects", summary="List projects")
async def list_projects(request: Request) -> Response:
    return _out(await _call(_linkage(request).list_projects))


@router.post("/projects", summary="Create a project", status_code=201)
async def create_project(request: Request) -> Response:
    data = await _json(request)
    if isinstance(data, Response):
        return data
    return _out(await _call(_linkage(request).create_project, data), 201)


@router.get("/projects/{project_id}", summary="Describe a project")
async def get_project(project_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    return _out(await _call(lambda: lk.describe(
        lk.project(project_id, token, receipt=True, token_required=True))))  # fmt: skip


@router.delete("/projects/{project_id}", summary="Delete a project", status_code=204)
async def delete_project(project_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    done = await _call(lambda: lk.delete_project(lk.project(project_id, token)))
    return done if isinstance(done, Response) else Response(status_code=204)


@router.post("/projects/{project_id}/clks", summary="Upload encodings (JSON)", status_code=201)
async def upload_clks(project_id: str, request: Request) -> Response:
    lk = _linkage(request)
    token = await _upload_token(lk, project_id, request)
    if isinstance(token, Response):
        return token
    data = await _json(request)
    if isinstance(data, Response):
        return data

    def parse(record: dict[str, Any]) -> encodings.Packed:
        _consistent(data, record["uses_blocking"])
        return encodings.from_json(data, record["uses_blocking"], record["size"])

    return _out(await _call(lk.upload, project_id, token, parse), 201)


@router.post("/projects/{project_id}/binaryclks", summary="Upload binary encodings",
             status_code=201)  # fmt: skip
async def upload_binary(project_id: str, request: Request) -> Response:
    lk = _linkage(request)
    token = await _upload_token(lk, project_id, request)
    if isinstance(token, Response):
        return token
    try:
        count, size = int(request.headers["hash-count"]), int(request.headers["hash-size"])
    except (KeyError, ValueError):
        return _invalid("the Hash-Count and Hash-Size headers are required integers")
    if count * size > MAX_UPLOAD_BYTES:
        return problem(413, "linkage-too-large", f"uploads are limited to {MAX_UPLOAD_BYTES} bytes")
    body = await request.body()

    def parse(record: dict[str, Any]) -> encodings.Packed:
        if record["uses_blocking"]:
            raise Invalid("this project uses blocking: upload JSON with blocks instead")
        return encodings.from_binary(body, count, size, record["size"])

    return _out(await _call(lk.upload, project_id, token, parse), 201)


@router.get("/projects/{project_id}/authorize-external-upload",
            summary="Temporary object-store credentials")  # fmt: skip
async def authorize_external_upload(project_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    found = await _call(lambda: lk.project(project_id, token, upload=True, token_required=True))
    if isinstance(found, Response):
        return found
    storage = lk.service.storage
    issue = getattr(storage, "temporary_credentials", None)
    if issue is None:
        return problem(500, "linkage-external-upload-unavailable",
                       f"external uploads are not available: the storage backend"
                       f" ({type(storage).__name__}) cannot issue temporary object-store"
                       " credentials; upload the encodings to /clks instead",
                       title="Not available")  # fmt: skip
    return _out(await _call(issue, f"jobs/{project_id}/in/"))


@router.get("/projects/{project_id}/runs", summary="List runs")
async def list_runs(project_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)

    def runs() -> list[dict[str, Any]]:
        lk.project(project_id, token, token_required=True)  # the result token only
        return lk.list_runs(project_id)

    return _out(await _call(runs))


@router.post("/projects/{project_id}/runs", summary="Create a run", status_code=201)
async def create_run(project_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    data = await _json(request)
    if isinstance(data, Response):
        return data
    return _out(await _call(lambda: lk.create_run(lk.project(project_id, token), data)), 201)


def _run(
    lk: Linkage, project_id: str, run_id: str, token: str | None, receipt: bool = False
) -> dict[str, Any]:
    """The run, for the result token (or, with `receipt`, a permutations receipt token)."""
    lk.project(project_id, token, receipt=receipt)
    return lk.run(project_id, run_id)


@router.get("/projects/{project_id}/runs/{run_id}", summary="Describe a run")
async def get_run(project_id: str, run_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    return _out(await _call(lambda: lk.describe_run(_run(lk, project_id, run_id, token))))


@router.delete("/projects/{project_id}/runs/{run_id}", summary="Delete a run", status_code=204)
async def delete_run(project_id: str, run_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)

    def delete() -> None:
        lk.project(project_id, token)
        lk.delete_run(lk.run(project_id, run_id))

    done = await _call(delete)
    return done if isinstance(done, Response) else Response(status_code=204)


@router.get("/projects/{project_id}/runs/{run_id}/status", summary="A run's status")
async def run_status(project_id: str, run_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)
    return _out(await _call(lambda: lk.status(_run(lk, project_id, run_id, token, receipt=True))))


@router.get("/projects/{project_id}/runs/{run_id}/result", summary="A run's result")
async def run_result(project_id: str, run_id: str, request: Request) -> Response:
    lk, token = _linkage(request), _token(request)

    def result() -> Any:
        record = lk.project(project_id, token, receipt=True)
        return lk.result(record, lk.run(project_id, run_id), token or "")

    return _out(await _call(result))
