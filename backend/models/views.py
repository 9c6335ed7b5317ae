"""Several reference pictures of one object, each with its known camera, read together.

One picture leaves the depth of every pixel to a guess; a second from the side settles most of
it. The model reads each view as the single-image model reads its picture (a ResNet-18 feature
map, ``encoders.ResNet18``) and projects each query point into every view through that view's
camera (``data/cameras.py``), so the evidence of all views meets at the point. It pools over the
views that are there (1 to V per object): the mean, the max, and the share of views in whose
picture the point lies. Pooling makes the order of the views irrelevant and lets each extra view
add evidence; a point off the object in any view's picture reads as background there, which the
max carries. The code c is the mean of the views' codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..data.cameras import ARRAY_WIDTH, Cameras
from .encoders import ResNet18


@dataclass
class ViewSet:
    """Up to V framed pictures of each of B objects; views past an object's ``count`` are padding."""

    images: torch.Tensor  # (B, V, 3, H, W) in [0, 1]
    cameras: torch.Tensor  # (B, V, ARRAY_WIDTH): ``Cameras.to_array`` rows, in the object's frame
    count: torch.Tensor  # (B,) int64, 1..V
    # training only: where the object's frame lies in the shapes' unit frame, (B, 4) as centre
    # and scale, so that the query points can be taken into it (``kinds/views.py``)
    frame: torch.Tensor | None = None

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> ViewSet:
        images = self.images.to(device=device, dtype=dtype)
        cameras = self.cameras.to(device=images.device, dtype=images.dtype)
        return ViewSet(images, cameras, self.count.to(images.device), self.frame)

    def into_frame(self, points: torch.Tensor) -> torch.Tensor:
        """Unit-frame points (B, M, 3) in the views' object frame (as they are without ``frame``)."""
        if self.frame is None:
            return points
        return (points - self.frame[:, None, :3]) / self.frame[:, None, 3:]

    @property
    def valid(self) -> torch.Tensor:
        """(B, V) bool: which views are there."""
        return torch.arange(self.images.shape[1], device=self.count.device)[None] < self.count[:, None]

    def check(self, size: int) -> None:
        """ValueError naming what is wrong with the shapes, counts or values."""
        b, v = self.images.shape[:2]
        if self.images.ndim != 5 or self.images.shape[2:] != (3, size, size):
            got = tuple(self.images.shape)
            raise ValueError(f"views must have shape (B, V, 3, {size}, {size}), got {got}")
        if self.cameras.shape != (b, v, ARRAY_WIDTH):
            got = tuple(self.cameras.shape)
            raise ValueError(f"cameras must have shape ({b}, {v}, {ARRAY_WIDTH}), got {got}")
        if self.count.shape != (b,) or bool((self.count < 1).any() | (self.count > v).any()):
            raise ValueError(f"each object needs 1 to {v} views, got counts {self.count.tolist()}")
        if not bool(torch.isfinite(self.images).all() & torch.isfinite(self.cameras).all()):
            raise ValueError("NaN or infinite values in the views or their cameras")


ModelInput = torch.Tensor | ViewSet  # what a network takes: one tensor, or several views


@dataclass
class ViewEvidence:
    """What the decoder reads at each point: every view's feature map and camera."""

    fmap: torch.Tensor  # (B, V, C, h, w)
    cameras: torch.Tensor  # (B, V, ARRAY_WIDTH)
    valid: torch.Tensor  # (B, V) bool

    @property
    def nbytes(self) -> int:
        return int(self.fmap.numel() * self.fmap.element_size() + self.cameras.numel() * 4)


class MultiViewEncoder(nn.Module):
    """ResNet-18 on every view (shared weights) -> the mean code c (B, c_dim) and the views' maps."""

    def __init__(self, c_dim: int, width: int, pixel_stages: int) -> None:
        super().__init__()
        self.net = ResNet18(c_dim, width, pixel_stages)
        self.feature_channels = self.net.feature_channels

    def forward_features(self, views: ViewSet) -> tuple[torch.Tensor, ViewEvidence]:
        b, v = views.images.shape[:2]
        valid = views.valid
        codes, fmap = self.net.forward_features(views.images.flatten(0, 1))
        weights = valid.to(codes.dtype)[..., None]
        c = (codes.reshape(b, v, -1) * weights).sum(1) / weights.sum(1)
        return c, ViewEvidence(fmap.reshape(b, v, *fmap.shape[1:]), views.cameras, valid)

    def forward(self, views: ViewSet) -> torch.Tensor:
        return self.forward_features(views)[0]


class ViewFeatures(nn.Module):
    """Each view's features where a point projects, pooled over the views -> (B, M, 2 C + 1):
    their mean, their max, and the share of views whose picture holds the point."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def dims(self) -> int:
        return 2 * self.channels + 1

    def forward(self, p: torch.Tensor, evidence: ViewEvidence) -> torch.Tensor:
        b, v, c = evidence.fmap.shape[:3]
        m = p.shape[1]
        cameras = Cameras.from_rows(evidence.cameras.to(p.dtype))
        fmap = evidence.fmap.flatten(0, 1).to(p.dtype)
        sampled, uv, depth = cameras.sample(fmap, p.repeat_interleave(v, 0), "border")  # (B V, C, M)
        feats = sampled.reshape(b, v, c, m)  # channels before points: the pooling reads memory in order
        inside = ((uv.abs() <= 1).all(-1) & (depth > 0)).reshape(b, v, m)
        valid = evidence.valid
        if bool(valid.all()):  # every object shows all V views (always so for one object)
            mean, top, seen = feats.mean(1), feats.amax(1), inside.to(p.dtype).mean(1)
        else:
            keep = valid[:, :, None, None]
            share = valid.sum(1).to(p.dtype)[:, None]  # (B, 1)
            mean = (feats * keep).sum(1) / share[..., None]
            top = feats.masked_fill(~keep, float("-inf")).amax(1)
            seen = (inside & valid[..., None]).sum(1).to(p.dtype) / share
        out = p.new_empty(b, m, self.dims())  # written in place: one pass per part, no concatenation
        out[..., :c] = mean.transpose(1, 2)
        out[..., c : 2 * c] = top.transpose(1, 2)
        out[..., 2 * c] = seen
        return out
