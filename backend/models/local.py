"""Local features: the observation read at each query point, next to the global code c.

A global code has to squeeze the whole observation into c_dim numbers, and learning that takes
far more training than a CPU allows: here the original's global-code voxel model reached a
validation IoU of 0.60 after 1000 steps, below the 0.81 of its own 32^3 input. Reading the
observation where the point is hands the decoder the local evidence directly, and the network
then learns to turn it into a smooth surface, with c for context. Models with
``local_features = true`` feed these after xyz into the decoder's first layer: for a point cloud
a feature grid that a 3D U-Net computes from the points, for voxels the grid around the point,
for an image the encoder's features where the point projects.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..wire.constants import CAMERA_DISTANCE, FOV_DEGREES
from .encoders import GRID_HALF
from .patches import PatchFeatures, PointEvidence
from .views import ViewFeatures

VOXEL_SCALES = (1, 2, 4)  # average-pooling factors of the grid pyramid


class GridFeatures(nn.Module):
    """A learned feature grid (B, C, X, Y, Z) over [-GRID_HALF, GRID_HALF]^3, read trilinearly -> (B, M, C).

    The point-cloud model's U-Net (``encoders.PointGridUNet``) makes the grid; outside it reads 0.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def dims(self) -> int:
        return self.channels

    def forward(self, p: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        where = (p / GRID_HALF).flip(-1)[:, :, None, None, :]  # (x, y, z) -> grid_sample's (W, H, D) order
        sampled = F.grid_sample(grid.to(p.dtype), where, mode="bilinear", align_corners=False)
        return sampled[:, :, :, 0, 0].transpose(1, 2)


class GridPatchFeatures(nn.Module):
    """The U-Net's grid at each point, then the patch of its nearest input points -> (B, M, C + width)."""

    def __init__(self, channels: int, k: int, width: int) -> None:
        super().__init__()
        self.grid = GridFeatures(channels)
        self.patch = PatchFeatures(k, width)

    def dims(self) -> int:
        return self.grid.dims() + self.patch.dims()

    def forward(self, p: torch.Tensor, evidence: PointEvidence) -> torch.Tensor:
        return torch.cat([self.grid(p, evidence.grid), self.patch(p, evidence.points, evidence.index)], -1)


class VoxelFeatures(nn.Module):
    """The 32^3 grid (B, X, Y, Z) at full, half and quarter resolution, trilinear at each point -> (B, M, 3).

    The grid is indexed [x, y, z] and spans [-0.5, 0.5]^3; outside it reads as empty. Values are
    centred like the CNN's input (occupied 0.5, empty -0.5). No parameters.
    """

    def dims(self) -> int:
        return len(VOXEL_SCALES)

    def forward(self, p: torch.Tensor, voxels: torch.Tensor) -> torch.Tensor:
        occ = voxels.to(p.dtype).unsqueeze(1)  # (B, 1, X, Y, Z)
        # grid_sample takes (x, y, z) for the (W, H, D) = (Z, Y, X) axes, in [-1, 1] over the extent
        where = (2 * p).flip(-1)[:, :, None, None, :]  # (B, M, 1, 1, 3)
        feats = []
        for s in VOXEL_SCALES:
            level = occ if s == 1 else F.avg_pool3d(occ, s)
            sampled = F.grid_sample(level, where, mode="bilinear", align_corners=False)  # outside: 0
            feats.append(sampled[:, 0, :, 0, 0] - 0.5)
        return torch.stack(feats, -1)


def project(p: torch.Tensor) -> torch.Tensor:
    """Points in the image model's camera-aligned frame (B, M, 3) -> grid_sample coordinates (B, M, 2).

    The image models' camera (``wire/constants.py``) sits at (0, 0, CAMERA_DISTANCE) looking down
    -z, x right, y up; grid_sample's x runs left to right and its y top to bottom, over [-1, 1].
    """
    half = math.tan(math.radians(FOV_DEGREES) / 2)
    depth = (CAMERA_DISTANCE - p[..., 2:3]).clamp(min=0.1)
    ndc = p[..., :2] / (depth * half)
    return torch.stack([ndc[..., 0], -ndc[..., 1]], -1)


class PixelFeatures(nn.Module):
    """Pixel-aligned features: a feature map (B, C, H, W) sampled at each point's projection -> (B, M, C)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def dims(self) -> int:
        return self.channels

    def forward(self, p: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
        where = project(p)[:, :, None, :]  # (B, M, 1, 2)
        sampled = F.grid_sample(
            fmap.to(p.dtype), where, mode="bilinear", padding_mode="border", align_corners=False
        )
        return sampled[:, :, :, 0].transpose(1, 2)


# what the decoder reads at each point
LocalFeatures = GridFeatures | GridPatchFeatures | VoxelFeatures | PixelFeatures | ViewFeatures
