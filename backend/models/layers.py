"""Building blocks shared by the encoders and decoders.

All point-wise layers work on a (batch, points, channels) layout with nn.Linear,
which trains about twice as fast on CPU as the original's channels-first Conv1d.
"""

from __future__ import annotations

import torch
from torch import nn


class ResnetBlockFC(nn.Module):
    """Fully connected residual block: x + fc_1(relu(fc_0(relu(x))))."""

    def __init__(self, size_in: int, size_out: int | None = None, size_h: int | None = None) -> None:
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = min(size_in, size_out) if size_h is None else size_h
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = None if size_in == size_out else nn.Linear(size_in, size_out, bias=False)
        nn.init.zeros_(self.fc_1.weight)  # start as the identity, as the original does

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(torch.relu(self.fc_0(torch.relu(x))))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx


class CBatchNorm(nn.Module):
    """Conditional batch norm: gamma(c) * BN(x) + beta(c), with BN itself not affine.

    x is (B, T, F), c is (B, C). gamma starts at 1 and beta at 0, so the block
    starts as plain batch norm.
    """

    def __init__(self, c_dim: int, f_dim: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(f_dim, affine=False)
        self.gamma = nn.Linear(c_dim, f_dim)
        self.beta = nn.Linear(c_dim, f_dim)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        b, t, f = x.shape
        x_n = self.bn(x.reshape(b * t, f)).reshape(b, t, f)
        return self.gamma(c).unsqueeze(1) * x_n + self.beta(c).unsqueeze(1)


class CResnetBlock(nn.Module):
    """Residual block with conditional batch norm before each of its two linear layers."""

    def __init__(
        self, c_dim: int, size_in: int, size_h: int | None = None, size_out: int | None = None
    ) -> None:
        super().__init__()
        size_out = size_in if size_out is None else size_out
        size_h = size_in if size_h is None else size_h
        self.bn_0 = CBatchNorm(c_dim, size_in)
        self.bn_1 = CBatchNorm(c_dim, size_h)
        self.fc_0 = nn.Linear(size_in, size_h)
        self.fc_1 = nn.Linear(size_h, size_out)
        self.shortcut = None if size_in == size_out else nn.Linear(size_in, size_out, bias=False)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        net = self.fc_0(torch.relu(self.bn_0(x, c)))
        dx = self.fc_1(torch.relu(self.bn_1(net, c)))
        x_s = x if self.shortcut is None else self.shortcut(x)
        return x_s + dx
