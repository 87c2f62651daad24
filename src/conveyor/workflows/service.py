"""Workflow use cases over `Service`: submit, get, list, cancel, retry.

A workflow is stored as one record (`workflows/<id>`: the document and each step's job id) and
one job per step, all enqueued in one batch with `depends_on`, so the store releases each step
when its dependencies end, exactly once, in the transaction that ends the last one. The
workflow's state is derived from the jobs whenever it is read.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from conveyor import errors
from conveyor.ids import uuid7
from conveyor.models import NewJob, from_ts
from conveyor.service import Service
from conveyor.store.base import JobSpec, Store, jobs_by_id
from conveyor.webhooks.config import WORKFLOW_EVENTS, validate_webhook
from conveyor.workflows import graph as graphs
from conveyor.workflows import refs
from conveyor.workflows.document import Step, WorkflowSubmit
from conveyor.workflows.status import FINAL_WORKFLOW_STATES
from conveyor.workflows.views import Workflow, WorkflowPage, build

COLLECTION = "workflows"
HOOKS = "workflow_hooks"  # workflows with a webhook whose transitions are not all sent yet
ACTIVE_STATES = frozenset({"blocked", "scheduled", "queued", "running"})
RERUN_STATES = frozenset({"failed", "cancelled", "skipped", "upstream_failed"})


def load(record: dict[str, Any]) -> tuple[WorkflowSubmit, graphs.Graph]:
    """The stored document and its graph (it was checked at submit)."""
    doc = WorkflowSubmit.model_validate(record["document"])
    return doc, graphs.build(doc, graphs.Problems())


def view_of(store: Store, record: dict[str, Any], with_document: bool = False) -> Workflow:
    """The workflow a stored record stands for, its state derived from its steps' jobs now."""
    doc, graph = load(record)
    jobs = jobs_by_id(store, record["jobs"].values())
    return build(record, doc, graph, jobs, with_document=with_document)


def watch_hook(store: Store, record: dict[str, Any], *, again: bool = False) -> None:
    """Have the webhook dispatcher follow this workflow's transitions (if it has a webhook).
    A retry (`again`) starts a new generation, whose transitions are sent again."""
    if not record["document"].get("webhook"):
        return
    if again:
        record["generation"] = int(record.get("generation", 0)) + 1
    hook = {"generation": int(record.get("generation", 0)), "notified": None}
    store.put_record(HOOKS, record["id"], hook)


