"""Whether a claimed workflow step runs, and with what input: a pure function of the document
and its finished upstream steps. The worker applies the answer (`workflows/gate.py`).

The rules, in order:

1. A failure handler (`on_failure: {"run": h}` of step s) runs only if s failed.
2. Once a step whose failure is fatal (`on_failure` is not `"continue"`) has failed, no other
   step starts: `upstream_failed`. So does a step whose dependency failed fatally, was cancelled
   or did not run for that reason.
3. A dependency that was skipped skips its dependents, unless they have a `when` (then the
   `when` decides: it can look at skipped steps).
4. A `when` that does not hold skips the step.
5. References are resolved; one into a step that has no result (failed with `"continue"`,
   skipped) takes its `default` or makes the step `upstream_failed`; a path that is not in a
   result fails the step (its input cannot be built).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from conveyor.models import JSON
from conveyor.workflows import conditions, refs
from conveyor.workflows.document import WorkflowSubmit
from conveyor.workflows.graph import Graph

SKIPPED: Final = "skipped"
UPSTREAM_FAILED: Final = "upstream_failed"


@dataclass(frozen=True, slots=True)
class Run:
    input: JSON


@dataclass(frozen=True, slots=True)
class Skip:
    reason: Literal["skipped", "upstream_failed", "cancelled"]
    message: str


@dataclass(frozen=True, slots=True)
class Fail:
    message: str


Decision = Run | Skip | Fail


def decide(
    doc: WorkflowSubmit,
    graph: Graph,
    name: str,
    upstream: Mapping[str, refs.StepView],
    failed: Collection[str] = (),
    *,
    resuming: bool = False,
) -> Decision:
    """What to do with step `name`, given its finished dependencies (`upstream`, by step name)
    and every step of the workflow that has failed so far (`failed`). A step `resuming` after
    its children was decided when it started: it only gets its input resolved again."""
    step = doc.steps[name]
    if resuming:
        return _resolve(step.input, upstream)
    handled = graph.handles.get(name)
    if handled is not None:
        view = upstream.get(handled)
        if view is None or view.state != "failed":
            state = view.state if view else "not finished"
            return Skip(SKIPPED, f"runs only when {handled!r} fails; it is {state}")
    else:
        fatal = sorted(s for s in failed if s in doc.steps and doc.steps[s].fatal)
        if fatal:
            return Skip(UPSTREAM_FAILED, f"step {fatal[0]!r} failed, so the workflow fails")
    for dep in graph.deps[name]:
        if dep == handled:
            continue
        view = upstream.get(dep)
        state = view.state if view is not None else "missing"
        if (state == "failed" and doc.steps[dep].fatal) or state in ("cancelled", UPSTREAM_FAILED):
            return Skip(UPSTREAM_FAILED, f"dependency {dep!r} is {state}")
        if state == "missing":
            return Skip(UPSTREAM_FAILED, f"dependency {dep!r} has no job (deleted?)")
        if state == SKIPPED and step.when is None:
            return Skip(SKIPPED, f"dependency {dep!r} was skipped")
    if step.when is not None and not conditions.evaluate(step.when, upstream):
        return Skip(SKIPPED, "its when condition is false")
    return _resolve(step.input, upstream)


def _resolve(template: JSON, upstream: Mapping[str, refs.StepView]) -> Decision:
    try:
        return Run(refs.resolve(template, lambda ref: refs.lookup(ref, upstream)))
    except refs.Missing as exc:
        return Fail(f"cannot build its input: {exc}")
    except refs.RefError as exc:
        return Skip(UPSTREAM_FAILED, f"cannot build its input: {exc}")
