"""What one camera view can show of a shape.

A point in the camera frame (``data/render.py``) is seen to be empty when the ray from the
camera through it misses the shape (outside the silhouette) or enters the shape only beyond
the point (in front of the visible surface): the image shows that it lies outside. Every other
point is *hidden*: it lies behind the visible surface, and whether it is inside can be inferred
from the image only through priors about shapes. Every inside point is hidden, so the hidden
points bound what a single view can decide.
"""

from __future__ import annotations

import torch

from ..wire.constants import CAMERA_DISTANCE
from .shapes import Frame, ShapeSet

_CAMERA = torch.tensor([0.0, 0.0, CAMERA_DISTANCE])
# the objects lie within radius 0.87 of the origin (a unit cube's half-diagonal)
_NEAR, _FAR = CAMERA_DISTANCE - 0.9, CAMERA_DISTANCE + 0.9


def first_hit(shapes: ShapeSet, frame: Frame, points: torch.Tensor, steps: int = 128) -> torch.Tensor:
    """Distance (B, M) from the camera to where its ray through each point first enters the shape
    (inf where the ray misses it), to within (FAR - NEAR) / steps."""
    dirs = points - _CAMERA
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    t = torch.linspace(_NEAR, _FAR, steps)
    b, m = points.shape[:2]
    samples = _CAMERA + t[:, None, None] * dirs.reshape(1, -1, 3)  # (steps, B*M, 3)
    samples = samples.reshape(steps, b, m, 3).permute(1, 0, 2, 3).reshape(b, steps * m, 3)
    inside = shapes.occupancy(samples, frame).reshape(b, steps, m) > 0.5
    first = torch.where(inside.any(1), inside.float().argmax(1), steps)  # (B, M) sample index
    return torch.cat([t, torch.tensor([float("inf")])])[first]


OUTSIDE_SILHOUETTE, IN_FRONT, HIDDEN = 0, 1, 2


def classify(shapes: ShapeSet, frame: Frame, points: torch.Tensor, steps: int = 128) -> torch.Tensor:
    """(B, M) long: OUTSIDE_SILHOUETTE where the camera's ray through the point misses the shape,
    IN_FRONT where it enters the shape beyond the point, else HIDDEN (inside points included)."""
    depth = (points - _CAMERA).norm(dim=-1)
    hit = first_hit(shapes, frame, points, steps)
    inside = shapes.occupancy(points, frame) > 0.5
    out = torch.full(depth.shape, IN_FRONT)
    out[hit.isinf()] = OUTSIDE_SILHOUETTE
    out[inside | (hit <= depth)] = HIDDEN
    return out
