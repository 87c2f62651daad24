"""The render task as producers send it (`kind: "task#render"`), and how it is checked.

The payload is the JSON the CS Unplugged producers put in Task Queue tasks tagged `task`:
`kind`, `resource_slug`, `resource_name`, `resource_view`, `url`, `header_text`, `copies`,
`paper_size` and the options of the chosen resource. Every problem is reported as a
`RenderInputError` whose message names the field, so a failure result can say what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

TASK_KIND = "task#render"
MAX_COPIES = 100
#: Keys the original accepted to pick its own template and stylesheet; accepted and ignored.
IGNORED_KEYS = frozenset({"template", "css"})


class RenderInputError(ValueError):
    """The task cannot be rendered as given; retrying will not help."""


class RenderTask(BaseModel):
    """One document to render. Keys other than the fields below are resource options."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["task#render"] = Field("task#render", description="Always `task#render`.")
    resource_slug: str = Field(min_length=1, max_length=200)
    resource_name: str = Field(min_length=1, max_length=200, description="Title of the PDF.")
    resource_view: str = Field(min_length=1, max_length=100, description="Which resource.")
    url: str = Field("", max_length=2000, description="Where the resource was requested.")
    header_text: str = Field("", max_length=200, description="Printed at the top of each page.")
    copies: int = Field(1, ge=1, le=MAX_COPIES)
    paper_size: Literal["a4", "letter"]

    @property
    def options(self) -> dict[str, Any]:
        """The resource options: every key that is not a field of the task itself."""
        return {k: v for k, v in (self.model_extra or {}).items() if k not in IGNORED_KEYS}


def describe(exc: ValidationError) -> str:
    """One line naming each bad field, e.g. `paper_size: Field required`."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ())) or "payload"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts)


def parse_task(value: Any) -> RenderTask:
    """Validate a decoded payload; `RenderInputError` names every problem."""
    if not isinstance(value, dict):
        raise RenderInputError(f"the payload must be a JSON object, got {type(value).__name__}")
    if value.get("kind") != TASK_KIND:
        raise RenderInputError(
            f"unrecognised task kind {value.get('kind')!r}; this service renders {TASK_KIND!r}"
        )
    try:
        return RenderTask.model_validate(value)
    except ValidationError as exc:
        raise RenderInputError(f"invalid render task: {describe(exc)}") from None


def decode_payload(payload_base64: str) -> Any:
    """The JSON inside a Task Queue `payloadBase64`; `RenderInputError` if it is not JSON."""
    try:
        raw = base64.b64decode(payload_base64, validate=True)
    except (binascii.Error, ValueError):
        raise RenderInputError("payloadBase64 is not valid base64") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RenderInputError(f"the payload is not JSON: {exc}") from None
