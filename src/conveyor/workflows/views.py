"""What the API, client, CLI and dashboard show of a workflow (read models, no I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import ConfigDict, Field

from conveyor.models import JSON, Job, JobError, Model
from conveyor.workflows.document import StepState, WorkflowSubmit
from conveyor.workflows.graph import Graph
from conveyor.workflows.status import WorkflowState, derive, step_state


class WorkflowProgress(Model):
    """Steps done (final in any way) out of the total, and how many are in each state."""

    model_config = ConfigDict(extra="allow")

    done: int
    total: int


class WorkflowStep(Model):
    """One step: its job and the state it is in."""

    name: str
    kind: str
    job_id: str | None
    state: StepState
    depends_on: list[str] = Field(description="Every step it waits for (written or implied).")
    attempt: int = 0
    error: JobError | None = None
    result: JSON = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class Workflow(Model):
    """A workflow: its state and progress are derived from its steps' jobs when read."""

    id: str
    name: str | None = None
    state: WorkflowState
    progress: WorkflowProgress
    tags: list[str] = Field(default_factory=list)
    cancel_requested: bool = False
    created_at: datetime
    finished_at: datetime | None = Field(None, description="When its last step ended.")
    steps: list[WorkflowStep] = Field(default_factory=list)
    document: WorkflowSubmit | None = Field(None, description="As submitted (one workflow only).")


class WorkflowPage(Model):
    workflows: list[Workflow]
    next_cursor: str | None = None


def build(
    record: dict[str, Any],
    doc: WorkflowSubmit,
    graph: Graph,
    jobs: dict[str, Job],
    *,
    with_document: bool = False,
) -> Workflow:
    """The workflow view of a stored record and its steps' jobs (by job id)."""
    ids: dict[str, str] = record["jobs"]
    steps, states = [], {}
    for name, step in doc.steps.items():
        job = jobs.get(ids.get(name, ""))
        states[name] = now = step_state(job)
        steps.append(
            WorkflowStep(
                name=name, kind=step.kind, job_id=ids.get(name), state=now,
                depends_on=list(graph.deps[name]),
                attempt=job.attempt if job else 0, error=job.error if job else None,
                result=job.result if job else None,
                started_at=job.started_at if job else None,
                finished_at=job.finished_at if job else None,
            )
        )  # fmt: skip
    state, progress = derive(doc, states, bool(record.get("cancel_requested")))
    ended = [s.finished_at for s in steps if s.finished_at is not None]
    return Workflow(
        id=record["id"], name=doc.name, state=state, progress=WorkflowProgress(**progress),
        tags=list(doc.tags), cancel_requested=bool(record.get("cancel_requested")),
        created_at=record["created_at"],
        finished_at=max(ended) if ended and state in ("succeeded", "failed", "cancelled") else None,
        steps=steps, document=doc if with_document else None,
    )  # fmt: skip
