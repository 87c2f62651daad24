"""Modulo clock: clock faces with n positions, for arithmetic that wraps around."""

from __future__ import annotations

import math
from typing import Any

from conveyor.kinds.render.resources.base import PRINTABLE_MM, Option, Page, Resource

CLOCKS_PER_PAGE = 2


class ModuloClock(Resource):
    view = "modulo_clock"
    title = "Modulo Clock"
    description = "Two clock faces per page numbered 0 to n-1, with one hand to move around."
    options = {"modulo": Option((10, 2, 3, 4, 5, 6, 8, 12), 10)}

    def pages(self, options: dict[str, Any], paper_size: str) -> list[Page]:
        width, height = PRINTABLE_MM[paper_size]
        modulo = int(options["modulo"])
        size = min(width, (height - 10) / CLOCKS_PER_PAGE)
        radius = size / 2 - 6
        centre = size / 2
        marks = []
        for n in range(modulo):
            angle = 2 * math.pi * n / modulo - math.pi / 2  # 0 at the top, clockwise
            cos, sin = math.cos(angle), math.sin(angle)
            marks.append({
                "n": n,
                "x1": round(centre + cos * radius * 0.92, 2),
                "y1": round(centre + sin * radius * 0.92, 2),
                "x2": round(centre + cos * radius, 2), "y2": round(centre + sin * radius, 2),
                "tx": round(centre + cos * radius * 0.75, 2),
                "ty": round(centre + sin * radius * 0.75 + 4, 2),
            })  # fmt: skip
        data = {"size": size, "r": radius, "c": centre, "marks": marks, "modulo": modulo,
                "clocks": CLOCKS_PER_PAGE, "font": round(max(6.0, radius / 6), 1)}  # fmt: skip
        return [Page("modulo_clock.html", data)]

    def subtitle(self, options: dict[str, Any], paper_size: str) -> str:
        return f"modulo {options['modulo']} - {paper_size}"
