"""Reference views of a training shape, as users take them and as the engine then frames them.

Each view has its own camera (``cameras.random_cameras``: field of view, elevation, roll and
framing drawn from the ranges users shoot in) and its own look (``render.render_views``). The
picture is then framed exactly as the engine frames a user's picture (``engine/framing.py``: the
object found by alpha or by the backdrop's colour, cut out onto white, cropped as the training
renders are framed), so the model trains on what it will be shown. The crop is part of the
camera (``Cameras.crop``): each view's camera stays exact, which is what lets a model that reads
several views put their evidence in one place.
"""

from __future__ import annotations

import numpy as np

from ..engine.framing import frame, object_mask
from ..engine.observation import resize_square
from ..engine.types import InputError
from ..wire.views import VIEW_SETS
from .cameras import ARRAY_WIDTH, Cameras, random_cameras, set_cameras
from .render import SdfFn, render_views

RENDER_SIZE = 128  # pictures are drawn at this size, then framed and shrunk to the model's
# the backdrop-colour mask's IoU with the true one below which a user would give a mask instead
MIN_MASK_AGREEMENT = 0.8


def frame_view(rgba: np.ndarray, mask: np.ndarray, camera: Cameras, size: int) -> tuple[np.ndarray, Cameras]:
    """One rendered view (H, W, 4) uint8 framed as the engine frames a picture -> the model's
    (size, size, 3) uint8 picture and the camera of that crop.

    The object is found as the engine finds it; where that fails (an object the colour of its
    backdrop), the true ``mask`` stands in, as the mask a user would then give.
    """
    rgb, alpha = rgba[..., :3].astype(np.float32) / 255.0, rgba[..., 3].astype(np.float32) / 255.0
    try:
        weights = object_mask(rgb, alpha)
        found = weights > 0.5
        agreement = (found & mask).sum() / max(int((found | mask).sum()), 1)
        if agreement < MIN_MASK_AGREEMENT:
            weights = mask.astype(np.float32)
    except InputError:
        weights = mask.astype(np.float32)
    square, framing = frame(rgb, weights)
    return resize_square(square, size), camera.framed(framing)


def reference_views(
    sdf: SdfFn, surface: np.ndarray, n: int, size: int, rng: np.random.Generator, cameras: str = "random"
) -> tuple[np.ndarray, np.ndarray]:
    """n framed views of one object (``sdf`` batched over n views, in the frame of ``surface``)
    -> pictures (n, size, size, 3) uint8 and their cameras (n, ARRAY_WIDTH) float32. The cameras
    are drawn at random ("random"), drawn and lit outside the training ranges ("outside"), or
    are those of a named set of ``wire.views.VIEW_SETS`` (``set_cameras``)."""
    outside = cameras == "outside"
    shots = (
        set_cameras(surface, cameras) if cameras in VIEW_SETS else random_cameras(surface, n, rng, outside)
    )
    rgba, masks = render_views(sdf, shots, RENDER_SIZE, rng, outside=outside)
    images = np.empty((n, size, size, 3), np.uint8)
    framed = np.empty((n, ARRAY_WIDTH), np.float32)
    for i in range(n):
        images[i], crop = frame_view(rgba[i], masks[i], shots.one(i), size)
        framed[i] = crop.to_array()[0]
    return images, framed
