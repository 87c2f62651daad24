"""Choosing the content type of a Swiss AI output, as the template's `TaskData(type=...)` does.

    swissai.output_type(ctx, "result", "text/csv")

Without a choice the type is sniffed from the file (see `compute.sniff`). The choice is kept
beside the handler's context for the `swissai.compute` kind that runs it; for a plain `/v1` job
it is recorded and ignored (outputs there have no declared types).
"""

from __future__ import annotations

from weakref import WeakKeyDictionary

from conveyor.swissai.models import FieldDescriptionType
from conveyor.worker.context import Context, PermanentError

_chosen: WeakKeyDictionary[Context, dict[str, str]] = WeakKeyDictionary()


def output_type(ctx: Context, field: str, content_type: str) -> None:
    """Upload output `field` as `content_type` (one of the field's declared types)."""
    try:
        FieldDescriptionType(content_type)
    except ValueError:
        known = [t.value for t in FieldDescriptionType]
        raise PermanentError(
            f"{content_type!r} is not a Swiss AI content type; use one of {known}"
        ) from None
    _chosen.setdefault(ctx, {})[field] = content_type


def chosen(ctx: Context, field: str) -> str | None:
    """The type the handler chose for `field`, if it chose one."""
    return _chosen.get(ctx, {}).get(field)
