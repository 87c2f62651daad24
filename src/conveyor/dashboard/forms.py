"""A submit form generated from a kind's input JSON Schema, and reading it back.

Top-level properties become fields: booleans a checkbox, enums a select, integers and numbers
a number input with the schema's bounds, strings a text input (with its length and pattern),
a string with `format: file` (or `binary`) a file input whose value becomes the uploaded file's
name, and anything else (objects, arrays, unions) a JSON text area. The browser checks what
HTML can express; the server checks the whole schema (`Service.validate`) and the form shows
every error next to its field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FILE_FORMATS = frozenset({"file", "binary"})


@dataclass
class Field:
    """One form control for one top-level input property."""

    name: str
    label: str
    widget: str  # checkbox | select | integer | number | text | file | json
    required: bool = False
    default: Any = None
    description: str = ""
    options: list[Any] = field(default_factory=list)
    nullable: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    def shown(self, values: dict[str, str]) -> str:
        """The text to put in the control: what was sent, else the default."""
        if self.name in values:
            return values[self.name]
        if self.default is None:
            return ""
        if self.widget == "json":
            return json.dumps(self.default, indent=2)
        return str(self.default)

    def selected(self, values: dict[str, str], option: Any) -> bool:
        return self.shown(values) == str(option)

    def checked(self, values: dict[str, str], submitted: bool) -> bool:
        if submitted:
            return self.name in values
        return bool(self.default)


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local `$ref` (pydantic puts enums and models under `$defs`)."""
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = schema.get("$defs", {}).get(ref.removeprefix("#/$defs/"), {})
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _resolve(schema, merged)
    if "allOf" in node and len(node["allOf"]) == 1:
        merged = {**_resolve(schema, node["allOf"][0]), **node}
        merged.pop("allOf")
        return merged
    return node


def _unwrap_nullable(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """`anyOf: [X, {type: null}]` (pydantic's Optional) → (X, True)."""
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node, False
    rest = [o for o in options if o.get("type") != "null"]
    if len(rest) == 1 and len(rest) < len(options):
        inner = _resolve(schema, rest[0])
        merged = {**inner, **{k: v for k, v in node.items() if k != "anyOf"}}
        return merged, True
    return node, False


def _widget(node: dict[str, Any]) -> str:
    kind = node.get("type")
    if "enum" in node:
        return "select"
    if kind == "boolean":
        return "checkbox"
    if kind in ("integer", "number"):
        return str(kind)
    if kind == "string":
        return "file" if node.get("format") in FILE_FORMATS else "text"
    return "json"


def _attrs(node: dict[str, Any], widget: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if widget in ("integer", "number"):
        for key, attr in (("minimum", "min"), ("maximum", "max")):
            if key in node:
                attrs[attr] = node[key]
        attrs["step"] = "1" if widget == "integer" else "any"
    if widget == "text":
        for key, attr in (("minLength", "minlength"), ("maxLength", "maxlength")):
            if key in node:
                attrs[attr] = node[key]
        if "pattern" in node:
            attrs["pattern"] = node["pattern"]
    return attrs


def fields(schema: dict[str, Any]) -> list[Field]:
    """The form's fields, in the schema's property order."""
    required = set(schema.get("required", ()))
    found = []
    for name, raw in (schema.get("properties") or {}).items():
        node, nullable = _unwrap_nullable(schema, _resolve(schema, raw))
        widget = _widget(node)
        found.append(
            Field(
                name=name,
                label=str(node.get("title") or name),
                widget=widget,
                required=name in required,
                default=node.get("default"),
                description=str(node.get("description") or ""),
                options=list(node.get("enum", [])),
                nullable=nullable,
                attrs=_attrs(node, widget),
            )
        )
    return found


def _convert(f: Field, text: str) -> tuple[Any, str | None]:
    """The JSON value of one submitted control, or an error message."""
    if f.widget == "integer":
        try:
            return int(text), None
        except ValueError:
            return None, "enter a whole number"
    if f.widget == "number":
        try:
            return float(text), None
        except ValueError:
            return None, "enter a number"
    if f.widget == "select":
        for option in f.options:
            if str(option) == text:
                return option, None
        return None, "choose one of the listed values"
    if f.widget == "json":
        try:
            return json.loads(text), None
        except json.JSONDecodeError as exc:
            return None, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
    return text, None


def read(
    form_fields: list[Field], values: dict[str, str], files: dict[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """(input, errors by field name) from submitted form values and uploaded file names."""
    data: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for f in form_fields:
        if f.widget == "checkbox":
            data[f.name] = f.name in values
            continue
        if f.widget == "file":
            if f.name in files:
                data[f.name] = files[f.name]
            elif f.required:
                problems[f.name] = "choose a file"
            continue
        text = values.get(f.name, "").strip()
        if text == "":
            if f.required and not f.nullable:
                problems[f.name] = "this field is required"
            elif f.nullable and f.required:
                data[f.name] = None
            continue  # left empty: the kind's default applies
        value, problem = _convert(f, text)
        if problem:
            problems[f.name] = problem
        else:
            data[f.name] = value
    return data, problems


def schema_errors(details: list[dict[str, Any]]) -> tuple[dict[str, str], list[str]]:
    """`InvalidInputError` details → (errors by top-level field, errors about the whole input)."""
    by_field: dict[str, str] = {}
    general: list[str] = []
    for item in details:
        loc = [str(part) for part in item.get("loc", [])][1:]  # drop the leading "input"
        message = str(item.get("msg", "invalid"))
        if loc:
            by_field.setdefault(loc[0], message if len(loc) == 1 else f"{'.'.join(loc)}: {message}")
        else:
            general.append(message)
    return by_field, general
