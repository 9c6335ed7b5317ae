"""Values the add-on and the backend must agree on, defined once for both sides."""

from __future__ import annotations

import math
from typing import Literal, get_args

Kind = Literal["pointcloud", "voxels", "image", "views", "unconditional"]  # what a model takes as input
MODEL_KINDS: tuple[str, ...] = get_args(Kind)
# The arrays that carry each kind's observation on the wire: first the observation itself, then
# optional companions (a voxel grid's bounds); a model without an observation has none.
KIND_ARRAYS: dict[str, tuple[str, ...]] = {
    "pointcloud": ("points",),
    "voxels": ("voxels", "bounds"),
    "image": ("image",),
    "views": ("views", "cameras"),  # several pictures (V, H, W, C) and their cameras (V, 15)
    "unconditional": (),
}
# The most points one cloud may have: the backend refuses more, the add-on says so before reading them
# (preparing the largest cloud takes ~1.4 GB of float64 coordinates in the backend).
MAX_POINTS = 20_000_000
VOXEL_RES = 32  # the voxel models' input grid per axis (the voxel CNN reduces 32^3 to 2^3)
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256, 512)  # extraction grids: the base grid, then doublings
# The thresholds the add-on offers; the backend itself takes any value strictly between 0 and 1.
THRESHOLD_MIN = 0.001
THRESHOLD_MAX = 0.999
# The image models' camera, which the renderer, the models' projection and the add-on's placement
# of results all follow: at (0, 0, CAMERA_DISTANCE) looking down -z, x right, y up, square images
# with this field of view; the object fills the unit cube around the origin.
CAMERA_DISTANCE = 2.0
FOV_DEGREES = 40.0
# the width of that camera's square view at the object's centre, in model units
VIEW_WIDTH = 2.0 * CAMERA_DISTANCE * math.tan(math.radians(FOV_DEGREES) / 2.0)
