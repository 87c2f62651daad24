"""The example kinds do real work: image.resize (Pillow) and text.stats."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from conveyor.kinds.examples.image_resize import ResizeInput, resize, target_size
from conveyor.kinds.examples.text_stats import StatsInput, stats
from conveyor.storage import job_key
from conveyor.storage.fs import FileStorage
from conveyor.worker.context import Context, PermanentError

JOB = "0190f3c2-0000-7000-8000-000000000001"


def context(tmp_path: Path, files: dict[str, bytes]) -> tuple[Context, list[dict[str, Any]]]:
    storage = FileStorage(tmp_path / "files")
    for name, data in files.items():
        storage.write(job_key(JOB, "in", name), [data])
    sent: list[dict[str, Any]] = []
    ctx = Context(job_id=JOB, kind="x", attempt=1, storage=storage, workdir=tmp_path / "work",
                  send=sent.append, is_cancelled=lambda: False)  # fmt: skip
    return ctx, sent


def image_bytes(fmt: str, size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color=(200, 30, 60) if mode == "RGB" else None).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_resize_halves_by_default(tmp_path: Path, fmt: str) -> None:
    ctx, _ = context(tmp_path, {"image": image_bytes(fmt, (120, 81))})
    out = resize(ResizeInput(), ctx)
    assert (out.width, out.height, out.type) == (60, 40, f"image/{fmt.lower()}")
    with Image.open(ctx.output_file("result")) as result:
        assert result.size == (60, 40)
        assert result.format == fmt


def test_resize_settings_file_wins_and_keeps_aspect(tmp_path: Path) -> None:
    files = {
        "image": image_bytes("PNG", (400, 200)),
        "settings": json.dumps({"width": 100}).encode(),
    }
    ctx, _ = context(tmp_path, files)
    out = resize(ResizeInput(width=10, height=10), ctx)
    assert (out.width, out.height) == (100, 50)  # height came from the aspect ratio


def test_resize_refuses_non_images_and_bad_settings(tmp_path: Path) -> None:
    ctx, _ = context(tmp_path / "a", {"image": b"not an image"})
    with pytest.raises(PermanentError, match="not an image"):
        resize(ResizeInput(), ctx)
    ctx, _ = context(tmp_path / "b", {"image": image_bytes("PNG", (4, 4)), "settings": b"{"})
    with pytest.raises(PermanentError, match="settings"):
        resize(ResizeInput(), ctx)
    gif = io.BytesIO()
    Image.new("P", (4, 4)).save(gif, format="GIF")
    ctx, _ = context(tmp_path / "c", {"image": gif.getvalue()})
    with pytest.raises(PermanentError, match="not PNG or JPEG"):
        resize(ResizeInput(), ctx)


@pytest.mark.parametrize(
    ("size", "wanted", "expected"),
    [((1, 1), (None, None), (1, 1)), ((300, 100), (None, 50), (150, 50)), ((5, 5), (7, 9), (7, 9))],
)
def test_target_size(
    size: tuple[int, int], wanted: tuple[Any, Any], expected: tuple[int, int]
) -> None:
    assert target_size(*size, *wanted) == expected


def test_text_stats(tmp_path: Path) -> None:
    text = "The cat sat.\nThe dog, the CAT!\n\nIt's 42 o'clock — naïve café\n"
    ctx, _ = context(tmp_path, {"text": text.encode()})
    out = stats(StatsInput(top=3), ctx)
    assert out.lines == 4
    assert out.words == len(text.split())
    assert out.characters == len(text)
    assert [(w.word, w.count) for w in out.most_common] == [("the", 3), ("cat", 2), ("sat", 1)]
    saved = json.loads(ctx.output_file("result").read_text())
    assert saved == out.model_dump(mode="json")
