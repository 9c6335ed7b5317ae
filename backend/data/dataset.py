"""In-memory shape pools and the batches the trainer draws from them.

Query points are sampled afresh every step (uniform in the padded box, plus an
optional share near the surface) and labelled exactly from the shapes' CSG
description, so the pool never runs out of supervision.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from .shapes import Frame, ShapeSet


@dataclass
class Batch:
    inputs: torch.Tensor | None  # the observation, in the model's input format (None: unconditional)
    points: torch.Tensor  # (B, M, 3) query points in the prediction frame
    occ: torch.Tensor  # (B, M) float {0, 1}


class ShapePool:
    """A generated split (see ``generate.build_split``) held in memory."""

    def __init__(self, path: str | Path) -> None:
        with np.load(path) as f:
            d = {k: f[k] for k in f.files}
        self.shapes = ShapeSet(
            kind=torch.from_numpy(d["kind"]),
            op=torch.from_numpy(d["op"]),
            params=torch.from_numpy(d["params"]),
            rot=torch.from_numpy(d["rot"]),
            trans=torch.from_numpy(d["trans"]),
            center=torch.from_numpy(d["center"]),
            scale=torch.from_numpy(d["scale"].astype(np.float32)),
        )
        self.surface = torch.from_numpy(d["surface"])  # (S, K, 3) float16, unit frame
        self.normals = torch.from_numpy(d["normals"])
        res = round((d["voxels"].shape[1] * 8) ** (1 / 3))
        self.voxels = torch.from_numpy(np.unpackbits(d["voxels"], axis=1).reshape(-1, res, res, res))  # uint8
        self.images = torch.from_numpy(d["images"])  # (S, V, H, W, 3) uint8
        self.view_rot = torch.from_numpy(d["view_rot"])
        self.view_center = torch.from_numpy(d["view_center"])
        self.view_scale = torch.from_numpy(d["view_scale"])

    def __len__(self) -> int:
        return len(self.shapes)

    def frame(self, idx: torch.Tensor, views: torch.Tensor | None) -> Frame | None:
        """The prediction frame: the unit cube (None), or the camera frame of the given views."""
        if views is None:
            return None
        shapes = self.shapes.select(idx)
        return Frame.view(
            shapes, self.view_rot[idx, views], self.view_center[idx, views], self.view_scale[idx, views]
        )

    def to_frame(self, p_unit: torch.Tensor, idx: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        """Map unit-frame points (B, M, 3) into the prediction frame."""
        if views is None:
            return p_unit
        rot = self.view_rot[idx, views]
        q = torch.einsum("bij,bmj->bmi", rot, p_unit) - self.view_center[idx, views][:, None]
        return q / self.view_scale[idx, views][:, None, None]

    def observe(
        self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator, views: torch.Tensor | None
    ) -> torch.Tensor | None:
        """The model input for shapes ``idx``."""
        if kind == "pointcloud":
            k = self.surface.shape[1]
            pick = torch.randint(k, (len(idx), cfg.n_points), generator=gen)
            pts = self.surface[idx[:, None], pick].float()
            return pts + cfg.noise * torch.randn(pts.shape, generator=gen)
        if kind == "voxels":
            return self.voxels[idx].float()
        if kind == "image":
            assert views is not None
            return self.images[idx, views].permute(0, 3, 1, 2).float() / 255.0
        return None

    def batch(self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator) -> Batch:
        """Observation + labelled query points for shapes ``idx``."""
        views = torch.randint(self.images.shape[1], (len(idx),), generator=gen) if kind == "image" else None
        inputs = self.observe(kind, idx, cfg, gen, views)
        b, m = len(idx), cfg.query_points
        n_near = int(round(m * cfg.near_surface_ratio))
        half = 0.5 * (1 + cfg.padding)
        uniform = (torch.rand(b, m - n_near, 3, generator=gen) * 2 - 1) * half
        pick = torch.randint(self.surface.shape[1], (b, n_near), generator=gen)
        near_unit = self.surface[idx[:, None], pick].float()
        near = self.to_frame(near_unit, idx, views) + cfg.near_surface_sigma * torch.randn(
            b, n_near, 3, generator=gen
        )
        points = torch.cat([uniform, near], dim=1)
        occ = self.shapes.select(idx).occupancy(points, self.frame(idx, views))
        return Batch(inputs, points, occ)


def validation_set(
    pool: ShapePool, kind: str, cfg: DataConfig, n_points: int, seed: int = 1234
) -> list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]]:
    """Fixed (inputs, uniform points, occupancy) per shape, for IoU and the choice of tau.

    Uniform points in the padded box, as the original's IoU; view 0 for images.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    half = 0.5 * (1 + cfg.padding)
    for i in range(len(pool)):
        idx = torch.tensor([i])
        views = torch.zeros(1, dtype=torch.long) if kind == "image" else None
        inputs = pool.observe(kind, idx, cfg, gen, views)
        pts = (torch.rand(1, n_points, 3, generator=gen) * 2 - 1) * half
        occ = pool.shapes.select(idx).occupancy(pts, pool.frame(idx, views))
        out.append((inputs, pts, occ))
    return out
