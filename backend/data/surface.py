"""Surface samples of implicit shapes.

Marching cubes gives area-uniform samples; Newton steps then project them onto the zero level.
"""

from __future__ import annotations

from collections.abc import Callable

import mcubes
import numpy as np
import torch

SdfFn = Callable[[torch.Tensor], torch.Tensor]  # (M, 3) -> (M,)


def grid_points(lo: np.ndarray, hi: np.ndarray, res: int) -> np.ndarray:
    """(res^3, 3) lattice points spanning [lo, hi], ordered [x, y, z] (z fastest)."""
    axes = [np.linspace(lo[i], hi[i], res, dtype=np.float32) for i in range(3)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def eval_chunked(sdf: SdfFn, pts: np.ndarray, chunk: int = 262144) -> np.ndarray:
    out = np.empty(len(pts), np.float32)
    for i in range(0, len(pts), chunk):
        out[i : i + chunk] = sdf(torch.from_numpy(pts[i : i + chunk])).numpy()
    return out


def project(sdf: SdfFn, pts: torch.Tensor, steps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Newton steps p <- p - d * g / |g|^2 towards the zero level; returns points and unit normals."""
    p = pts.clone()
    normal = torch.zeros_like(p)
    for _ in range(steps + 1):
        p.requires_grad_(True)
        d = sdf(p)
        (g,) = torch.autograd.grad(d.sum(), p)
        p = p.detach()
        gn2 = (g * g).sum(-1, keepdim=True).clamp(min=1e-12)
        normal = g / gn2.sqrt()
        p = p - d.detach()[:, None] * g / gn2
    # some distances (cone, box) are clamped at 0, so a point that lands exactly on the surface gets
    # a zero gradient there: take its normal from central differences instead
    flat = (normal * normal).sum(-1) < 0.5
    if flat.any():
        normal[flat] = _difference_normals(sdf, p[flat].detach())
    return p.detach(), normal


def _difference_normals(sdf: SdfFn, p: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    offsets = torch.eye(3, dtype=p.dtype) * h
    with torch.no_grad():
        d = sdf(torch.cat([p + offsets[k] for k in range(3)] + [p - offsets[k] for k in range(3)]))
    g = (d[: 3 * len(p)] - d[3 * len(p) :]).reshape(3, len(p)).T
    return g / g.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def sample_surface(
    sdf: SdfFn, lo: np.ndarray, hi: np.ndarray, res: int, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform by area on the zero level of ``sdf`` inside [lo, hi], with outward normals.

    Returns empty arrays when the grid finds no surface.
    """
    values = eval_chunked(sdf, grid_points(lo, hi, res)).reshape(res, res, res)
    # pad with "outside" so the surface is closed at the border; mcubes extracts the 0 level of -sdf
    verts, faces = mcubes.marching_cubes(np.pad(-values, 1, constant_values=-1.0), 0.0)
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)
    verts = lo + (verts - 1.0) * (hi - lo) / (res - 1)
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random((2, n, 1))
    s1 = np.sqrt(r1)
    pts = (1 - s1) * tri[face, 0] + s1 * (1 - r2) * tri[face, 1] + s1 * r2 * tri[face, 2]
    p, normal = project(sdf, torch.from_numpy(pts.astype(np.float32)))
    return p.numpy(), normal.numpy()