class Workflows:
    """Workflow operations; `service` validates kinds and inputs and resolves job defaults."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store

    # -- submit -----------------------------------------------------------------------------------

    def check(self, doc: WorkflowSubmit) -> graphs.Graph:
        """Every problem of the document (graph, kinds, inputs), raised as one 422 naming the
        first step at fault."""
        problems = graphs.Problems()
        graph = graphs.build(doc, problems)
        for name, step in doc.steps.items():
            self._check_step(name, step, doc, problems)
        problems.raise_any()
        return graph

    def _check_step(
        self, name: str, step: Step, doc: WorkflowSubmit, problems: graphs.Problems
    ) -> None:
        try:
            kind = self.service.kind(step.kind)
        except errors.KindNotFoundError as exc:
            problems.add(name, exc.message, "kind", type_="kind-not-found")
            return
        try:
            found = list(refs.find(step.input))
        except refs.RefError:
            return  # reported by the graph
        if not found:
            try:
                self.service.validate(kind, step.input)
            except errors.InvalidInputError as exc:
                for problem in exc.details.get("errors", []):
                    problems.add(name, problem["msg"], *problem["loc"], type_=problem["type"])
            return
        for loc, ref in found:
            self._check_ref_field(name, ref, loc, doc, problems)

    def _check_ref_field(
        self, name: str, ref: refs.Ref, loc: refs.Path, doc: WorkflowSubmit,
        problems: graphs.Problems,
    ) -> None:  # fmt: skip
        """A reference into a result must name a field the upstream kind's output has (when
        its output schema lists them)."""
        upstream = doc.steps.get(ref.step)
        if upstream is None or ref.field != "result" or not ref.path:
            return
        kinds = self.service.kinds()
        info = kinds.get(upstream.kind)
        fields = (info.output_schema.get("properties") if info else None) or {}
        if fields and isinstance(ref.path[0], str) and ref.path[0] not in fields:
            problems.add(
                name, f"reference {ref}: kind {upstream.kind!r} has no output field "
                f"{ref.path[0]!r} (it has {', '.join(sorted(fields))})", "input", *loc,
            )  # fmt: skip

    def submit(self, doc: WorkflowSubmit) -> Workflow:
        """Check the document, store it, and enqueue every step in one batch."""
        graph = self.check(doc)
        webhook = None
        if doc.webhook is not None:
            webhook = validate_webhook(doc.webhook, known=WORKFLOW_EVENTS)
        now = self.store.now()
        workflow_id = uuid7(int(now * 1000))
        specs = {name: self._spec(step, now) for name, step in doc.steps.items()}
        ids = {name: spec.id for name, spec in specs.items()}
        batch = [
            dataclasses.replace(
                spec, workflow_id=workflow_id, step=name,
                depends_on=tuple(ids[dep] for dep in graph.deps[name]),
            )
            for name, spec in specs.items()
        ]  # fmt: skip
        document = doc.model_dump(mode="json", by_alias=True, exclude_none=True)
        if webhook is not None:
            document["webhook"] = webhook
        record = {
            "id": workflow_id, "document": document, "jobs": ids,
            "created_at": from_ts(now).isoformat(),  # type: ignore[union-attr]
            "cancel_requested": False,
        }  # fmt: skip
        # The record first: a worker claiming a step reads it. A failed enqueue takes it back.
        self.store.put_record(COLLECTION, workflow_id, record)
        try:
            jobs = self.store.enqueue(batch)
        except BaseException:
            self.store.delete_record(COLLECTION, workflow_id)
            raise
        watch_hook(self.store, record)
        return build(record, doc, graph, {job.id: job for job in jobs}, with_document=True)

    def _spec(self, step: Step, now: float) -> JobSpec:
        new = NewJob(
            kind=step.kind, input=step.input, queue=step.queue, priority=step.priority,
            max_attempts=step.max_attempts, timeout_s=step.timeout_s, backoff_s=step.backoff_s,
            tags=step.tags,
        )  # fmt: skip
        return self.service.spec(new, self.service.kind(step.kind), now)

    # -- reading ----------------------------------------------------------------------------------

    def record(self, workflow_id: str) -> dict[str, Any]:
        record = self.store.get_record(COLLECTION, workflow_id)
        if record is None:
            raise errors.WorkflowNotFoundError(
                f"no workflow {workflow_id!r}", workflow_id=workflow_id
            )
        return record

    def get(self, workflow_id: str, *, with_document: bool = True) -> Workflow:
        """The workflow with every step's state, derived from its jobs now."""
        return self._view(self.record(workflow_id), with_document)

    def _view(self, record: dict[str, Any], with_document: bool = False) -> Workflow:
        return view_of(self.store, record, with_document)

    def list(
        self, cursor: str | None = None, limit: int = 50, state: str | None = None
    ) -> WorkflowPage:
        """Newest first (ids are UUIDv7); `next_cursor` is the last id of the page."""
        keys = sorted((key for key, _ in self.store.list_records(COLLECTION)), reverse=True)
        if cursor is not None:
            keys = [key for key in keys if key < cursor]
        found: list[Workflow] = []
        last: str | None = None
        for key in keys:
            record = self.store.get_record(COLLECTION, key)
            last = key
            if record is None:
                continue
            view = self._view(record)
            if state is None or view.state == state:
                found.append(view)
            if len(found) == limit:
                break
        more = last is not None and last != (keys[-1] if keys else None)
        return WorkflowPage(workflows=found, next_cursor=last if more else None)

    # -- changing ---------------------------------------------------------------------------------

    def cancel(self, workflow_id: str) -> Workflow:
        """Cancel every step not yet ended: waiting and blocked ones at once, running ones
        through their workers. Marked on the record first, so a step released meanwhile is
        cancelled by the worker that claims it."""
        record = self.record(workflow_id)
        view = self._view(record)
        if view.state in FINAL_WORKFLOW_STATES:
            raise errors.InvalidStateError(
                f"workflow {workflow_id} is {view.state}; only a pending or running workflow "
                "can be cancelled", state=view.state,
            )  # fmt: skip
        record["cancel_requested"] = True
        self.store.put_record(COLLECTION, workflow_id, record)
        for step in view.steps:
            if step.job_id is not None and step.state in ACTIVE_STATES:
                # One that ended (or was pruned) since we looked has nothing to cancel.
                with contextlib.suppress(errors.InvalidStateError, errors.JobNotFoundError):
                    self.store.cancel(step.job_id)
        return self.get(workflow_id)

    def retry(self, workflow_id: str) -> Workflow:
        """Run again every step that failed, was cancelled or did not run, and what depends
        on them, in one store transaction; steps that succeeded keep their results."""
        record = self.record(workflow_id)
        view = self._view(record)
        if view.state not in ("failed", "cancelled"):
            raise errors.InvalidStateError(
                f"workflow {workflow_id} is {view.state}; only a failed or cancelled workflow "
                "can be retried", state=view.state,
            )  # fmt: skip
        ids = [s.job_id for s in view.steps if s.state in RERUN_STATES and s.job_id is not None]
        record["cancel_requested"] = False
        watch_hook(self.store, record, again=True)
        self.store.put_record(COLLECTION, workflow_id, record)
        self.store.rewind(ids)
        return self.get(workflow_id)
