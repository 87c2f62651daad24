"""Workers: hosts, processes, what each runs, last heartbeat, and a drain request.

Drain is asked for with a record the supervisor reads on its heartbeat: collection
`worker_commands`, key = the worker's id, value `{"command": "drain", "requested_at": <epoch s>,
"by": <key name>}`. The supervisor that finds its record begins a graceful drain (as on SIGTERM)
and deletes the record.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from conveyor.dashboard import render
from conveyor.dashboard.web import DashboardRoute, ServiceDep, ViewerDep, posted, see_other
from conveyor.service import Service

router = APIRouter(route_class=DashboardRoute)

COMMANDS = "worker_commands"


def _load(service: Service) -> tuple[list[object], set[str]]:
    workers = service.store.workers()
    requested = {key for key, _ in service.store.list_records(COMMANDS)}
    return list(workers), requested


@router.get("/workers", include_in_schema=False)
async def workers_page(request: Request, viewer: ViewerDep, service: ServiceDep) -> Response:
    workers, requested = await run_in_threadpool(_load, service)
    return render.page(
        request, "workers.html", workers=workers, requested=requested, now=service.store.now()
    )


@router.post("/workers/{worker_id}/drain", include_in_schema=False)
async def drain(
    request: Request, worker_id: str, viewer: ViewerDep, service: ServiceDep
) -> Response:
    await posted(request, viewer, "admin")
    known = {w.id for w in await run_in_threadpool(service.store.workers)}
    if worker_id not in known:
        return render.page(
            request, "error.html", 404, status=404, message="No such worker is online."
        )
    value = {"command": "drain", "requested_at": service.store.now(), "by": viewer.principal.name}
    await run_in_threadpool(service.store.put_record, COMMANDS, worker_id, value)
    return see_other("/ui/workers")
