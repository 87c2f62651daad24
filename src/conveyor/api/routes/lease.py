"""The lease API: external workers (any language) claim, heartbeat and settle jobs over HTTP.

Every call after the lease presents the token it returned; a stale token (the lease expired and
was rescued, the job was cancelled or already settled) answers 409 `stale-lease` and changes
nothing, exactly like the store's fencing for in-process workers.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from conveyor import errors
from conveyor.api.auth import Principal, require_scope
from conveyor.api.deps import ServiceDep
from conveyor.api.schemas import (
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    HeartbeatResult,
    LeasedJob,
    LeaseRequest,
    LeaseResult,
    ReleaseRequest,
    problems,
)
from conveyor.models import Job
from conveyor.store import Beat, BeatStatus, Outcome, Settlement
from conveyor.workflows.gate import Gate

router = APIRouter(prefix="/v1", tags=["lease"])

Worker = Annotated[Principal, Depends(require_scope("work"))]
QueuePath = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]
FENCED = problems(401, 403, 404, 409, 422)


def stale(job_id: str) -> errors.StaleLeaseError:
    return errors.StaleLeaseError(
        f"the lease token for job {job_id} is not current (expired and rescued, cancelled, or"
        " already settled); nothing was changed",
        job_id=job_id,
    )


@router.post(
    "/queues/{queue}/lease",
    summary="Lease jobs for an external worker",
    responses=problems(401, 403, 422),
)
async def lease(
    queue: QueuePath, body: LeaseRequest, service: ServiceDep, principal: Worker
) -> LeaseResult:
    """Up to `n` due jobs (highest priority, then oldest), each with its lease token. Renew
    the lease with /heartbeat before `expires_at`, then /complete, /fail or /release."""
    owner = f"http:{principal.name}:{body.worker}"
    store = service.store
    # Workflow steps are decided as the in-process worker decides them: skipped ones are
    # settled here and not handed out; the others come with their references resolved.
    gate = Gate(store)
    jobs = await run_in_threadpool(
        lambda: gate.admit(
            store.claim([queue], owner, body.n, body.lease_s, kinds=body.kinds, tag=body.tag)
        )
    )
    leased = [
        LeasedJob(job=j, token=j.lease.token, expires_at=j.lease.expires_at)
        for j in jobs
        if j.lease is not None
    ]
    return LeaseResult(jobs=leased)


@router.post("/jobs/{job_id}/heartbeat", summary="Renew a lease", responses=FENCED)
async def heartbeat(
    job_id: str, body: HeartbeatRequest, service: ServiceDep, principal: Worker
) -> HeartbeatResult:
    """Extend the lease, record progress and log lines. `cancel`: stop the job."""
    beat = Beat(job_id, body.token, body.progress, tuple(body.logs))
    status = await run_in_threadpool(
        lambda: service.store.heartbeat([beat], body.lease_s).get(job_id, BeatStatus.LOST)
    )
    if status is BeatStatus.LOST:
        await run_in_threadpool(service.get, job_id)  # unknown job: 404, not 409
        raise stale(job_id)
    return HeartbeatResult(status="cancel" if status is BeatStatus.CANCEL else "ok")


async def _settle(service: ServiceDep, settlement: Settlement) -> Job:
    def run() -> Job:
        if not service.store.settle([settlement])[0]:
            service.get(settlement.job_id)
            raise stale(settlement.job_id)
        return service.get(settlement.job_id)

    return await run_in_threadpool(run)


@router.post("/jobs/{job_id}/complete", summary="Finish a leased job", responses=FENCED)
async def complete(
    job_id: str, body: CompleteRequest, service: ServiceDep, principal: Worker
) -> Job:
    """Store the result; the job succeeds. Upload output files before this."""
    return await _settle(service, Settlement(job_id, body.token, Outcome.SUCCEEDED, body.result))


@router.post("/jobs/{job_id}/fail", summary="Fail a leased job", responses=FENCED)
async def fail(job_id: str, body: FailRequest, service: ServiceDep, principal: Worker) -> Job:
    """Record the error; retried with backoff while attempts remain, unless `retry` is false."""
    return await _settle(
        service,
        Settlement(job_id, body.token, Outcome.FAILED, error=body.error, retry=body.retry),
    )


@router.post("/jobs/{job_id}/release", summary="Hand a lease back", responses=FENCED)
async def release(job_id: str, body: ReleaseRequest, service: ServiceDep, principal: Worker) -> Job:
    """Put the job back in its queue without using an attempt (e.g. the worker is stopping)."""
    return await _settle(service, Settlement(job_id, body.token, Outcome.RELEASED))
