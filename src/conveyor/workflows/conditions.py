"""Evaluating a step's `when`: a condition tree over upstream states and results (no code).

A comparison whose referenced value is missing (or whose upstream step has no result) is false,
and so is one between values that cannot be ordered (`"a" < 1`): a condition never raises.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from conveyor.workflows import refs
from conveyor.workflows.document import AllOf, AnyOf, Compare, Condition, NotOf, StateIs


def evaluate(condition: Condition, steps: Mapping[str, refs.StepView]) -> bool:
    """Whether `condition` holds for these finished upstream steps."""
    if isinstance(condition, StateIs):
        view = steps.get(condition.step)
        return view is not None and view.state in condition.states()
    if isinstance(condition, AllOf):
        return all(evaluate(c, steps) for c in condition.all)
    if isinstance(condition, AnyOf):
        return any(evaluate(c, steps) for c in condition.any)
    if isinstance(condition, NotOf):
        return not evaluate(condition.not_, steps)
    return _compare(condition, steps)


def _compare(condition: Compare, steps: Mapping[str, refs.StepView]) -> bool:
    try:
        actual = refs.lookup(refs.parse(condition.ref), steps)
    except refs.RefError:
        return False
    if condition.op == "exists":
        return True
    try:
        return bool(_OPS[condition.op](actual, condition.value))
    except TypeError:
        return False


def _contains(container: Any, item: Any) -> bool:
    return isinstance(container, list | str | dict) and item in container


def _in(item: Any, container: Any) -> bool:
    return _contains(container, item)


def _eq(a: Any, b: Any) -> bool:
    # JSON has one number type and no bool/number equality (Python has True == 1).
    if a != b:
        return False
    return type(a) is type(b) or (_number(a) and _number(b))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _ordered(a: Any, b: Any) -> bool:
    if (_number(a) and _number(b)) or (isinstance(a, str) and isinstance(b, str)):
        return True
    raise TypeError("not comparable")


_OPS: dict[str, Any] = {
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": lambda a, b: _ordered(a, b) and a < b,
    "le": lambda a, b: _ordered(a, b) and a <= b,
    "gt": lambda a, b: _ordered(a, b) and a > b,
    "ge": lambda a, b: _ordered(a, b) and a >= b,
    "in": _in,
    "contains": _contains,
}


def walk(condition: Condition) -> Iterator[Condition]:
    """The condition and every condition inside it."""
    yield condition
    if isinstance(condition, AllOf | AnyOf):
        for child in condition.all if isinstance(condition, AllOf) else condition.any:
            yield from walk(child)
    elif isinstance(condition, NotOf):
        yield from walk(condition.not_)


def steps_named(condition: Condition) -> Iterator[tuple[str, str]]:
    """(step, what) for every step the condition looks at; `RefError` on a malformed ref."""
    for node in walk(condition):
        if isinstance(node, StateIs):
            yield node.step, "state"
        elif isinstance(node, Compare):
            ref = refs.parse(node.ref)
            yield ref.step, str(ref)
