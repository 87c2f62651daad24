"""Small inline SVG charts rendered on the server: no chart library, readable without JS."""

from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 240, 48


def bars(values: Sequence[float], label: str, unit: str = "", cls: str = "bars") -> Markup:
    """One bar per value (e.g. per minute), scaled to the largest; `label` names it for
    screen readers and as a tooltip."""
    top = max(values, default=0) or 1
    step = WIDTH / max(1, len(values))
    parts = []
    for i, value in enumerate(values):
        h = 0 if value <= 0 else max(1.0, value / top * (HEIGHT - 2))
        parts.append(
            f'<rect x="{i * step:.1f}" y="{HEIGHT - h:.1f}" width="{max(1.0, step - 1):.1f}"'
            f' height="{h:.1f}"><title>{value:g}{escape(unit)}</title></rect>'
        )
    return _svg(label, cls, "".join(parts), f"peak {max(values, default=0):g}{unit}")


def line(
    values: Sequence[float | None],
    label: str,
    top: float | None = None,
    unit: str = "",
    cls: str = "line",
) -> Markup:
    """A polyline over the known values (None leaves a gap)."""
    known = [v for v in values if v is not None]
    scale = top if top is not None else (max(known, default=0) or 1)
    step = WIDTH / max(1, len(values) - 1)
    segments: list[list[str]] = [[]]
    for i, value in enumerate(values):
        if value is None:
            segments.append([])
            continue
        y = HEIGHT - 1 - min(1.0, value / scale) * (HEIGHT - 2)
        segments[-1].append(f"{i * step:.1f},{y:.1f}")
    body = "".join(
        f'<polyline points="{" ".join(points)}" />'
        if len(points) > 1
        else (
            f'<circle cx="{points[0].split(",")[0]}" cy="{points[0].split(",")[1]}" r="1.5" />'
            if points
            else ""
        )
        for points in segments
    )
    latest = f"{known[-1]:g}{unit}" if known else "no data"
    return _svg(label, cls, body, f"latest {latest}")


def _svg(label: str, cls: str, body: str, summary: str) -> Markup:
    title = escape(f"{label}: {summary}")
    # Every interpolated value is a number or escaped above.
    return Markup(  # noqa: S704
        f'<svg class="chart {escape(cls)}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-label="{title}" preserveAspectRatio="none"><title>{title}</title>{body}</svg>'
    )
