"""Images: an image empty's picture (the result stands in front of it) or an image chosen in the
panel (the result goes to the 3D cursor, as seen from the front view)."""

from __future__ import annotations

import os
from typing import Any

import bpy
import numpy as np

from ..errors import UserError
from ..placement import front_view_matrix, image_result_matrix
from ..scene_data import InputChoice, InputData, image_size, is_image_empty, world_matrix
from .base import Context, MaybeImage, MaybeObject, Reader

MAX_IMAGE_SIDE = 512  # larger pictures are averaged down before sending (the model sees 64 px)
# Reading a picture copies all of its pixels as float32 (Blender has no cheaper way to read them):
# 16 bytes a pixel. Larger pictures are refused before that copy, which would cost over 512 MB.
MAX_IMAGE_PIXELS = 32 * 2**20


class ImageReader(Reader):
    kind = "image"
    mode = ("IMAGE", "Image", "Use the active image empty, or the image chosen below")

    def claims(self, obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> bool:
        return is_image_empty(obj)

    def detect(self, obj: MaybeObject, context: Context, evaluated: bool, image: MaybeImage) -> InputChoice:
        if obj is not None and is_image_empty(obj):
            shown = obj.data
            if not isinstance(shown, bpy.types.Image):
                raise UserError(f"'{obj.name}' is an image empty without an image: open an image in it")
            check_image_size(shown)
            return InputChoice(self.kind, _image_text(shown), obj.name, obj=obj, image=shown)
        if image is None:
            raise UserError("No image: select an image empty or choose an image in the panel")
        check_image_size(image)
        name = os.path.splitext(image.name)[0]
        return InputChoice(self.kind, _image_text(image), name, image=image)

    def read(self, context: bpy.types.Context, choice: InputChoice, evaluated: bool) -> InputData:
        assert choice.image is not None
        pixels = read_image(choice.image)
        if choice.obj is not None:
            width, height = image_size(choice.image)
            offset: Any = choice.obj.empty_image_offset
            local = image_result_matrix(
                choice.obj.empty_display_size, width, height, (float(offset[0]), float(offset[1]))
            )
            matrix = world_matrix(choice.obj.matrix_world) @ local
        else:
            cursor: Any = context.scene.cursor.location if context.scene is not None else (0.0, 0.0, 0.0)
            matrix = front_view_matrix((float(cursor[0]), float(cursor[1]), float(cursor[2])))
        return InputData(choice, {"image": pixels}, matrix)


def _image_text(image: bpy.types.Image) -> str:
    width, height = image_size(image)
    if width == 0 or height == 0:
        return f"Image: {image.name} (not loaded)"
    return f"Image: {image.name} ({width} \u00d7 {height})"


def check_image_size(image: bpy.types.Image) -> None:
    """UserError for a picture too large to read (``MAX_IMAGE_PIXELS``)."""
    width, height = image_size(image)
    if width * height > MAX_IMAGE_PIXELS:
        raise UserError(
            f"The image '{image.name}' is {width:,} \u00d7 {height:,} pixels; the add-on reads at most "
            f"{MAX_IMAGE_PIXELS / 1e6:.1f} megapixels (the model sees 64 \u00d7 64): scale it down first "
            "(Image Editor: Image > Resize)"
        )


def shrink_step(width: int, height: int) -> int:
    """The side of the pixel blocks ``read_image`` averages: 1 up to MAX_IMAGE_SIDE pixels a side."""
    return -(-max(width, height) // MAX_IMAGE_SIDE)


def kept_extent(width: int, height: int) -> tuple[int, int]:
    """The (width, height) of the part of a picture ``read_image`` reads: whole blocks from the
    top-left corner, so up to step - 1 columns and rows go at the right and bottom."""
    step = shrink_step(width, height)
    return width // step * step, height // step * step


def read_image(image: bpy.types.Image) -> np.ndarray:
    """(H, W, C) float32 pixels in [0, 1], top row first, at most MAX_IMAGE_SIDE on a side."""
    width, height = image_size(image)
    channels = image.channels
    if width == 0 or height == 0 or channels == 0:
        where = f" ({image.filepath})" if image.filepath else ""
        raise UserError(
            f"The image '{image.name}' has no pixels: its file is missing or cannot be read{where}"
        )
    check_image_size(image)
    pixels = np.empty(width * height * channels, np.float32)
    image.pixels.foreach_get(pixels)
    picture = pixels.reshape(height, width, channels)[::-1]  # Blender stores the bottom row first
    step = shrink_step(width, height)
    if step > 1:  # average step x step blocks
        w, h = kept_extent(width, height)
        picture = picture[:h, :w].reshape(h // step, step, w // step, step, channels).mean(axis=(1, 3))
    if channels == 2:  # grey + alpha
        picture = np.concatenate([picture[..., :1].repeat(3, axis=2), picture[..., 1:]], axis=2)
    elif channels == 1:
        picture = picture.repeat(3, axis=2)
    elif channels > 4:
        picture = picture[..., :4]
    return np.ascontiguousarray(np.clip(np.nan_to_num(picture), 0.0, 1.0), dtype=np.float32)
