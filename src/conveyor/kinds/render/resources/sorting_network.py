"""Sorting network: a comparator network to chalk on the ground and walk through."""

from __future__ import annotations

import random
import string
from typing import Any

from conveyor.kinds.render.resources.base import PRINTABLE_MM, Option, Page, Resource

#: Layers of comparators (wire pairs) of optimal-depth networks; both proven by the 0-1 principle
#: in the tests.
NETWORKS: dict[int, list[list[tuple[int, int]]]] = {
    4: [[(0, 1), (2, 3)], [(0, 2), (1, 3)], [(1, 2)]],
    6: [
        [(0, 5), (1, 3), (2, 4)],
        [(1, 2), (3, 4)],
        [(0, 3), (2, 5)],
        [(0, 1), (2, 3), (4, 5)],
        [(1, 2), (3, 4)],
    ],
}


def starting_values(kind: str, size: int) -> list[str]:
    """The values written in the input boxes (the same on every copy)."""
    rng = random.Random(f"{kind}/{size}")  # reproducible: every print of a setting matches
    if kind == "numbers":
        return [str(v) for v in rng.sample(range(1, 100), size)]
    if kind == "letters":
        return rng.sample(string.ascii_uppercase, size)
    return [""] * size


def lane_of(layer: list[tuple[int, int]]) -> dict[tuple[int, int], int]:
    """A row for each comparator of a layer, so that comparators whose spans overlap (such as
    0-5 over 2-4) are drawn one below the other instead of on top of each other.
    """
    lanes: dict[tuple[int, int], int] = {}
    ends: list[int] = []  # per lane, the rightmost wire used so far
    for a, b in sorted(layer):
        lane = next((i for i, end in enumerate(ends) if end < a), len(ends))
        if lane == len(ends):
            ends.append(b)
        ends[lane] = b
        lanes[(a, b)] = lane
    return lanes


class SortingNetwork(Resource):
    view = "sorting_network"
    title = "Sorting Network"
    description = "A sorting network with input and output boxes, drawn to scale for the floor."
    options = {
        "network_size": Option((6, 4), 6),
        "values": Option(("blank", "numbers", "letters"), "blank"),
    }

    def pages(self, options: dict[str, Any], paper_size: str) -> list[Page]:
        width, height = PRINTABLE_MM[paper_size]
        size = int(options["network_size"])
        layers = NETWORKS[size]
        height -= 20  # room for the caption
        spacing = width / size
        wires = [round(spacing * (i + 0.5), 2) for i in range(size)]
        top, bottom = 24.0, height - 24.0
        step = (bottom - top) / (len(layers) + 1)
        comparators = []
        for depth, layer in enumerate(layers, start=1):
            lanes = lane_of(layer)
            spread = step / (max(lanes.values()) + 2)
            for a, b in layer:
                y = top + step * (depth - 0.5) + spread * (lanes[(a, b)] + 1)
                comparators.append({"x1": wires[a], "x2": wires[b], "y": round(y, 2)})
        data = {
            "w": width, "h": height, "wires": wires, "top": top, "bottom": bottom,
            "box": min(spacing * 0.7, 18.0), "comparators": comparators,
            "values": starting_values(str(options["values"]), size), "size": size,
        }  # fmt: skip
        return [Page("sorting_network.html", data)]

    def subtitle(self, options: dict[str, Any], paper_size: str) -> str:
        return f"{options['network_size']} wires - {options['values']} - {paper_size}"
