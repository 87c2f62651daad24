"""The step graph of a workflow document, checked: every problem is reported naming its step.

A step depends on the steps in its `depends_on`, on every step its input references or its
`when` looks at (written or not), and a failure handler (`on_failure: {"run": h}`) on the step
it handles. The graph must be acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conveyor import errors
from conveyor.workflows import conditions, refs
from conveyor.workflows.document import Step, WorkflowSubmit


@dataclass
class Problems:
    """Problems found so far, each naming a step; raised together as one 422."""

    items: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, msg: str, *loc: Any, type_: str = "invalid-step") -> None:
        self.items.append({"loc": ["steps", step, *loc], "msg": msg, "type": type_, "step": step})

    def raise_any(self) -> None:
        if not self.items:
            return
        first = self.items[0]
        more = f" (and {len(self.items) - 1} more problems)" if len(self.items) > 1 else ""
        raise errors.InvalidWorkflowError(
            f"step {first['step']!r}: {first['msg']}{more}",
            step=first["step"],
            errors=self.items,
        )


@dataclass(frozen=True)
class Graph:
    """Each step's full set of dependencies (names), and who handles whose failures."""

    deps: dict[str, tuple[str, ...]]
    handles: dict[str, str]  # handler step -> the step whose failure it handles

    def dependents(self, steps: set[str]) -> set[str]:
        """`steps` and every step that depends on one of them, transitively."""
        found = set(steps)
        changed = True
        while changed:
            changed = False
            for name, deps in self.deps.items():
                if name not in found and found.intersection(deps):
                    found.add(name)
                    changed = True
        return found


def build(doc: WorkflowSubmit, problems: Problems) -> Graph:
    """The graph of `doc`; problems (unknown steps, bad references, cycles) go to `problems`."""
    names = set(doc.steps)
    handles: dict[str, str] = {}
    deps: dict[str, tuple[str, ...]] = {}
    for name, step in doc.steps.items():
        handler = step.handler
        if handler is None:
            continue
        if handler == name or handler not in names:
            problems.add(name, f"on_failure runs unknown step {handler!r}", "on_failure", "run")
        elif handler in handles:
            problems.add(name, f"step {handler!r} already handles {handles[handler]!r}'s failure",
                         "on_failure", "run")  # fmt: skip
        else:
            handles[handler] = name
    for name, step in doc.steps.items():
        wanted = dict.fromkeys(_named(name, step, names, problems))
        if name in handles:
            wanted[handles[name]] = None
        deps[name] = tuple(wanted)
    graph = Graph(deps, handles)
    cycle = find_cycle(graph.deps)
    if cycle:
        problems.add(cycle[0], "steps form a cycle: " + " -> ".join(cycle), "depends_on")
    return graph


def _named(name: str, step: Step, names: set[str], problems: Problems) -> list[str]:
    """The steps `step` names (depends_on, references, when) that exist; problems for others."""
    found: list[str] = []

    def check(other: str, what: str, *loc: Any) -> None:
        if other == name:
            problems.add(name, f"{what} names the step itself", *loc)
        elif other not in names:
            problems.add(name, f"{what} names unknown step {other!r}", *loc)
        else:
            found.append(other)

    for index, other in enumerate(step.depends_on):
        check(other, "depends_on", "depends_on", index)
    try:
        for loc, ref in refs.find(step.input):
            check(ref.step, f"reference {ref}", "input", *loc)
    except refs.RefError as exc:
        problems.add(name, str(exc), "input")
    if step.when is not None:
        try:
            for other, what in conditions.steps_named(step.when):
                check(other, f"when ({what})", "when")
        except refs.RefError as exc:
            problems.add(name, f"when: {exc}", "when")
    return found


def find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    """A cycle as [a, b, ..., a] if the graph has one, else []. Iterative (no recursion limit)."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    for start in deps:
        if color[start] != white:
            continue
        path = [start]
        stack = [iter(deps[start])]
        color[start] = grey
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                color[path.pop()] = black
                stack.pop()
            elif color.get(nxt, black) == grey:
                return [*path[path.index(nxt) :], nxt]
            elif color.get(nxt, black) == white:
                color[nxt] = grey
                path.append(nxt)
                stack.append(iter(deps[nxt]))
    return []
