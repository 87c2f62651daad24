"""`image.resize`: resize a PNG or JPEG (Pillow); half the size unless told otherwise.

Input file `image` (image/png or image/jpeg) and `settings` (application/json: `{"width": 640}`,
`{"height": 480}` or both; one of them keeps the aspect ratio; `{}` halves). As a Swiss AI
service both are required (the engine requires every declared input); a `/v1` job may leave
`settings` out or pass input values `width`/`height` instead. Output file `result`, in the
input's format.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

from conveyor import errors, swissai
from conveyor.kinds.registry import task
from conveyor.worker.context import Context, PermanentError

MAX_SIDE = 20_000
FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg"}


class ResizeInput(BaseModel):
    width: int | None = Field(None, ge=1, le=MAX_SIDE, description="Target width in pixels.")
    height: int | None = Field(None, ge=1, le=MAX_SIDE, description="Target height in pixels.")


class ResizeOutput(BaseModel):
    width: int
    height: int
    original_width: int
    original_height: int
    type: str


@task("image.resize", input=ResizeInput, output=ResizeOutput, timeout=300, max_attempts=2)
def resize(params: ResizeInput, ctx: Context) -> ResizeOutput:
    """Resize the input file `image` into the output file `result`."""
    from PIL import Image, UnidentifiedImageError

    wanted = _settings(params, ctx)
    source = ctx.input_file("image")
    try:
        image = Image.open(source)
    except UnidentifiedImageError:
        raise PermanentError("the input `image` is not an image Pillow can read") from None
    with image:
        kind = FORMATS.get(image.format or "")
        if kind is None:
            raise PermanentError(f"the input `image` is {image.format}, not PNG or JPEG")
        old_w, old_h = image.size
        size = target_size(old_w, old_h, wanted.get("width"), wanted.get("height"))
        ctx.progress(0, 1, f"resizing {old_w}x{old_h} to {size[0]}x{size[1]}")
        resized = image.resize(size, Image.Resampling.LANCZOS)
        if kind == "image/jpeg" and resized.mode not in ("RGB", "L", "CMYK"):
            resized = resized.convert("RGB")
        resized.save(ctx.output_file("result"), format=image.format)
    ctx.progress(1, 1, "resized")
    return ResizeOutput(width=size[0], height=size[1], original_width=old_w,
                        original_height=old_h, type=kind)  # fmt: skip


def _settings(params: ResizeInput, ctx: Context) -> dict[str, Any]:
    """The optional `settings` file if there is one, else the input values."""
    wanted: dict[str, Any] = params.model_dump(exclude_none=True)
    try:
        path = ctx.input_file("settings")
    except errors.FileError:
        return wanted
    try:
        given = ResizeInput.model_validate(json.loads(path.read_text("utf-8")))
    except ValueError as exc:
        raise PermanentError(f"the `settings` file is not valid resize settings: {exc}") from None
    return given.model_dump(exclude_none=True)


def target_size(width: int, height: int, new_w: int | None, new_h: int | None) -> tuple[int, int]:
    """Both given: exactly that; one: keep the aspect ratio; none: half (at least 1 pixel)."""
    if new_w and new_h:
        return new_w, new_h
    if new_w:
        return new_w, max(1, round(height * new_w / width))
    if new_h:
        return max(1, round(width * new_h / height)), new_h
    return max(1, width // 2), max(1, height // 2)


swissai.service(
    "image.resize",
    name="Image resize",
    slug="image-resize",
    summary="Resize a PNG or JPEG image; half its size unless settings say otherwise.",
    description=(
        'A `settings` JSON file is required (the engine requires every input): {"width": int,'
        ' "height": int}, one of them to keep the aspect ratio, or {} for half the size.'
    ),
    data_in_fields=[
        {"name": "image", "type": ["image/png", "image/jpeg"]},
        {"name": "settings", "type": ["application/json"]},
    ],
    data_out_fields=[{"name": "result", "type": ["image/png", "image/jpeg"]}],
    tags=[{"name": "Image Processing", "acronym": "IP"}],
)
