"""Images: one picture; the model predicts in its camera's frame (wire/constants.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.augment import apply_to_images, random_square_symmetries
from ..data.cameras import Cameras
from ..engine.observation import Prepared, prepare_image
from ..engine.types import Observation, ReconstructOptions
from ..models.encoders import ResNet18
from ..models.local import LocalFeatures, PixelFeatures
from ..models.views import ModelInput
from .base import InputKind

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.dataset import ShapePool


class Image(InputKind):
    name = "image"
    noun = "an image"
    viewed = True

    def input_size(self, cfg: ModelConfig) -> int:
        return cfg.image_size

    def input_shape(self, size: int) -> tuple[int | None, ...]:
        return (3, size, size)

    def encoder(self, cfg: ModelConfig) -> nn.Module:
        return ResNet18(cfg.c_dim, cfg.encoder_width, cfg.pixel_stages)

    def local_features(self, cfg: ModelConfig, encoder: nn.Module | None) -> LocalFeatures | None:
        if not cfg.local_features:
            return None
        assert isinstance(encoder, ResNet18)
        return PixelFeatures(encoder.feature_channels)

    def prepare(self, observation: Observation, meta: ModelMeta, options: ReconstructOptions) -> Prepared:
        return prepare_image(observation.image, int(meta.config.get("image_size", 64)), mask=observation.mask)

    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> Tensor:
        assert views is not None
        return pool.images[idx, views].permute(0, 3, 1, 2).float() / 255.0

    def symmetries(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return random_square_symmetries(n, gen)  # only these keep the camera's view axis

    def augment(self, inputs: ModelInput, perm: torch.Tensor, sign: torch.Tensor) -> ModelInput:
        assert isinstance(inputs, torch.Tensor)
        return apply_to_images(inputs, perm, sign)

    def silhouette_cameras(self, observation: Observation) -> Cameras:
        return Cameras.canonical()

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        return Observation(image=pool.images[i, 0].numpy())  # view 0, as the original tests
