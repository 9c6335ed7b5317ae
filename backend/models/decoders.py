"""Decoders: (query points p, latent z, code c) -> occupancy logits, one per point."""

from __future__ import annotations

import torch
from torch import nn

from .layers import CBatchNorm, CResnetBlock, ResnetBlockFC


class DecoderCBatchNorm(nn.Module):
    """The ONet decoder for conditional tasks: p -> fc -> n_blocks CBN ResNet blocks -> CBN -> fc.

    The code c conditions every block through conditional batch norm; an optional
    latent z is added after the first layer.
    """

    def __init__(
        self, c_dim: int, z_dim: int = 0, hidden: int = 256, n_blocks: int = 5, point_dim: int = 3
    ) -> None:
        super().__init__()
        self.fc_p = nn.Linear(point_dim, hidden)  # point_dim > 3: per-point features follow xyz
        self.fc_z = nn.Linear(z_dim, hidden) if z_dim > 0 else None
        self.blocks = nn.ModuleList(CResnetBlock(c_dim, hidden) for _ in range(n_blocks))
        self.bn = CBatchNorm(c_dim, hidden)
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, p: torch.Tensor, z: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        net = self.fc_p(p)
        if self.fc_z is not None and z is not None:
            net = net + self.fc_z(z).unsqueeze(1)
        for block in self.blocks:
            net = block(net, c)
        return self.fc_out(torch.relu(self.bn(net, c))).squeeze(-1)


class DecoderSimple(nn.Module):
    """The ONet decoder of the unconditional model: p, z and c are projected and added, then ResNet blocks."""

    def __init__(self, c_dim: int = 0, z_dim: int = 128, hidden: int = 128, n_blocks: int = 5) -> None:
        super().__init__()
        self.fc_p = nn.Linear(3, hidden)
        self.fc_z = nn.Linear(z_dim, hidden) if z_dim > 0 else None
        self.fc_c = nn.Linear(c_dim, hidden) if c_dim > 0 else None
        self.blocks = nn.ModuleList(ResnetBlockFC(hidden) for _ in range(n_blocks))
        self.fc_out = nn.Linear(hidden, 1)

    def forward(self, p: torch.Tensor, z: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        net = self.fc_p(p)
        if self.fc_z is not None and z is not None:
            net = net + self.fc_z(z).unsqueeze(1)
        if self.fc_c is not None:
            net = net + self.fc_c(c).unsqueeze(1)
        for block in self.blocks:
            net = block(net)
        return self.fc_out(torch.relu(net)).squeeze(-1)
