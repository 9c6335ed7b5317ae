"""In-memory shape pools and the batches the trainer draws from them.

Procedural splits: query points are sampled afresh every step (uniform in the padded
box, plus an optional share near the surface) and labelled exactly from the shapes' CSG
description, so the pool never runs out of supervision.

Mesh splits (``prepare-meshes``): query points are drawn with replacement from the
labelled points stored with each mesh (uniform and near-surface sets), as the original
draws from its points.npz.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import DataConfig
from ..kinds import kind as input_kind
from ..models.views import ModelInput, ViewSet
from .augment import apply_to_points
from .scans import candidates
from .shapes import Frame, ShapeSet

OBSERVATION_KEYS = ("surface", "normals", "voxels", "images", "view_rot", "view_center", "view_scale")
CSG_KEYS = ("kind", "op", "params", "rot", "trans", "center", "scale")
QUERY_KEYS = ("uniform_points", "uniform_occ", "near_points", "near_occ")


class DataError(ValueError):
    """A split file or a data request cannot be used; the message says why."""


@dataclass
class StoredQueries:
    """Labelled query points stored per shape: (S, N, 3) float16 points, (S, N) bool occupancy."""

    uniform: torch.Tensor
    uniform_occ: torch.Tensor
    near: torch.Tensor
    near_occ: torch.Tensor

    def sample(
        self, idx: torch.Tensor, n_uniform: int, n_near: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n_uniform + n_near, 3) points and their occupancy, drawn with replacement."""
        rows = idx[:, None]
        pick_u = torch.randint(self.uniform.shape[1], (len(idx), n_uniform), generator=gen)
        if n_near == 0:  # the original's points.npz: one uniform set, no near-surface one
            return self.uniform[rows, pick_u].float(), self.uniform_occ[rows, pick_u].float()
        pick_n = torch.randint(self.near.shape[1], (len(idx), n_near), generator=gen)
        points = torch.cat([self.uniform[rows, pick_u], self.near[rows, pick_n]], dim=1).float()
        occ = torch.cat([self.uniform_occ[rows, pick_u], self.near_occ[rows, pick_n]], dim=1).float()
        return points, occ


def _read_split(path: str | Path) -> dict[str, np.ndarray]:
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is not a split file (a single array, not an .npz archive)")
        with f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path} is not a readable split file: {e}") from None


def _unpack(bits: np.ndarray, n: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(bits, axis=1)[:, :n].astype(bool))


@dataclass
class Batch:
    inputs: ModelInput | None  # the observation, in the model's input format (None: unconditional)
    points: torch.Tensor  # (B, M, 3) query points in the prediction frame
    occ: torch.Tensor  # (B, M) float {0, 1}


