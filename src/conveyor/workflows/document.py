"""A workflow document: named steps, each a job, with dependencies, references and conditions.

Everything here is declarative data (pydantic models, no I/O and nothing evaluated): a step's
input may hold references to upstream results (`{"$ref": "steps.fetch.result.items"}`), its
`when` is a condition tree over upstream states and results, and `on_failure` says what a
failure of the step means for the workflow.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from conveyor.models import JSON, KindName, Model, QueueName, Tag

STEP_NAME = r"^[A-Za-z0-9_-]{1,64}$"
StepName = Annotated[str, Field(pattern=STEP_NAME, description="A step name (no dots).")]
MAX_STEPS = 1000
StepState = Literal[
    "blocked", "scheduled", "queued", "running", "succeeded", "failed", "cancelled",
    "skipped", "upstream_failed",
]  # fmt: skip
"""A step as users see it: its job's state, with the two reasons a step did not run."""


class StateIs(Model):
    """True when an upstream step ended in one of these states."""

    step: StepName
    state: StepState | list[StepState] = Field(description="One state or a list of states.")

    def states(self) -> set[str]:
        return {self.state} if isinstance(self.state, str) else set(self.state)


Op = Literal["eq", "ne", "lt", "le", "gt", "ge", "in", "contains", "exists"]


class Compare(Model):
    """Compares a referenced value (see references) with `value`: `exists` needs no value."""

    ref: str | list[str | int] = Field(description='e.g. "steps.check.result.count"')
    op: Op = "eq"
    value: JSON = None


class AllOf(Model):
    all: list[Condition] = Field(min_length=1)


class AnyOf(Model):
    any: list[Condition] = Field(min_length=1)


class NotOf(Model):
    not_: Condition = Field(alias="not")

    model_config = {"extra": "forbid", "populate_by_name": True}


Condition = StateIs | Compare | AllOf | AnyOf | NotOf
AllOf.model_rebuild()
AnyOf.model_rebuild()
NotOf.model_rebuild()


class RunStep(Model):
    """On failure, run this (handler) step; the workflow still counts the failure."""

    run: StepName


FailurePolicy = Literal["fail", "continue"] | RunStep


class Step(Model):
    """One job of the workflow and when it runs."""

    kind: KindName
    input: JSON = Field(default_factory=dict)
    depends_on: list[StepName] = Field(default_factory=list, max_length=MAX_STEPS)
    when: Condition | None = Field(
        None, description="Run only if this holds once the dependencies are done, else skip."
    )
    on_failure: FailurePolicy = Field(
        "fail",
        description='"fail": the workflow fails and no further step starts; "continue": '
        'dependents run anyway; {"run": "<step>"}: run that handler step, then fail.',
    )
    queue: QueueName | None = None
    priority: int = Field(0, ge=-1000, le=1000)
    max_attempts: int | None = Field(None, ge=1, le=1000)
    timeout_s: float | None = Field(None, gt=0, le=7 * 86_400)
    backoff_s: float | None = Field(None, ge=0, le=86_400)
    tags: list[Tag] = Field(default_factory=list, max_length=50)

    @property
    def handler(self) -> str | None:
        """The step run when this one fails, if any."""
        return self.on_failure.run if isinstance(self.on_failure, RunStep) else None

    @property
    def fatal(self) -> bool:
        """Whether a failure of this step fails the workflow."""
        return self.on_failure != "continue"


class WorkflowSubmit(Model):
    """`POST /v1/workflows`: the steps (by name) and the workflow's own settings."""

    name: str | None = Field(None, max_length=200, description="A label for people.")
    steps: dict[StepName, Step] = Field(min_length=1, max_length=MAX_STEPS)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    webhook: dict[str, Any] | None = Field(
        None, description="Called on the workflow's own transitions (like a job's webhook)."
    )
