"""Parity cards: a grid of two-sided cards for the parity (error detection) magic trick."""

from __future__ import annotations

from typing import Any

from conveyor.kinds.render.resources.base import PRINTABLE_MM, Option, Page, Resource

COLOURS = {
    "black": "#000000",
    "blue": "#1f5fbf",
    "green": "#2e8b3a",
    "purple": "#6a2c91",
    "red": "#c0262d",
}


class ParityCards(Resource):
    view = "parity_cards"
    title = "Parity Cards"
    description = "A page of card fronts and a page of coloured backs to cut out and glue."
    options = {
        "back_colour": Option(tuple(COLOURS), "black"),
        "grid_size": Option((6, 5, 4), 6),
    }

    def pages(self, options: dict[str, Any], paper_size: str) -> list[Page]:
        width, height = PRINTABLE_MM[paper_size]
        n = int(options["grid_size"])
        cell = min(width, height - 20) / n
        data = {"n": n, "cell": round(cell, 2), "side": round(cell * n, 2)}
        colour = COLOURS[str(options["back_colour"])]
        return [
            Page("parity_cards.html", {**data, "fill": "#ffffff", "side_name": "front"}),
            Page("parity_cards.html", {**data, "fill": colour, "side_name": "back"}),
        ]

    def subtitle(self, options: dict[str, Any], paper_size: str) -> str:
        size = options["grid_size"]
        return f"{size}x{size} - {options['back_colour']} back - {paper_size}"
