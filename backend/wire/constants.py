"""Values the add-on and the backend must agree on, defined once for both sides."""

from __future__ import annotations

MODEL_KINDS: tuple[str, ...] = ("pointcloud", "voxels", "image", "unconditional")
VOXEL_RES = 32  # the voxel models' input grid per axis (the voxel CNN reduces 32^3 to 2^3)
RESOLUTIONS: tuple[int, ...] = (32, 64, 128, 256, 512)  # extraction grids: the base grid, then doublings
# The thresholds the add-on offers; the backend itself takes any value strictly between 0 and 1.
THRESHOLD_MIN = 0.001
THRESHOLD_MAX = 0.999
