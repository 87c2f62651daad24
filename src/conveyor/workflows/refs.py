"""References to upstream steps inside a step's input: `{"$ref": "steps.fetch.result.items"}`.

A reference is a JSON object whose only keys are `$ref` and, optionally, `default`. Its path is
a dotted string (`steps.<step>.result.<key>.<index>...`; integer segments index lists, from the
end when negative) or, for keys that contain dots, a list of segments (`["steps", "fetch",
"result", "a.b"]`). It points at `steps.<step>.result` (or inside it), `steps.<step>.id` (the
step's job id, e.g. to read its files) or `steps.<step>.state`. Resolution substitutes values;
nothing is evaluated.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from conveyor.models import JSON

REF = "$ref"
INDEX = re.compile(r"^-?[0-9]+$")
DEFAULT = "default"
FIELDS = ("result", "id", "state")
Segment = str | int
Path = tuple[Segment, ...]


class RefError(ValueError):
    """A reference that is malformed (at submit) or cannot be resolved (at claim)."""


class Missing(RefError):
    """The referenced value does not exist (a key or index that is not there)."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference: the step, the field (`result`, `id`, `state`) and a path inside it."""

    step: str
    field: str
    path: Path = ()

    def __str__(self) -> str:
        return ".".join(map(str, ("steps", self.step, self.field, *self.path)))


def parse(raw: Any) -> Ref:
    """The `Ref` a `$ref` value names, or `RefError` saying what is wrong with it."""
    if isinstance(raw, str):
        if not raw:
            raise RefError("a reference must not be empty")
        segments: list[Segment] = [int(s) if INDEX.match(s) else s for s in raw.split(".")]
    elif isinstance(raw, list) and all(
        isinstance(s, str | int) and not isinstance(s, bool) for s in raw
    ):
        segments = list(raw)
    else:
        raise RefError("a reference is a dotted string or a list of keys and indexes")
    if len(segments) < 3 or segments[0] != "steps" or not isinstance(segments[1], str):
        raise RefError(f"{raw!r} does not start with steps.<step>.<field>")
    field = segments[2]
    if field not in FIELDS:
        raise RefError(f"{raw!r}: a step's {field!r} cannot be referenced (use {FIELDS})")
    if field != "result" and len(segments) > 3:
        raise RefError(f"{raw!r}: only a step's result has fields")
    if any(s == "" for s in segments):
        raise RefError(f"{raw!r} has an empty segment")
    return Ref(segments[1], str(field), tuple(segments[3:]))


def is_ref(value: Any) -> bool:
    return isinstance(value, dict) and REF in value


def find(value: JSON, loc: Path = ()) -> Iterator[tuple[Path, Ref]]:
    """Every reference inside `value` with where it is; `RefError` (naming where) if malformed."""
    if is_ref(value):
        extra = set(value) - {REF, DEFAULT}
        if extra:
            raise RefError(f"at {_where(loc)}: a reference takes only $ref and default: {extra}")
        try:
            yield loc, parse(value[REF])
        except RefError as exc:
            raise RefError(f"at {_where(loc)}: {exc}") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from find(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find(item, (*loc, index))


def _where(loc: Path) -> str:
    return "input" + "".join(f"[{p!r}]" for p in loc)


def dig(value: JSON, path: Path) -> JSON:
    """The value at `path` inside `value`, or `Missing`."""
    for segment in path:
        if isinstance(value, dict) and str(segment) in value:
            value = value[str(segment)]
        elif (
            isinstance(value, list)
            and isinstance(segment, int)
            and not isinstance(segment, bool)
            and -len(value) <= segment < len(value)
        ):
            value = value[segment]
        else:
            raise Missing(f"no {segment!r} in the referenced value")
    return value


@dataclass(frozen=True, slots=True)
class StepView:
    """What a reference or a condition may see of a finished upstream step."""

    state: str
    job_id: str
    result: JSON = None


def lookup(ref: Ref, steps: Mapping[str, StepView]) -> JSON:
    """The referenced value; `Missing` if the step or the path is not there, `RefError` if the
    step did not succeed (so it has no result)."""
    view = steps.get(ref.step)
    if view is None:
        raise Missing(f"{ref}: step {ref.step!r} has not finished")
    if ref.field == "id":
        return view.job_id
    if ref.field == "state":
        return view.state
    if view.state != "succeeded":
        raise RefError(f"{ref}: step {ref.step!r} is {view.state}, so it has no result")
    try:
        return dig(view.result, ref.path)
    except Missing as exc:
        raise Missing(f"{ref}: {exc}") from None


def resolve(value: JSON, get: Callable[[Ref], JSON]) -> JSON:
    """`value` with every reference replaced by `get(ref)`, or by its `default` when `get`
    raises `RefError` and the reference has one."""
    if is_ref(value):
        ref = parse(value[REF])
        try:
            return get(ref)
        except RefError:
            if DEFAULT in value:
                return value[DEFAULT]
            raise
    if isinstance(value, dict):
        return {key: resolve(item, get) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve(item, get) for item in value]
    return value