class ShapePool:
    """A generated split (see ``generate.build_split``) held in memory."""

    def __init__(self, split: str | Path | Mapping[str, np.ndarray]) -> None:
        """``split``: a split file, or its arrays (shapes along the first axis)."""
        path = "the arrays given" if isinstance(split, Mapping) else split
        d = dict(split) if isinstance(split, Mapping) else _read_split(split)
        labels = CSG_KEYS if "kind" in d else QUERY_KEYS
        missing = [k for k in (*OBSERVATION_KEYS, *labels) if k not in d]
        if missing:
            raise DataError(f"{path} is not a split file: it lacks {', '.join(missing)}")
        self.shapes: ShapeSet | None = None
        self.queries: StoredQueries | None = None
        if "kind" in d:
            self.shapes = ShapeSet.from_numpy(d)
        else:
            n_u, n_n = d["uniform_points"].shape[1], d["near_points"].shape[1]
            self.queries = StoredQueries(
                torch.from_numpy(d["uniform_points"]),
                _unpack(d["uniform_occ"], n_u),
                torch.from_numpy(d["near_points"]),
                _unpack(d["near_occ"], n_n),
            )
        self.names = [str(x) for x in d["names"]] if "names" in d else None
        self.surface = torch.from_numpy(d["surface"])  # (S, K, 3) float16, unit frame
        self.normals = torch.from_numpy(d["normals"])
        res = round((d["voxels"].shape[1] * 8) ** (1 / 3))
        self.voxels = torch.from_numpy(np.unpackbits(d["voxels"], axis=1).reshape(-1, res, res, res))  # uint8
        self.images = torch.from_numpy(d["images"])  # (S, V, H, W, 3) uint8
        self.view_rot = torch.from_numpy(d["view_rot"])
        self.view_center = torch.from_numpy(d["view_center"])
        self.view_scale = torch.from_numpy(d["view_scale"])
        # the cameras of reference views (data.cameras "random"), (S, V, 15); none for fixed views
        cameras = d.get("view_cameras")
        none = torch.zeros(len(self), 0, 15)
        self.view_cameras = torch.from_numpy(cameras) if cameras is not None else none

    def __len__(self) -> int:
        return int(self.surface.shape[0])

    def frame(
        self, idx: torch.Tensor, views: torch.Tensor | None, shapes: ShapeSet | None = None
    ) -> Frame | None:
        """The prediction frame: the unit cube (None), or the camera frame of the given views.

        ``shapes``: ``self._csg().select(idx)`` when the caller already has it.
        """
        if views is None:
            return None
        shapes = self._csg().select(idx) if shapes is None else shapes
        return Frame.view(
            shapes, self.view_rot[idx, views], self.view_center[idx, views], self.view_scale[idx, views]
        )

    def _occupancy(self, points: torch.Tensor, idx: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        """Exact occupancy (B, M) of prediction-frame points for shapes ``idx``."""
        shapes = self._csg().select(idx)
        return shapes.occupancy(points, self.frame(idx, views, shapes))

    def to_frame(self, p_unit: torch.Tensor, idx: torch.Tensor, views: torch.Tensor | None) -> torch.Tensor:
        """Map unit-frame points (B, M, 3) into the prediction frame."""
        if views is None:
            return p_unit
        rot = self.view_rot[idx, views]
        q = torch.einsum("bij,bmj->bmi", rot, p_unit) - self.view_center[idx, views][:, None]
        return q / self.view_scale[idx, views][:, None, None]

    def _csg(self) -> ShapeSet:
        if self.shapes is None:
            raise DataError("this split stores labelled points, not shapes: occupancy is known at those only")
        return self.shapes

    def check_kind(self, kind: str) -> None:
        """DataError unless this split can feed a model of ``kind``."""
        if input_kind(kind).viewed and self.images.shape[1] == 0:
            raise DataError(
                "this split has no rendered views, so it cannot train or test an image model "
                "(mesh datasets have none: image models use procedural data)"
            )
        if kind == "views" and self.view_cameras.shape[1] == 0:
            raise DataError(
                "this split has no views with cameras, so it cannot train or test a views model "
                '(generate one with data.cameras = "random")'
            )

    def observe(
        self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator, views: torch.Tensor | None
    ) -> ModelInput | None:
        """The model input for shapes ``idx`` (``backend.kinds``: each kind observes its own way)."""
        self.check_kind(kind)
        return input_kind(kind).observe(self, idx, cfg, gen, views)

    def oriented_surface(
        self, idx: torch.Tensor, n: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A random run of the stored surface samples of shapes ``idx``, enough to draw n points
        from (``scans.candidates``), as float32 with unit normals."""
        k = self.surface.shape[1]
        count = candidates(k, n)
        start = int(torch.randint(k - count + 1, (), generator=gen))
        run = slice(start, start + count)
        normals = self.normals[idx, run].float()
        return self.surface[idx, run].float(), normals / normals.norm(dim=-1, keepdim=True).clamp(min=1e-6)

    def batch(self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator) -> Batch:
        """Observation + labelled query points for shapes ``idx``, augmented if ``cfg.augment``.

        Augmented: each shape is mapped by a random symmetry of the cube, or for image
        models of the image square (``data/augment.py``).
        """
        batch = self._batch(kind, idx, cfg, gen)
        if not cfg.augment:
            return batch
        spec = input_kind(kind)
        perm, sign = spec.symmetries(len(idx), gen)
        inputs = None if batch.inputs is None else spec.augment(batch.inputs, perm, sign)
        return Batch(inputs, apply_to_points(batch.points, perm, sign), batch.occ)

    def _batch(self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator) -> Batch:
        self.check_kind(kind)
        viewed = input_kind(kind).viewed
        views = torch.randint(self.images.shape[1], (len(idx),), generator=gen) if viewed else None
        inputs = self.observe(kind, idx, cfg, gen, views)
        b, m = len(idx), cfg.query_points
        n_near = int(round(m * cfg.near_surface_ratio))
        if self.queries is not None:
            points, occ = self.queries.sample(idx, m - n_near, n_near, gen)
            return Batch(inputs, points, occ)
        half = 0.5 * (1 + cfg.padding)
        uniform = (torch.rand(b, m - n_near, 3, generator=gen) * 2 - 1) * half
        pick = torch.randint(self.surface.shape[1], (b, n_near), generator=gen)
        near_unit = self.surface[idx[:, None], pick].float()
        near = self.to_frame(near_unit, idx, views) + cfg.near_surface_sigma * torch.randn(
            b, n_near, 3, generator=gen
        )
        points = torch.cat([uniform, near], dim=1)
        occ = self._occupancy(points, idx, views)
        if isinstance(inputs, ViewSet):  # into the frame the views place the object in
            points = inputs.into_frame(points)
        return Batch(inputs, points, occ)

    def uniform_labelled(
        self, idx: torch.Tensor, n: int, padding: float, gen: torch.Generator, views: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(len(idx), n, 3) points uniform in the padded box and their occupancy (for IoU).

        Procedural: fresh points, exact occupancy. Mesh splits: the first n stored uniform
        points (all of them if fewer are stored).
        """
        if self.queries is not None:
            return self.queries.uniform[idx, :n].float(), self.queries.uniform_occ[idx, :n].float()
        half = 0.5 * (1 + padding)
        pts = (torch.rand(len(idx), n, 3, generator=gen) * 2 - 1) * half
        return pts, self._occupancy(pts, idx, views)


def validation_set(
    pool: ShapePool, kind: str, cfg: DataConfig, n_points: int, seed: int = 1234
) -> list[tuple[ModelInput | None, torch.Tensor, torch.Tensor]]:
    """Fixed (inputs, uniform points, occupancy) per shape, for IoU and the choice of tau.

    Uniform points in the padded box, as the original's IoU; view 0 for images.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(len(pool)):
        idx = torch.tensor([i])
        views = torch.zeros(1, dtype=torch.long) if input_kind(kind).viewed else None
        inputs = pool.observe(kind, idx, cfg, gen, views)
        pts, occ = pool.uniform_labelled(idx, n_points, cfg.padding, gen, views)
        if isinstance(inputs, ViewSet):
            pts = inputs.into_frame(pts)
        out.append((inputs, pts, occ))
    return out
