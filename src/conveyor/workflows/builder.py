"""A small builder for workflow documents in Python (the document is plain JSON all the same).

flow = Flow("nightly")
fetch = flow.step("fetch", "demo.count", {"to": 3, "delay": 0})
flow.step("double", "demo.count", {"to": ref(fetch, "total")})
client.submit_workflow(flow.document())
"""

from __future__ import annotations

from typing import Any

from conveyor.models import JSON
from conveyor.workflows.document import Condition, Step, WorkflowSubmit


def ref(step: str, *path: str | int, default: JSON = ..., field: str = "result") -> dict[str, Any]:
    """A reference to an upstream step's result (or inside it), for a step's input."""
    value: dict[str, Any] = {"$ref": ["steps", step, field, *path]}
    if default is not ...:
        value["default"] = default
    return value


class Flow:
    """Collects named steps; `document()` is what `POST /v1/workflows` takes."""

    def __init__(self, name: str | None = None, *, tags: list[str] | None = None) -> None:
        self.name = name
        self.tags = list(tags or [])
        self.steps: dict[str, Step] = {}

    def step(
        self,
        name: str,
        kind: str,
        input: JSON = None,
        *,
        depends_on: list[str] | None = None,
        when: Condition | dict[str, Any] | None = None,
        on_failure: str | dict[str, str] = "fail",
        **options: Any,
    ) -> str:
        """Add a step (a job of `kind`); returns its name, to use in `depends_on` and `ref`."""
        self.steps[name] = Step.model_validate(
            {
                "kind": kind, "input": {} if input is None else input,
                "depends_on": depends_on or [], "when": when, "on_failure": on_failure,
                **options,
            }
        )  # fmt: skip
        return name

    def document(self) -> WorkflowSubmit:
        return WorkflowSubmit(name=self.name, steps=self.steps, tags=self.tags)
