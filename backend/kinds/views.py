"""Views: 1 to 4 reference pictures of one object, each with its known camera (models/views.py).

The prediction is in the object's own frame, where the cameras are given: the views' evidence
meets there. Training shows each object through a random number of its stored views, so one
model serves a single picture and a front, side and top set alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.cameras import Cameras
from ..engine.observation import Prepared
from ..engine.types import InputError, Observation, ReconstructOptions
from ..engine.views import MAX_VIEWS, prepare_views
from ..models.local import LocalFeatures
from ..models.views import ModelInput, MultiViewEncoder, ViewFeatures, ViewSet
from .base import InputKind

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.dataset import ShapePool


def symmetry_matrices(perm: Tensor, sign: Tensor) -> Tensor:
    """The (n, 3, 3) matrices of ``data.augment``'s symmetries: (M p)_i = sign_i p_perm_i."""
    matrices = torch.zeros(len(perm), 3, 3)
    matrices.scatter_(2, perm[:, :, None], sign[:, :, None])
    return matrices


class Views(InputKind):
    name = "views"
    noun = "reference pictures with cameras"

    def input_size(self, cfg: ModelConfig) -> int:
        return cfg.image_size

    def input_shape(self, size: int) -> tuple[int | None, ...]:
        return (None, 3, size, size)  # per object: V views

    def encoder(self, cfg: ModelConfig) -> nn.Module:
        return MultiViewEncoder(cfg.c_dim, cfg.encoder_width, cfg.pixel_stages)

    def local_features(self, cfg: ModelConfig, encoder: nn.Module | None) -> LocalFeatures | None:
        assert isinstance(encoder, MultiViewEncoder)
        return ViewFeatures(encoder.feature_channels)

    def prepare(self, observation: Observation, meta: ModelMeta, options: ReconstructOptions) -> Prepared:
        if observation.cameras is None:
            raise InputError(
                "a views model needs each picture's camera: pass cameras (one row of 15 per picture)"
            )
        return prepare_views(observation.views, observation.cameras, int(meta.config.get("image_size", 64)))

    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> ViewSet:
        """Each object through 1 to MAX_VIEWS of its stored views, drawn at random."""
        stored = pool.images.shape[1]
        most = min(stored, MAX_VIEWS)
        order = torch.argsort(torch.rand(len(idx), stored, generator=gen), dim=1)[:, :most]
        count = torch.randint(1, most + 1, (len(idx),), generator=gen)
        images = pool.images[idx[:, None], order].permute(0, 1, 4, 2, 3).float() / 255.0
        return ViewSet(images, pool.view_cameras[idx[:, None], order].float(), count)

    def augment(self, inputs: ModelInput, perm: Tensor, sign: Tensor) -> ViewSet:
        """The object and its cameras mapped by the same symmetry: the pictures stay as they are."""
        assert isinstance(inputs, ViewSet)
        b, v = inputs.cameras.shape[:2]
        matrices = symmetry_matrices(perm, sign).repeat_interleave(v, 0)
        cameras = Cameras.from_rows(inputs.cameras).transformed(matrices)
        return ViewSet(inputs.images, cameras.to_rows().reshape(b, v, -1), inputs.count)

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        """Held-out shape ``i`` through its first ``views`` views (all stored ones when 0)."""
        n = views or pool.images.shape[1]
        return Observation(views=pool.images[i, :n].numpy(), cameras=pool.view_cameras[i, :n].numpy())
