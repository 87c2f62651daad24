"""Binary cards: five cards with 16, 8, 4, 2 and 1 dots, for counting in binary."""

from __future__ import annotations

from typing import Any

from conveyor.kinds.render.resources.base import PRINTABLE_MM, Option, Page, Resource

VALUES = (16, 8, 4, 2, 1)
CARDS_PER_PAGE = 2
GAP_MM = 8.0


def dot_grid(count: int, width: float, height: float) -> list[dict[str, float]]:
    """`count` dots in full rows: the columns x rows split that gives the largest dots."""
    cols = max(
        (c for c in range(1, count + 1) if count % c == 0),
        key=lambda c: min(width / c, height / (count // c)),
    )
    rows = count // cols
    cell = min(width / cols, height / rows)
    left = (width - cell * cols) / 2
    top = (height - cell * rows) / 2
    return [
        {
            "x": round(left + cell * (i % cols + 0.5), 2),
            "y": round(top + cell * (i // cols + 0.5), 2),
            "r": round(cell * 0.36, 2),
        }
        for i in range(count)
    ]


class BinaryCards(Resource):
    view = "binary_cards"
    title = "Binary Cards"
    description = "Cards with 16, 8, 4, 2 and 1 dots; flip cards over to show a binary number."
    options = {
        "display_numbers": Option((True, False), True),
        "black_back": Option((False, True), False),
    }

    def pages(self, options: dict[str, Any], paper_size: str) -> list[Page]:
        width, height = PRINTABLE_MM[paper_size]
        card_h = (height - GAP_MM * (CARDS_PER_PAGE - 1)) / CARDS_PER_PAGE
        numbers = bool(options["display_numbers"])
        dots_h = card_h * (0.72 if numbers else 0.88)
        pages = []
        for start in range(0, len(VALUES), CARDS_PER_PAGE):
            cards = [
                {"value": value, "dots": dot_grid(value, width - 16, dots_h - 12)}
                for value in VALUES[start : start + CARDS_PER_PAGE]
            ]
            data = {"cards": cards, "w": width, "h": card_h, "dots_h": dots_h, "gap": GAP_MM,
                    "numbers": numbers}  # fmt: skip
            pages.append(Page("binary_cards.html", {**data, "back": False}))
            if options["black_back"]:
                pages.append(Page("binary_cards.html", {**data, "back": True}))
        return pages

    def subtitle(self, options: dict[str, Any], paper_size: str) -> str:
        words = ["with numbers" if options["display_numbers"] else "without numbers"]
        if options["black_back"]:
            words.append("with black back")
        return " - ".join([*words, paper_size])
