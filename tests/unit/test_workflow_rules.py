"""Workflow documents, references, conditions, the graph check, claim-time decisions and the
derived state: pure functions, no store."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conveyor import errors
from conveyor.workflows import Flow, ref, refs
from conveyor.workflows import graph as graphs
from conveyor.workflows.conditions import evaluate
from conveyor.workflows.decide import Fail, Run, Skip, decide
from conveyor.workflows.document import WorkflowSubmit
from conveyor.workflows.refs import StepView
from conveyor.workflows.status import derive

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


def doc(steps: dict[str, Any]) -> WorkflowSubmit:
    return WorkflowSubmit.model_validate({"steps": steps})


def check(steps: dict[str, Any]) -> graphs.Graph:
    problems = graphs.Problems()
    graph = graphs.build(doc(steps), problems)
    problems.raise_any()
    return graph


def ok(result: Any = None, job_id: str = "j") -> StepView:
    return StepView("succeeded", job_id, result)


# -- references ------------------------------------------------------------------------------------


def test_parse_dotted_and_list_references() -> None:
    assert refs.parse("steps.fetch.result.items.0") == refs.Ref("fetch", "result", ("items", 0))
    assert refs.parse(["steps", "f", "result", "a.b"]) == refs.Ref("f", "result", ("a.b",))
    assert refs.parse("steps.f.id") == refs.Ref("f", "id")


@pytest.mark.parametrize(
    "raw",
    ["", "fetch.result", "steps.f", "steps.f.input", "steps.f.id.x", "steps..result", 3,
     ["steps", "f", "result", True]],
)  # fmt: skip
def test_malformed_references_are_refused(raw: Any) -> None:
    with pytest.raises(refs.RefError):
        refs.parse(raw)


def test_find_reports_where_a_bad_reference_is() -> None:
    with pytest.raises(refs.RefError, match=r"input\['a'\]\[1\]"):
        list(refs.find({"a": [1, {"$ref": "nope"}]}))
    with pytest.raises(refs.RefError, match="only \\$ref and default"):
        list(refs.find({"$ref": "steps.a.result", "extra": 1}))


@settings(deadline=None)  # a loaded CI machine must not fail a pure test
@given(JSON_VALUES)
def test_resolving_a_value_without_references_changes_nothing(value: Any) -> None:
    if not list(refs.find(value)):
        assert refs.resolve(value, lambda r: pytest.fail("no reference to resolve")) == value


@settings(deadline=None)  # a loaded CI machine must not fail a pure test
@given(JSON_VALUES, st.lists(st.text(min_size=1, alphabet="abc"), max_size=3))
def test_a_reference_resolves_to_the_value_at_its_path(leaf: Any, keys: list[str]) -> None:
    result: Any = leaf
    for key in reversed(keys):
        result = {key: result}
    template = {"x": [{"$ref": ["steps", "up", "result", *keys]}]}
    assert refs.resolve(template, lambda r: refs.lookup(r, {"up": ok(result)})) == {"x": [leaf]}


def test_lookup_of_a_missing_path_or_an_unsuccessful_step() -> None:
    steps = {"up": ok({"items": [1, 2]}), "bad": StepView("failed", "j2")}
    assert refs.lookup(refs.parse("steps.up.result.items.-1"), steps) == 2
    assert refs.lookup(refs.parse("steps.bad.id"), steps) == "j2"
    with pytest.raises(refs.Missing):
        refs.lookup(refs.parse("steps.up.result.items.5"), steps)
    with pytest.raises(refs.RefError) as info:
        refs.lookup(refs.parse("steps.bad.result"), steps)
    assert not isinstance(info.value, refs.Missing)
    default = {"$ref": "steps.bad.result.x", "default": 7}
    assert refs.resolve(default, lambda r: refs.lookup(r, steps)) == 7


# -- conditions -----------------------------------------------------------------------------------


def cond(raw: dict[str, Any]) -> Any:
    return doc({"a": {"kind": "noop"}, "b": {"kind": "noop", "when": raw}}).steps["b"].when


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"step": "a", "state": "succeeded"}, True),
        ({"step": "a", "state": ["failed", "skipped"]}, False),
        ({"ref": "steps.a.result.n", "op": "gt", "value": 2}, True),
        ({"ref": "steps.a.result.n", "op": "lt", "value": 2}, False),
        ({"ref": "steps.a.result.n", "op": "eq", "value": 3}, True),
        ({"ref": "steps.a.result.n", "op": "eq", "value": 3.0}, True),
        ({"ref": "steps.a.result.flag", "op": "eq", "value": 1}, False),  # true is not 1
        ({"ref": "steps.a.result.tags", "op": "contains", "value": "x"}, True),
        ({"ref": "steps.a.result.n", "op": "in", "value": [1, 3]}, True),
        ({"ref": "steps.a.result.missing", "op": "exists"}, False),
        ({"ref": "steps.a.result.n", "op": "exists"}, True),
        ({"ref": "steps.a.result.n", "op": "lt", "value": "text"}, False),  # never raises
        ({"all": [{"step": "a", "state": "succeeded"}, {"not": {"ref": "steps.a.result.n",
                                                                "op": "ne", "value": 3}}]}, True),
        ({"any": [{"step": "a", "state": "failed"}, {"ref": "steps.a.result.n",
                                                     "op": "le", "value": 3}]}, True),
    ],
)  # fmt: skip
def test_conditions(raw: dict[str, Any], expected: bool) -> None:
    steps = {"a": ok({"n": 3, "flag": True, "tags": ["x"]})}
    assert evaluate(cond(raw), steps) is expected


def test_a_comparison_on_a_step_without_result_is_false() -> None:
    steps = {"a": StepView("failed", "j")}
    assert evaluate(cond({"ref": "steps.a.result.n", "op": "ne", "value": 1}), steps) is False
    assert evaluate(cond({"not": {"ref": "steps.a.result", "op": "exists"}}), steps) is True


# -- the graph ------------------------------------------------------------------------------------


def problems_of(steps: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(errors.InvalidWorkflowError) as info:
        check(steps)
    found: list[dict[str, Any]] = info.value.details["errors"]
    assert info.value.details["step"] == found[0]["step"]
    return found


def test_dependencies_include_references_and_conditions() -> None:
    graph = check({
        "a": {"kind": "noop"}, "b": {"kind": "noop"}, "c": {"kind": "noop"},
        "d": {"kind": "noop", "depends_on": ["a"], "input": {"x": {"$ref": "steps.b.result"}},
              "when": {"step": "c", "state": "succeeded"}},
        "h": {"kind": "noop"}, "e": {"kind": "noop", "on_failure": {"run": "h"}},
    })  # fmt: skip
    assert graph.deps["d"] == ("a", "b", "c")
    assert graph.deps["h"] == ("e",) and graph.handles == {"h": "e"}
    assert graph.dependents({"a"}) == {"a", "d"}


@pytest.mark.parametrize(
    ("steps", "step", "text"),
    [
        ({"a": {"kind": "noop", "depends_on": ["zz"]}}, "a", "unknown step 'zz'"),
        ({"a": {"kind": "noop", "depends_on": ["a"]}}, "a", "the step itself"),
        ({"a": {"kind": "noop"}, "b": {"kind": "noop", "input": {"$ref": "steps.q.result"}}},
         "b", "unknown step 'q'"),
        ({"a": {"kind": "noop", "input": {"$ref": "a.b"}}}, "a", "does not start with steps"),
        ({"a": {"kind": "noop", "when": {"step": "x", "state": "failed"}}}, "a", "unknown step"),
        ({"a": {"kind": "noop", "on_failure": {"run": "nope"}}}, "a", "unknown step 'nope'"),
        ({"a": {"kind": "noop", "depends_on": ["b"]}, "b": {"kind": "noop", "depends_on": ["c"]},
          "c": {"kind": "noop", "input": {"$ref": "steps.a.result"}}}, "a", "cycle: a -> b -> c"),
    ],
)  # fmt: skip
def test_invalid_documents_name_the_step(steps: dict[str, Any], step: str, text: str) -> None:
    found = problems_of(steps)
    assert found[0]["step"] == step and text in found[0]["msg"]
    assert found[0]["loc"][:2] == ["steps", step]


def test_document_level_mistakes_are_validation_errors() -> None:
    for bad in ({"steps": {}}, {"steps": {"a.b": {"kind": "noop"}}},
                {"steps": {"a": {"kind": "noop", "on_failure": "explode"}}}):  # fmt: skip
        with pytest.raises(ValidationError):
            WorkflowSubmit.model_validate(bad)


@settings(deadline=None)  # a loaded CI machine must not fail a pure test
@given(st.integers(2, 30), st.data())
def test_cycles_are_found_exactly_when_there_is_one(n: int, data: st.DataObject) -> None:
    names = [f"s{i}" for i in range(n)]
    # Edges only from later to earlier steps: a DAG.
    deps = {
        name: tuple(data.draw(st.sets(st.sampled_from(names[:i]), max_size=3)) if i else ())
        for i, name in enumerate(names)
    }
    assert graphs.find_cycle(deps) == []
    low, high = sorted(data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2)))
    # Add a path from low back up to high: now high ->* low -> high may close a cycle.
    deps[names[low]] = (*deps[names[low]], names[high])
    cycle = graphs.find_cycle(deps)
    reachable = _reaches(deps, names[high], names[low])
    assert bool(cycle) == (low == high or reachable)
    for a, b in itertools.pairwise(cycle):
        assert b in deps[a]
    assert not cycle or cycle[0] == cycle[-1]


def _reaches(deps: dict[str, tuple[str, ...]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(deps[node])
    return False


def test_find_cycle_handles_deep_chains_without_recursion() -> None:
    deps = {f"s{i}": (f"s{i + 1}",) if i < 4999 else ("s0",) for i in range(5000)}
    assert len(graphs.find_cycle(deps)) == 5001


# -- claim-time decisions -------------------------------------------------------------------------


PIPE = {
    "fetch": {"kind": "noop"},
    "use": {"kind": "noop", "input": {"n": {"$ref": "steps.fetch.result.n"}, "k": 1}},
}


def decide_for(steps: dict[str, Any], name: str, upstream: dict[str, StepView],
               failed: tuple[str, ...] = ()) -> Any:  # fmt: skip
    d = doc(steps)
    return decide(d, check(steps), name, upstream, failed)


def test_a_step_runs_with_its_references_resolved() -> None:
    assert decide_for(PIPE, "use", {"fetch": ok({"n": 5})}) == Run({"n": 5, "k": 1})


def test_a_missing_result_field_fails_the_step() -> None:
    verdict = decide_for(PIPE, "use", {"fetch": ok({"m": 5})})
    assert isinstance(verdict, Fail) and "'n'" in verdict.message


def test_a_fatal_failure_anywhere_stops_every_other_step() -> None:
    steps = {"a": {"kind": "noop"}, "b": {"kind": "noop"}, "c": {"kind": "noop",
             "depends_on": ["b"]}}  # fmt: skip
    verdict = decide_for(steps, "c", {"b": ok()}, failed=("a",))
    assert isinstance(verdict, Skip) and verdict.reason == "upstream_failed"


def test_continue_lets_dependents_run_and_defaults_fill_in() -> None:
    steps = {
        "a": {"kind": "noop", "on_failure": "continue"},
        "b": {"kind": "noop", "input": {"x": {"$ref": "steps.a.result.x", "default": 0}}},
        "c": {"kind": "noop", "input": {"x": {"$ref": "steps.a.result.x"}}},
    }
    failed = {"a": StepView("failed", "j")}
    assert decide_for(steps, "b", failed, ("a",)) == Run({"x": 0})
    verdict = decide_for(steps, "c", failed, ("a",))
    assert isinstance(verdict, Skip) and verdict.reason == "upstream_failed"


def test_a_failure_handler_runs_only_when_its_step_failed() -> None:
    steps = {"a": {"kind": "noop", "on_failure": {"run": "h"}}, "h": {"kind": "noop"},
             "b": {"kind": "noop", "depends_on": ["a"]}}  # fmt: skip
    assert decide_for(steps, "h", {"a": StepView("failed", "j")}, ("a",)) == Run({})
    skipped = decide_for(steps, "h", {"a": ok()})
    assert isinstance(skipped, Skip) and skipped.reason == "skipped"
    stopped = decide_for(steps, "b", {"a": StepView("failed", "j")}, ("a",))
    assert isinstance(stopped, Skip) and stopped.reason == "upstream_failed"


def test_skips_propagate_unless_the_step_has_a_when() -> None:
    steps = {
        "a": {"kind": "noop"},
        "b": {"kind": "noop", "depends_on": ["a"]},
        "c": {"kind": "noop", "depends_on": ["a"], "when": {"step": "a", "state": "skipped"}},
        "d": {"kind": "noop", "when": {"ref": "steps.a.result.go", "op": "eq", "value": True}},
    }
    skipped = {"a": StepView("skipped", "j")}
    assert decide_for(steps, "b", skipped) == Skip("skipped", "dependency 'a' was skipped")
    assert decide_for(steps, "c", skipped) == Run({})
    assert decide_for(steps, "d", {"a": ok({"go": True})}) == Run({})
    assert decide_for(steps, "d", {"a": ok({"go": False})}) == Skip(
        "skipped", "its when condition is false"
    )


def test_a_cancelled_dependency_means_upstream_failed() -> None:
    steps = {"a": {"kind": "noop"}, "b": {"kind": "noop", "depends_on": ["a"]}}
    for state in ("cancelled", "upstream_failed"):
        verdict = decide_for(steps, "b", {"a": StepView(state, "j")})
        assert isinstance(verdict, Skip) and verdict.reason == "upstream_failed"


# -- the derived state --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ({"a": "blocked", "b": "queued"}, "pending"),
        ({"a": "running", "b": "blocked"}, "running"),
        ({"a": "succeeded", "b": "blocked"}, "running"),
        ({"a": "succeeded", "b": "skipped"}, "succeeded"),
        ({"a": "failed", "b": "upstream_failed"}, "failed"),
        ({"a": "succeeded", "b": "cancelled"}, "cancelled"),
    ],
)
def test_workflow_state(states: dict[str, Any], expected: str) -> None:
    d = doc({"a": {"kind": "noop"}, "b": {"kind": "noop"}})
    state, progress = derive(d, states)
    assert state == expected
    assert progress["total"] == 2
    waiting = ("blocked", "queued", "running")
    assert progress["done"] == sum(s not in waiting for s in states.values())


def test_a_tolerated_failure_does_not_fail_the_workflow() -> None:
    d = doc({"a": {"kind": "noop", "on_failure": "continue"}, "b": {"kind": "noop"}})
    assert derive(d, {"a": "failed", "b": "succeeded"})[0] == "succeeded"


def test_the_builder_writes_the_same_document() -> None:
    flow = Flow("f")
    fetch = flow.step("fetch", "noop")
    flow.step("use", "noop", {"n": ref(fetch, "n"), "k": 1}, on_failure="continue")
    built = flow.document()
    assert built.steps["use"].input == {"n": {"$ref": ["steps", "fetch", "result", "n"]}, "k": 1}
    assert check(built.model_dump(by_alias=True)["steps"]).deps["use"] == ("fetch",)
