"""The occupancy network: encoder + decoder (+ latent encoder for the VAE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .decoders import DecoderCBatchNorm, DecoderSimple
from .encoders import LatentPointNet, ResNet18, ResnetPointNet, VoxelCNN


class OccupancyNetwork(nn.Module):
    """f(p, x) -> logit of occupancy. ``encode`` once per observation, ``decode`` for many points."""

    def __init__(
        self,
        encoder: nn.Module | None,
        decoder: nn.Module,
        latent: LatentPointNet | None,
        z_dim: int,
        c_dim: int,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent = latent
        self.z_dim = z_dim
        self.c_dim = c_dim

    def encode(self, inputs: torch.Tensor | None, batch_size: int = 1) -> torch.Tensor:
        """Observation -> code c of shape (B, c_dim); an empty (B, 0) code for unconditional models."""
        if self.encoder is None:
            return torch.empty(batch_size, 0, device=self._device())
        return self.encoder(inputs)

    def decode(self, p: torch.Tensor, z: torch.Tensor | None, c: torch.Tensor) -> torch.Tensor:
        """Query points p (B, M, 3) -> occupancy logits (B, M)."""
        return self.decoder(p, z, c)

    def sample_z(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """A latent from the prior N(0, I), or None for deterministic models."""
        if self.z_dim == 0:
            return None
        return torch.randn(batch_size, self.z_dim, generator=generator).to(self._device())

    def loss(
        self, p: torch.Tensor, occ: torch.Tensor, inputs: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO: BCE summed over the query points (as the original) + KL(q(z) || N(0, I))."""
        c = self.encode(inputs, batch_size=p.shape[0])
        z = None
        kl = torch.zeros((), device=p.device)
        if self.latent is not None:
            mean, logstd = self.latent(p, occ, c if self.c_dim > 0 else None)
            z = mean + torch.randn_like(mean) * logstd.exp()
            kl = (0.5 * (mean**2 + (2 * logstd).exp() - 1) - logstd).sum(-1).mean()
        logits = self.decode(p, z, c)
        bce = F.binary_cross_entropy_with_logits(logits, occ, reduction="none").sum(-1).mean()
        return bce + kl, {"bce": bce.item() / p.shape[1], "kl": kl.item()}

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def build_model(cfg: ModelConfig) -> OccupancyNetwork:
    """Instantiate the network described by ``cfg`` (sizes included)."""
    cfg.validate()
    encoder: nn.Module | None
    if cfg.kind == "pointcloud":
        encoder = ResnetPointNet(cfg.c_dim, cfg.encoder_hidden)
    elif cfg.kind == "voxels":
        encoder = VoxelCNN(cfg.c_dim, cfg.encoder_width)
    elif cfg.kind == "image":
        encoder = ResNet18(cfg.c_dim, cfg.encoder_width)
    else:
        encoder = None
    decoder: nn.Module
    if cfg.decoder == "cbatchnorm":
        decoder = DecoderCBatchNorm(cfg.c_dim, cfg.z_dim, cfg.hidden, cfg.n_blocks)
    else:
        decoder = DecoderSimple(cfg.c_dim, cfg.z_dim, cfg.hidden, cfg.n_blocks)
    latent = LatentPointNet(cfg.z_dim, cfg.c_dim, cfg.encoder_hidden) if cfg.z_dim > 0 else None
    return OccupancyNetwork(encoder, decoder, latent, cfg.z_dim, cfg.c_dim)
