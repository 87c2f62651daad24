"""A workflow's state and progress, derived from its steps' jobs every time it is read.

Nothing about a workflow's state is stored, so it can never disagree with its steps:

- `succeeded`: every step is final and no failure counts (`on_failure: "continue"` ones don't);
- `failed`: every step is final and a step whose failure is fatal failed;
- `cancelled`: every step is final, none failed fatally, and a step was cancelled by a user
  (not skipped or `upstream_failed`) or the workflow was cancelled;
- `running`: some step has started or finished, and not all are final;
- `pending`: no step has started yet.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Literal

from conveyor.models import Job, JobState
from conveyor.workflows.document import StepState, WorkflowSubmit

WorkflowState = Literal["pending", "running", "succeeded", "failed", "cancelled"]
FINAL_WORKFLOW_STATES = frozenset({"succeeded", "failed", "cancelled"})
SKIP_REASONS = frozenset({"skipped", "upstream_failed"})


def step_state(job: Job | None) -> StepState:
    """The job's state, with `skipped` and `upstream_failed` told apart from a cancel."""
    if job is None:
        return "cancelled"  # its job was deleted: it will never run
    if job.state is JobState.CANCELLED and job.error and job.error.reason in SKIP_REASONS:
        return "skipped" if job.error.reason == "skipped" else "upstream_failed"
    state: StepState = job.state.value
    return state


def derive(
    doc: WorkflowSubmit, states: Mapping[str, StepState], cancelled: bool = False
) -> tuple[WorkflowState, dict[str, int]]:
    """The workflow's state and progress (`done`, `total` and a count per step state)."""
    counts = Counter(states.values())
    final = {"succeeded", "failed", "cancelled", "skipped", "upstream_failed"}
    done = sum(n for state, n in counts.items() if state in final)
    progress: dict[str, int] = {"done": done, "total": len(doc.steps)}
    progress.update(sorted(counts.items()))
    if done < len(doc.steps):
        started = done or counts["running"]
        return ("running" if started else "pending"), progress
    if any(state == "failed" and doc.steps[name].fatal for name, state in states.items()):
        return "failed", progress
    if cancelled or counts["cancelled"]:
        return "cancelled", progress
    return "succeeded", progress
