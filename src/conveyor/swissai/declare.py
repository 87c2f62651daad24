"""Declaring that a kind is a Swiss AI Center service, beside its `@conveyor.task`.

    @conveyor.task("text.stats", input=StatsInput)
    def stats(input, ctx): ...

    swissai.service(
        "text.stats", name="Text statistics", slug="text-stats", summary="...",
        data_in_fields=[{"name": "text", "type": ["text/plain"]}],
        data_out_fields=[{"name": "result", "type": ["application/json"]}],
        tags=[{"name": "Natural Language Processing", "acronym": "NLP"}],
    )

The handler reads each input field with `ctx.input_file(field_name)` and writes each output
field to `ctx.output_file(field_name)`; conveyor does the S3 fetching, MIME checks, uploads and
callbacks. The declaration lives in a side table keyed by kind name (`@task` is untouched) and is
published to the store (`swissai_services` records) so API processes that never imported the
kind still know it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, Field

from conveyor import errors
from conveyor.store.base import Store
from conveyor.swissai.models import ExecutionUnitTag, FieldDescription

RECORDS = "swissai_services"
DOCS_URL = "https://docs.swiss-ai-center.ch/reference/core-concepts/service"


class SwissAIService(BaseModel):
    """A kind's Swiss AI Center description (the engine's `ServiceBase` minus `url`/status)."""

    kind: str
    name: str
    slug: str = Field(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
    summary: str
    description: str | None = None
    data_in_fields: list[FieldDescription]
    data_out_fields: list[FieldDescription]
    tags: list[ExecutionUnitTag] = Field(default_factory=list)
    has_ai: bool = False
    docs_url: str | None = DOCS_URL

    def registration(self, url: str, status: str = "available") -> dict[str, Any]:
        """The body of `POST {engine}/services` (the engine's `ServiceCreate`)."""
        body = self.model_dump(mode="json", exclude={"kind"})
        return {**body, "url": url, "status": status}


_services: dict[str, SwissAIService] = {}


def service(
    kind: str,
    *,
    name: str,
    summary: str,
    data_in_fields: list[dict[str, Any]] | list[FieldDescription],
    data_out_fields: list[dict[str, Any]] | list[FieldDescription],
    slug: str | None = None,
    description: str | None = None,
    tags: list[dict[str, str]] | list[ExecutionUnitTag] = (),  # type: ignore[assignment]
    has_ai: bool = False,
    docs_url: str | None = DOCS_URL,
) -> SwissAIService:
    """Expose the kind `kind` as a Swiss AI Center service (see the module docstring)."""
    # Importing the compute kind here means any worker that imports a declared service can run it.
    import conveyor.swissai.compute  # noqa: F401

    declared = SwissAIService.model_validate(
        {
            "kind": kind,
            "name": name,
            "slug": slug or re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-"),
            "summary": summary,
            "description": description,
            "data_in_fields": data_in_fields,
            "data_out_fields": data_out_fields,
            "tags": list(tags),
            "has_ai": has_ai,
            "docs_url": docs_url,
        }
    )
    if not declared.data_in_fields or not declared.data_out_fields:
        raise errors.ConfigurationError(f"Swiss AI service {kind!r} needs input and output fields")
    _services[kind] = declared
    return declared


def declared(kind: str) -> SwissAIService | None:
    """The declaration made in this process, if any."""
    return _services.get(kind)


def all_declared() -> list[SwissAIService]:
    return sorted(_services.values(), key=lambda s: s.kind)


def publish(store: Store) -> None:
    """Write this process's declarations to the store for API processes to read."""
    for item in _services.values():
        store.put_record(RECORDS, item.kind, item.model_dump(mode="json"))


def lookup(store: Store, kind: str) -> SwissAIService | None:
    """A kind's declaration: this process's own, else the one published in the store."""
    local = _services.get(kind)
    if local is not None:
        return local
    record = store.get_record(RECORDS, kind)
    return None if record is None else SwissAIService.model_validate(record)


def published(store: Store) -> list[SwissAIService]:
    found = {k: SwissAIService.model_validate(v) for k, v in store.list_records(RECORDS)}
    found.update(_services)
    return sorted(found.values(), key=lambda s: s.kind)
