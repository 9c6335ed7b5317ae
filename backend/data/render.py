"""A small sphere-tracing renderer for signed distance fields, in torch.

Camera convention (also the image model's prediction frame): the camera sits at
(0, 0, CAMERA_DISTANCE) and looks down -z, with x to the right and y up (Blender's
and OpenGL's camera convention). The object is centred on the origin and scaled
so that the longest side of its bounding box, in this frame, is 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..wire.constants import CAMERA_DISTANCE, FOV_DEGREES

SdfFn = Callable[[torch.Tensor], torch.Tensor]  # (S, M, 3) -> (S, M)


def camera_rays(size: int) -> torch.Tensor:
    """Unit ray directions (size*size, 3), row-major from the top-left pixel."""
    half = math.tan(math.radians(FOV_DEGREES) / 2)
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-t * half, t * half, indexing="ij")  # rows go down, y goes up
    d = torch.stack([x, y, -torch.ones_like(x)], -1).reshape(-1, 3)
    return d / d.norm(dim=-1, keepdim=True)


def silhouette(points: np.ndarray, size: int) -> np.ndarray:
    """The (size, size) pixels, row-major from the top-left, that points (K, 3) in front of the
    camera fall into: dense surface samples give a shape's mask as the camera sees it."""
    half = math.tan(math.radians(FOV_DEGREES) / 2)
    depth = CAMERA_DISTANCE - points[:, 2]
    ahead = depth > 1e-6
    ndc = points[ahead, :2] / (depth[ahead, None] * half)
    col = np.floor((ndc[:, 0] + 1) / 2 * size).astype(np.int64)
    row = np.floor((1 - ndc[:, 1]) / 2 * size).astype(np.int64)
    inside = (col >= 0) & (col < size) & (row >= 0) & (row < size)
    mask = np.zeros((size, size), bool)
    mask[row[inside], col[inside]] = True
    return mask


def render(
    sdf: SdfFn,
    n_shapes: int,
    size: int,
    rng: np.random.Generator,
    steps: int = 64,
) -> np.ndarray:
    """Render S shapes with random colour, light and background -> (S, size, size, 3) uint8."""
    dirs = camera_rays(size).expand(n_shapes, -1, -1)
    origin = torch.tensor([0.0, 0.0, CAMERA_DISTANCE])
    t = torch.full(dirs.shape[:2], CAMERA_DISTANCE - 0.9)  # the object lies within radius 0.87
    hit = torch.zeros(dirs.shape[:2], dtype=torch.bool)
    far = CAMERA_DISTANCE + 0.9
    for _ in range(steps):
        d = sdf(origin + t[..., None] * dirs)
        hit |= d.abs() < 1e-3
        t = torch.where(hit, t, t + 0.8 * d.clamp(min=-0.05))  # 0.8: some SDFs are bounds, not exact
        if bool((hit | (t > far)).all()):
            break
    hit &= t < far
    p = origin + t[..., None] * dirs
    # normals by central differences
    eps = 1e-3
    grads = []
    for axis in range(3):
        e = torch.zeros(3)
        e[axis] = eps
        grads.append(sdf(p + e) - sdf(p - e))
    n = torch.stack(grads, -1)
    n = n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)

    s = n_shapes
    light = torch.from_numpy(rng.normal(size=(s, 3)).astype(np.float32))
    light[:, 2] = light[:, 2].abs() + 0.5  # mostly from the camera side
    light = light / light.norm(dim=-1, keepdim=True)
    albedo = torch.from_numpy(rng.uniform(0.15, 0.95, (s, 1, 3)).astype(np.float32))
    ambient = torch.from_numpy(rng.uniform(0.15, 0.4, (s, 1, 1)).astype(np.float32))
    background = torch.from_numpy(rng.uniform(0.85, 1.0, (s, 1, 1)).astype(np.float32)).expand(s, 1, 3)
    diffuse = (n * light[:, None]).sum(-1, keepdim=True).clamp(min=0)
    half_vec = light[:, None] - dirs
    half_vec = half_vec / half_vec.norm(dim=-1, keepdim=True)
    spec = (n * half_vec).sum(-1, keepdim=True).clamp(min=0) ** 32 * 0.3
    color = albedo * (ambient + (1 - ambient) * diffuse) + spec
    img = torch.where(hit[..., None], color, background).clamp(0, 1)
    return (img.reshape(s, size, size, 3) * 255 + 0.5).to(torch.uint8).numpy()
