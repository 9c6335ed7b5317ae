"""Point clouds: (N, 3) points in any frame; N is free, and models of any density take every point."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.scans import draw_count, simulate_scans
from ..engine.observation import Prepared, prepare_points
from ..engine.types import Observation, ReconstructOptions
from ..models.encoders import PointGridUNet, ResnetPointNet
from ..models.local import GridFeatures, GridPatchFeatures, LocalFeatures
from ..wire.model_header import point_budget
from .base import InputKind

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.dataset import ShapePool


class PointCloud(InputKind):
    name = "pointcloud"
    noun = "a point cloud"

    def input_shape(self, size: int) -> tuple[int | None, ...]:
        return (None, 3)

    def encoder(self, cfg: ModelConfig) -> nn.Module:
        if cfg.local_features:
            return PointGridUNet(cfg.c_dim, cfg.encoder_width, cfg.grid_res)
        return ResnetPointNet(cfg.c_dim, cfg.encoder_hidden)

    def local_features(self, cfg: ModelConfig, encoder: nn.Module | None) -> LocalFeatures | None:
        if not cfg.local_features:
            return None
        if cfg.neighbours > 0:
            return GridPatchFeatures(cfg.encoder_width, cfg.neighbours, cfg.patch_width)
        return GridFeatures(cfg.encoder_width)

    def prepare(self, observation: Observation, meta: ModelMeta, options: ReconstructOptions) -> Prepared:
        return prepare_points(observation.points, point_budget({"training": meta.training}), options.seed)

    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> Tensor:
        if scans_vary(cfg):
            n = draw_count(cfg, gen)
            return simulate_scans(*pool.oriented_surface(idx, n, gen), n, cfg, gen)
        k = pool.surface.shape[1]
        pick = torch.randint(k, (len(idx), cfg.n_points), generator=gen)
        points = pool.surface[idx[:, None], pick].float()
        return points + cfg.noise * torch.randn(points.shape, generator=gen)

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        if views > 0:
            surface, normals = pool.oriented_surface(torch.tensor([i]), cfg.n_points, gen)
            scan = simulate_scans(surface, normals, cfg.n_points, cfg, gen, fixed_views=views)
            return Observation(points=scan[0].numpy())
        return Observation(points=self.observe(pool, torch.tensor([i]), cfg, gen, None)[0].numpy())


def scans_vary(cfg: DataConfig) -> bool:
    """Are clouds drawn as varied scans (data/scans.py), or as the original's fixed n noisy points?"""
    return (
        cfg.n_points_max > cfg.n_points
        or cfg.noise_max > cfg.noise
        or cfg.outliers > 0
        or cfg.density_gain > 0
        or cfg.partial_scans > 0
    )
