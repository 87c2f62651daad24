"""Example kinds with real work, each also a Swiss AI Center service.

Add `conveyor.kinds.examples` to `CONVEYOR_IMPORTS` to serve `image.resize` (Pillow) and
`text.stats`; they run through `/v1/jobs` (upload the input files first) and through the Swiss
AI contract (`/swissai/image.resize/compute`, `conveyor swissai serve text.stats`).
"""

from __future__ import annotations

from conveyor.kinds.examples import image_resize, text_stats

__all__ = ["image_resize", "text_stats"]
