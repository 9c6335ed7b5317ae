"""Views: 1 to 4 reference pictures of one object, each with its known camera (models/views.py).

The prediction is in the object's own frame, where the cameras are given: the views' evidence
meets there. Training shows each object through a random number of its stored views, so one
model serves a single picture and a front, side and top set alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.augment import symmetry_matrices
from ..data.cameras import Cameras
from ..engine.framing import object_mask
from ..engine.observation import Prepared
from ..engine.types import InputError, Observation, ReconstructOptions
from ..engine.views import MAX_VIEWS, object_frame, outline_box, prepare_views
from ..models.local import LocalFeatures
from ..models.views import ModelInput, MultiViewEncoder, ViewFeatures, ViewSet
from .base import InputKind

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.dataset import ShapePool


def engine_frame(pictures: np.ndarray, cameras: Tensor) -> Tensor:
    """(centre x, y, z, scale) of the frame the engine gives an object seen in framed pictures
    (V, H, W, 3) through ``cameras`` (V, 15); the unit frame if they do not agree on one."""
    boxes = []
    for picture in pictures:
        rgb = picture.astype(np.float32) / 255.0
        boxes.append(outline_box(object_mask(rgb) > 0.5))
    try:
        centre, scale = object_frame(boxes, Cameras.from_rows(cameras))
    except InputError:
        return torch.tensor([0.0, 0.0, 0.0, 1.0])
    return torch.tensor([*centre, scale], dtype=torch.float32)


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
        size = int(meta.config.get("image_size", 64))
        return prepare_views(observation.views, observation.cameras, size, options.outlines, observation.mask)

    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> ViewSet:
        """Each object through 1 to MAX_VIEWS of its stored views, drawn at random, in the frame
        the engine would place it in from those views (``engine.views.object_frame``)."""
        stored = pool.images.shape[1]
        most = min(stored, MAX_VIEWS)
        order = torch.argsort(torch.rand(len(idx), stored, generator=gen), dim=1)[:, :most]
        count = torch.randint(1, most + 1, (len(idx),), generator=gen)
        pictures = pool.images[idx[:, None], order]  # (B, V, H, W, 3) uint8
        cameras = pool.view_cameras[idx[:, None], order].float()
        seen = zip(pictures, cameras, count, strict=True)
        frame = torch.stack([engine_frame(p[:n].numpy(), c[:n]) for p, c, n in seen])
        moved = cameras.clone()
        moved[..., 9:12] = (cameras[..., 9:12] - frame[:, None, :3]) / frame[:, None, 3:]
        images = pictures.permute(0, 1, 4, 2, 3).float() / 255.0
        return ViewSet(images, moved, count, frame)

    def augment(self, inputs: ModelInput, perm: Tensor, sign: Tensor) -> ViewSet:
        """The object and its cameras mapped by the same symmetry: the pictures stay as they are."""
        assert isinstance(inputs, ViewSet)
        b, v = inputs.cameras.shape[:2]
        matrices = symmetry_matrices(perm, sign).repeat_interleave(v, 0)
        cameras = Cameras.from_rows(inputs.cameras).transformed(matrices)
        # the frame (the unit frame's offset and scale) stays: the query points were taken into it
        # before the symmetry, which then maps them and the cameras about its centre together
        return ViewSet(inputs.images, cameras.to_rows().reshape(b, v, -1), inputs.count, inputs.frame)

    def silhouette_cameras(self, observation: Observation) -> Cameras:
        return Cameras.from_array(np.asarray(observation.cameras))

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        """Held-out shape ``i`` through its first ``views`` views (all stored ones when 0)."""
        n = views or pool.images.shape[1]
        return Observation(views=pool.images[i, :n].numpy(), cameras=pool.view_cameras[i, :n].numpy())
