"""The printable resources, by `resource_view`."""

from __future__ import annotations

from conveyor.kinds.render.payload import RenderInputError
from conveyor.kinds.render.resources.base import Option, Page, Resource
from conveyor.kinds.render.resources.binary_cards import BinaryCards
from conveyor.kinds.render.resources.modulo_clock import ModuloClock
from conveyor.kinds.render.resources.parity_cards import ParityCards
from conveyor.kinds.render.resources.sorting_network import SortingNetwork

RESOURCES: dict[str, Resource] = {
    r.view: r for r in (BinaryCards(), SortingNetwork(), ModuloClock(), ParityCards())
}

__all__ = ["RESOURCES", "Option", "Page", "Resource", "get_resource"]


def get_resource(view: str) -> Resource:
    """The resource for `resource_view`; `RenderInputError` lists the known ones."""
    try:
        return RESOURCES[view]
    except KeyError:
        known = ", ".join(sorted(RESOURCES))
        raise RenderInputError(
            f"unknown resource_view {view!r}; known resources: {known}"
        ) from None
