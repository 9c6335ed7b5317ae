"""Voxel grids: an (X, Y, Z) occupancy grid over bounds, resampled to the model's 32^3."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.augment import apply_to_grids
from ..engine.observation import Prepared, prepare_voxels
from ..engine.types import Observation, ReconstructOptions
from ..models.encoders import VoxelCNN
from ..models.local import LocalFeatures, VoxelFeatures
from ..models.views import ModelInput
from ..wire.constants import VOXEL_RES
from .base import InputKind

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.dataset import ShapePool


class Voxels(InputKind):
    name = "voxels"
    noun = "a voxel grid"

    def input_size(self, cfg: ModelConfig) -> int:
        return VOXEL_RES

    def input_shape(self, size: int) -> tuple[int | None, ...]:
        return (size, size, size)

    def encoder(self, cfg: ModelConfig) -> nn.Module:
        return VoxelCNN(cfg.c_dim, cfg.encoder_width, cfg.voxel_offset)

    def local_features(self, cfg: ModelConfig, encoder: nn.Module | None) -> LocalFeatures | None:
        return VoxelFeatures() if cfg.local_features else None

    def prepare(self, observation: Observation, meta: ModelMeta, options: ReconstructOptions) -> Prepared:
        return prepare_voxels(observation.voxels, observation.bounds)

    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> Tensor:
        return pool.voxels[idx].float()

    def augment(self, inputs: ModelInput, perm: torch.Tensor, sign: torch.Tensor) -> ModelInput:
        assert isinstance(inputs, torch.Tensor)
        return apply_to_grids(inputs, perm, sign)

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        return Observation(voxels=pool.voxels[i].numpy())
