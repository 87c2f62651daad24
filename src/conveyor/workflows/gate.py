"""Claim-time decisions for workflow steps, in the worker supervisor.

The store releases a step when its dependencies have ended, whatever their outcome; whether it
should run, and with what input, is decided here when a worker claims it (`decide.py`). A step
that should not run is settled `cancelled` with reason `skipped` or `upstream_failed` (or
plainly cancelled when its workflow was), which releases its own dependents in the same store
transaction; one whose input cannot be built fails for good with reason `invalid_input`. Jobs
that are not workflow steps pass through untouched, with no store call.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from conveyor import errors
from conveyor.models import Job, JobError, JobFilter, JobState
from conveyor.store.base import Settlement, Store, jobs_by_id
from conveyor.store.rules import Outcome
from conveyor.workflows import refs
from conveyor.workflows.decide import Decision, Fail, Run, Skip, decide
from conveyor.workflows.document import WorkflowSubmit
from conveyor.workflows.graph import Graph
from conveyor.workflows.service import COLLECTION, load
from conveyor.workflows.status import step_state

log = logging.getLogger("conveyor.worker")

CACHE_SIZE = 256  # parsed documents kept (they never change; the cancel flag is re-read)
MAX_FAILED = 1000


class Gate:
    """Turns claimed jobs into the ones to run; settles the others through `settle` (the
    worker's group commit), or at once without one (the HTTP lease API)."""

    def __init__(self, store: Store, settle: Callable[[Settlement], None] | None = None) -> None:
        self.store = store
        self.settle = settle or self._settle_now
        self._docs: OrderedDict[str, tuple[WorkflowSubmit, Graph]] = OrderedDict()

    def admit(self, jobs: list[Job]) -> list[Job]:
        """The claimed jobs to run (workflow steps with their references resolved)."""
        steps = [job for job in jobs if _undecided(job)]
        if not steps:
            return jobs
        try:
            verdicts = self._decide_all(steps)
        except errors.StoreUnavailableError as exc:
            # Undecidable now: hand them back unstarted (no attempt used) for a later claim.
            log.warning("store unavailable deciding workflow steps (%s); releasing them", exc)
            for job in steps:
                self.settle(Settlement(job.id, _token(job), Outcome.RELEASED))
            return [job for job in jobs if not _undecided(job)]
        admitted = []
        for job in jobs:
            verdict = verdicts.get(job.id)
            if verdict is None:
                admitted.append(job)
            elif isinstance(verdict, Run):
                admitted.append(job.model_copy(update={"input": verdict.input}))
            else:
                self._settle_unrun(job, verdict)
        return admitted

    def _settle_now(self, settlement: Settlement) -> None:
        self.store.settle([settlement])

    def _decide_all(self, steps: Sequence[Job]) -> dict[str, Decision | None]:
        records: dict[str, dict[str, Any] | None] = {}
        for job in steps:
            assert job.workflow_id is not None
            if job.workflow_id not in records:
                records[job.workflow_id] = self.store.get_record(COLLECTION, job.workflow_id)
        upstream = jobs_by_id(self.store, {dep for job in steps for dep in job.depends_on})
        failed: dict[str, list[str]] = {}
        verdicts: dict[str, Decision | None] = {}
        for job in steps:
            assert job.workflow_id is not None and job.step is not None
            record = records[job.workflow_id]
            if record is None:
                verdicts[job.id] = None  # its workflow was deleted: run it as a plain job
                continue
            if record.get("cancel_requested") and job.continuation is None:
                verdicts[job.id] = Skip("cancelled", "its workflow was cancelled")
                continue
            doc, graph = self._document(job.workflow_id, record)
            if job.step not in doc.steps:
                verdicts[job.id] = None
                continue
            if job.workflow_id not in failed:
                failed[job.workflow_id] = self._failed_steps(job.workflow_id)
            views = {
                dep.step: refs.StepView(step_state(dep), dep.id, dep.result)
                for dep_id in job.depends_on
                if (dep := upstream.get(dep_id)) is not None and dep.step is not None
            }
            resuming = job.continuation is not None
            verdicts[job.id] = decide(
                doc, graph, job.step, views, failed[job.workflow_id], resuming=resuming
            )
        return verdicts

    def _document(self, workflow_id: str, record: dict[str, Any]) -> tuple[WorkflowSubmit, Graph]:
        cached = self._docs.get(workflow_id)
        if cached is None:
            cached = self._docs[workflow_id] = load(record)
            while len(self._docs) > CACHE_SIZE:
                self._docs.popitem(last=False)
        else:
            self._docs.move_to_end(workflow_id)
        return cached

    def _failed_steps(self, workflow_id: str) -> list[str]:
        page = self.store.list_jobs(
            JobFilter(workflow_id=workflow_id, state=[JobState.FAILED]), None, MAX_FAILED
        )
        return [job.step for job in page.jobs if job.step is not None]

    def _settle_unrun(self, job: Job, verdict: Skip | Fail) -> None:
        log.info("workflow %s step %s: %s", job.workflow_id, job.step, verdict.message)
        if isinstance(verdict, Fail):
            bad = JobError(type="InvalidInput", message=verdict.message, reason="invalid_input")
            self.settle(Settlement(job.id, _token(job), Outcome.FAILED, error=bad, retry=False))
            return
        why = None
        if verdict.reason != "cancelled":
            kind = "Skipped" if verdict.reason == "skipped" else "UpstreamFailed"
            why = JobError(type=kind, message=verdict.message, reason=verdict.reason)
        self.settle(Settlement(job.id, _token(job), Outcome.CANCELLED, error=why))


def _undecided(job: Job) -> bool:
    """A workflow step: claimed to start, or to resume after its children (then its input
    is resolved again, as the continuation gets it too, but it was decided when it started)."""
    return job.workflow_id is not None and job.step is not None


def _token(job: Job) -> str:
    assert job.lease is not None
    return job.lease.token
