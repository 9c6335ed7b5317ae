"""Encoders: an observation -> a global code c of size c_dim.

- ResnetPointNet: point clouds (B, N, 3).
- PointGridUNet: point clouds (B, N, 3) -> a code and a feature grid (local features).
- VoxelCNN: 32^3 occupancy grids (B, 32, 32, 32), indexed [x, y, z].
- ResNet18: RGB images (B, 3, S, S) in [0, 1]. Written here (no torchvision, no
  downloaded ImageNet weights); the width is a config value.
- LatentPointNet: (points, occupancies) -> mean and log-std of q(z), for the VAE.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ResnetBlockFC

GRID_HALF = 0.55  # PointGridUNet's grid covers the padded box (padding 0.1) around the unit cube
SCATTER_CHUNK = 65536  # points per pass of PointGridUNet's point MLP: bounded memory for any cloud


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """Max over the points axis, broadcast back to every point."""
    return x.max(dim=1, keepdim=True).values.expand_as(x)


class ResnetPointNet(nn.Module):
    """PointNet with residual blocks; after each of the first blocks the pooled feature is concatenated."""

    def __init__(self, c_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        self.fc_pos = nn.Linear(3, 2 * hidden)
        self.blocks = nn.ModuleList(ResnetBlockFC(2 * hidden, hidden) for _ in range(n_blocks))
        self.fc_c = nn.Linear(hidden, c_dim)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        net = self.fc_pos(points)
        for block in self.blocks[:-1]:
            net = block(net)
            net = torch.cat([net, _max_pool(net)], dim=2)
        net = self.blocks[-1](net)
        return self.fc_c(torch.relu(net.max(dim=1).values))


class VoxelCNN(nn.Module):
    """3D CNN for 32^3 grids: one conv, then four stride-2 convs down to 2^3, then a linear layer."""

    def __init__(self, c_dim: int = 128, width: int = 32, offset: float = 0.5) -> None:
        super().__init__()
        w = width
        self.offset = offset
        self.conv_in = nn.Conv3d(1, w, 3, padding=1)
        self.convs = nn.ModuleList(
            nn.Conv3d(w * 2**i, w * 2 ** (i + 1), 3, stride=2, padding=1) for i in range(4)
        )
        self.fc = nn.Linear(w * 16 * 8, c_dim)

    def forward(self, voxels: torch.Tensor) -> torch.Tensor:
        # centring (offset 0.5) helps the first conv; the original's own models read 0/1 (offset 0)
        net = self.conv_in(voxels.unsqueeze(1) - self.offset)
        for conv in self.convs:
            net = conv(torch.relu(net))
        return self.fc(torch.relu(net.flatten(1)))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + identity)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016): a 7x7 stem, four stages of two basic blocks, global average pooling.

    ``width`` is the channel count of the first stage (64 in the standard network);
    ``pixel_stages`` how many stages ``forward_features`` hands on for pixel-aligned features.
    Inputs are normalised with the ImageNet statistics inside, as the original does.
    """

    def __init__(self, c_dim: int = 256, width: int = 64, pixel_stages: int = 1) -> None:
        super().__init__()
        self.pixel_stages = pixel_stages
        # channels of forward_features's map: the first stage, RGB, then each further stage
        self.feature_channels = width + 3 + sum(width * 2**i for i in range(1, pixel_stages))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        c_in = width
        for i in range(4):
            c_out = width * 2**i
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_BasicBlock(c_in, c_out, stride), _BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(c_in, c_dim)

    def _stages(self, images: torch.Tensor) -> list[torch.Tensor]:
        """-> the four stages' outputs, finest first."""
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        x = self.stem((images - mean) / std)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self._stages(images)[-1].mean(dim=(2, 3)))

    def forward_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (code c (B, c_dim), feature map (B, C, H/4, W/4)) for pixel-aligned local features.

        The map holds the first stage's output, the image itself at that size, then the next
        ``pixel_stages - 1`` stages' outputs upsampled to it (bilinearly): fine detail first, then
        features that see more of the image around each pixel.
        """
        outputs = self._stages(images)
        size = (outputs[0].shape[-2], outputs[0].shape[-1])
        small = F.adaptive_avg_pool2d(images, size) - 0.5
        coarse = [
            F.interpolate(o, size=size, mode="bilinear", align_corners=False)
            for o in outputs[1 : self.pixel_stages]
        ]
        return self.fc(outputs[-1].mean(dim=(2, 3))), torch.cat([outputs[0], small, *coarse], 1)


class LatentPointNet(nn.Module):
    """q(z | points, occupancies[, c]) of the VAE: a small PointNet over (point, occupancy) pairs."""

    def __init__(self, z_dim: int = 128, c_dim: int = 0, hidden: int = 128, pool_relu: bool = True) -> None:
        super().__init__()
        self.pool_relu = pool_relu  # a ReLU on the pooled feature (the original's encoder has none)
        self.fc_pos = nn.Linear(3, hidden)
        self.fc_occ = nn.Linear(1, hidden)
        self.fc_c = nn.Linear(c_dim, hidden) if c_dim > 0 else None
        self.fc_0 = nn.Linear(hidden, hidden)
        self.fc_1 = nn.Linear(2 * hidden, hidden)
        self.fc_2 = nn.Linear(2 * hidden, hidden)
        self.fc_mean = nn.Linear(hidden, z_dim)
        self.fc_logstd = nn.Linear(hidden, z_dim)

    def forward(
        self, points: torch.Tensor, occ: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.fc_pos(points) + self.fc_occ(occ.unsqueeze(-1))
        if self.fc_c is not None and c is not None:
            net = net + self.fc_c(c).unsqueeze(1)
        net = self.fc_0(torch.relu(net))
        net = self.fc_1(torch.relu(torch.cat([net, _max_pool(net)], dim=2)))
        net = self.fc_2(torch.relu(torch.cat([net, _max_pool(net)], dim=2)))
        net = net.max(dim=1).values
        if self.pool_relu:
            net = torch.relu(net)
        return self.fc_mean(net), self.fc_logstd(net)


def _conv(c_in: int, c_out: int, stride: int = 1) -> nn.Conv3d:
    return nn.Conv3d(c_in, c_out, 3, stride, 1)


class PointGridUNet(nn.Module):
    """Point clouds -> a feature grid and a global code, in the spirit of Convolutional ONets.

    Each point's features (from its position and its offset inside its cell) are averaged into
    a ``res``^3 grid over the padded box [-GRID_HALF, GRID_HALF]^3. A 3D U-Net (three stride-2
    levels down to res/8, trilinear upsampling with skip connections back up) spreads the
    evidence across the volume: whether a cell is inside depends on surface points far away.
    The decoder reads the output grid at each query point (``local.GridFeatures``); the code c
    comes from the coarsest level.
    """

    def __init__(self, c_dim: int = 128, width: int = 16, res: int = 32) -> None:
        super().__init__()
        w = width
        self.res, self.width = res, width
        self.point_mlp = nn.Sequential(nn.Linear(6, 2 * w), nn.ReLU(), nn.Linear(2 * w, w))
        self.conv_in = _conv(w, w)
        self.down = nn.ModuleList(_conv(w * 2**i, w * 2 ** (i + 1), 2) for i in range(3))
        self.mid = nn.ModuleList(_conv(w * 2 ** (i + 1), w * 2 ** (i + 1)) for i in range(3))
        self.up = nn.ModuleList(_conv(w * 2 ** (i + 1), w * 2**i) for i in reversed(range(3)))
        self.fc_c = nn.Linear(w * 8, c_dim)

    def scatter(self, points: torch.Tensor) -> torch.Tensor:
        """Points (B, N, 3) -> the mean of their features per cell, (B, width, res, res, res).

        The points go through the MLP in chunks, so memory stays bounded for any N and the cost
        is linear in N; a cell's mean does not depend on how densely it was sampled.
        """
        b, n, _ = points.shape
        r, w = self.res, self.width
        total = points.new_zeros(b * r**3, w)
        count = points.new_zeros(b * r**3)
        batch_offset = torch.arange(b, device=points.device)[:, None] * r**3
        for start in range(0, n, SCATTER_CHUNK):
            chunk = points[:, start : start + SCATTER_CHUNK]
            cell = ((chunk + GRID_HALF) / (2 * GRID_HALF) * r).clamp(0, r - 1e-3)
            ijk = cell.long()
            feats = self.point_mlp(torch.cat([chunk * 2, (cell - ijk - 0.5) * 2], -1))  # (B, n, w)
            flat = (batch_offset + (ijk[..., 0] * r + ijk[..., 1]) * r + ijk[..., 2]).reshape(-1)
            total = total.index_add(0, flat, feats.reshape(-1, w))
            count = count.index_add(0, flat, feats.new_ones(flat.shape[0]))
        grid = total / count.clamp(min=1)[:, None]
        return grid.view(b, r, r, r, w).permute(0, 4, 1, 2, 3)

    def forward_features(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (code c (B, c_dim), feature grid (B, width, res, res, res) indexed [x, y, z])."""
        net = torch.relu(self.conv_in(self.scatter(points)))
        skips = []
        for down, mid in zip(self.down, self.mid, strict=True):
            skips.append(net)
            net = torch.relu(mid(torch.relu(down(net))))
        c = self.fc_c(net.mean(dim=(2, 3, 4)))
        for up, skip in zip(self.up, reversed(skips), strict=True):
            net = F.interpolate(net, scale_factor=2, mode="trilinear", align_corners=False)
            net = torch.relu(up(net) + skip)
        return c, net

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward_features(points)[0]
