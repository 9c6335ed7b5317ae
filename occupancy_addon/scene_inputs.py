"""What to reconstruct from: the input found in the scene, and its arrays for the backend.

The Input menu's Auto asks each kind's reader (``readers/``) in turn whether it claims the active
object; a chosen kind goes straight to its reader. Points and voxels are read in the object's
local frame and the result gets the object's world matrix, so it lands exactly over the input
whatever its transform. Nothing here changes the input.
"""

from __future__ import annotations

import bpy

from .errors import UserError
from .readers import BY_KIND, BY_MODE, READERS
from .scene_data import SUPPORTED, InputChoice, InputData, panel_state, type_label

MODES = [
    (
        "AUTO",
        "Auto",
        "Decide from the active object: a mesh without faces or a point cloud gives "
        "points, a mesh with faces or a volume gives voxels, an image empty gives an image, "
        "several selected image empties or cameras with a background image give views",
    ),
    *(BY_KIND[kind].mode for kind in ("pointcloud", "voxels", "image", "views")),  # the menu's order
]


def resolve_source(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """A previous result stands for the object it was made from (so Reconstruct again re-runs it)."""
    if obj is None:
        return None
    result = getattr(obj, "occupancy", None)
    if result is not None and result.is_result and result.source is not None:
        source: bpy.types.Object = result.source
        return source
    return obj


def detect(
    context: bpy.types.Context,
    obj: bpy.types.Object | None,
    mode: str = "AUTO",
    evaluated: bool = True,
    chosen_image: bpy.types.Image | None = None,
    drawing: bool = False,
) -> InputChoice:
    """The input that Reconstruct would use; UserError says why there is none.

    ``drawing``: called from a panel's draw, where the scene is already evaluated and must not be
    evaluated again.
    """
    panel_state.drawing = drawing
    try:
        return _detect(context, obj, mode, evaluated, chosen_image)
    finally:
        panel_state.drawing = False


def _detect(
    context: bpy.types.Context,
    obj: bpy.types.Object | None,
    mode: str,
    evaluated: bool,
    chosen_image: bpy.types.Image | None,
) -> InputChoice:
    obj = resolve_source(obj)
    image = BY_KIND["image"]
    if mode == image.mode[0] or (obj is None and mode == "AUTO" and chosen_image is not None):
        return image.detect(obj, context, evaluated, chosen_image)
    if obj is None:
        raise UserError(f"Nothing selected: {SUPPORTED} (or choose an image in the panel)")
    if mode != "AUTO":
        return BY_MODE[mode].detect(obj, context, evaluated, chosen_image)
    for reader in READERS:
        if reader.claims(obj, context, evaluated):
            return reader.detect(obj, context, evaluated, chosen_image)
    raise UserError(f"'{obj.name}' is {type_label(obj)} object, which cannot be reconstructed: {SUPPORTED}")


def read(context: bpy.types.Context, choice: InputChoice, evaluated: bool = True) -> InputData:
    """Copy the input's data into numpy arrays for the backend; UserError when it is unusable."""
    context.evaluated_depsgraph_get()  # brings world matrices up to date after a script moved things
    return BY_KIND[choice.kind].read(context, choice, evaluated)
