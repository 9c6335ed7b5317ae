"""The occupancy network: encoder + decoder (+ latent encoder for the VAE)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .decoders import DecoderCBatchNorm, DecoderSimple
from .encoders import LatentPointNet, PointGridUNet, ResNet18
from .local import GridFeatures, GridPatchFeatures, LocalFeatures, PixelFeatures, VoxelFeatures
from .patches import NeighbourIndex, PointEvidence
from .views import MultiViewEncoder, ViewEvidence, ViewFeatures, ViewSet

Evidence = torch.Tensor | PointEvidence | ViewEvidence  # what ``decode`` reads at each query point


class ModelInputError(ValueError):
    """A tensor given to the network has the wrong type, shape or values; the message says which."""


def _check_tensor(x: object, name: str, shape: str) -> torch.Tensor:
    """``x`` as a finite floating-point tensor, or ModelInputError naming what is wrong."""
    if not isinstance(x, torch.Tensor):
        raise ModelInputError(f"{name} must be a torch tensor of shape {shape}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ModelInputError(f"{name} must hold floating-point values, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ModelInputError(f"NaN or infinite values in {name}")
    return x


class OccupancyNetwork(nn.Module):
    """f(p, x) -> logit of occupancy. ``encode`` once per observation, ``decode`` for many points.

    Inputs are checked (type, shape, finiteness) and a ModelInputError names the problem;
    floating-point inputs of another precision are converted to the parameters' dtype.
    """

    def __init__(
        self,
        encoder: nn.Module | None,
        decoder: nn.Module,
        latent: LatentPointNet | None,
        z_dim: int,
        c_dim: int,
        kind: str = "pointcloud",
        input_shape: tuple[int | None, ...] = (None, 3),
        local: LocalFeatures | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.latent = latent
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.kind = kind
        self.input_shape = input_shape  # the input's shape after the batch axis (None: any length)
        self.local = local  # reads the observation at each query point (local_features)

    def encode(self, inputs: torch.Tensor | ViewSet | None, batch_size: int = 1) -> torch.Tensor:
        """Observation -> code c of shape (B, c_dim); an empty (B, 0) code for unconditional models."""
        if self.encoder is None:
            if inputs is not None:
                raise ModelInputError("an unconditional model takes no observation; pass None")
            return torch.empty(batch_size, 0, device=self._device())
        if isinstance(self.encoder, MultiViewEncoder):
            return self.encoder(self._check_views(inputs))
        return self.encoder(self._check_inputs(inputs))

    def _check_views(self, inputs: object) -> ViewSet:
        if not isinstance(inputs, ViewSet):
            raise ModelInputError(f"a {self.kind} model takes a ViewSet, got {type(inputs).__name__}")
        try:
            inputs.check(int(self.input_shape[-1] or 0))
        except ValueError as e:
            raise ModelInputError(str(e)) from None
        return inputs.to(dtype=self._dtype())

    def _check_inputs(self, inputs: object) -> torch.Tensor:
        want = self.input_shape
        shape = "(B, " + ", ".join("N" if n is None else str(n) for n in want) + ")"
        x = _check_tensor(inputs, f"{self.kind} input", shape)
        ok = x.ndim == 1 + len(want) and all(
            n is None or n == m for n, m in zip(want, x.shape[1:], strict=False)
        )
        if not ok:
            raise ModelInputError(f"{self.kind} input must have shape {shape}, got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ModelInputError(f"{self.kind} input is empty: shape {tuple(x.shape)}")
        return x.to(self._dtype())

    @staticmethod
    def _check_points(p: object) -> torch.Tensor:
        x = _check_tensor(p, "query points", "(B, M, 3)")
        if x.ndim != 3 or x.shape[2] != 3:
            raise ModelInputError(f"query points must have shape (B, M, 3), got {tuple(x.shape)}")
        return x

    def encode_local(
        self, inputs: torch.Tensor | ViewSet | None, batch_size: int = 1
    ) -> tuple[torch.Tensor, Evidence | None]:
        """-> (code c, what ``decode`` reads as ``obs``: a feature grid, the grid with the points and
        their neighbour index, the voxels, an image feature map, or None)."""
        if isinstance(self.local, GridPatchFeatures):
            assert isinstance(self.encoder, PointGridUNet)
            points = self._check_inputs(inputs)
            c, grid = self.encoder.forward_features(points)
            return c, PointEvidence(grid, points, NeighbourIndex(points))
        if isinstance(self.local, ViewFeatures):
            assert isinstance(self.encoder, MultiViewEncoder)
            return self.encoder.forward_features(self._check_views(inputs))
        if isinstance(self.local, PixelFeatures | GridFeatures):
            assert isinstance(self.encoder, ResNet18 | PointGridUNet)
            return self.encoder.forward_features(self._check_inputs(inputs))
        c = self.encode(inputs, batch_size)
        if isinstance(self.local, VoxelFeatures):
            return c, self._check_inputs(inputs)
        return c, None

    def decoder_inputs(self, p: torch.Tensor, obs: Evidence | None) -> torch.Tensor:
        """What the decoder's first layer reads per point: xyz, then the local features if any."""
        if self.local is None:
            return p
        if obs is None:
            raise ModelInputError("this model reads its observation at every query point: pass obs")
        return torch.cat([p, self.local(p, obs)], -1)

    def decode(
        self, p: torch.Tensor, z: torch.Tensor | None, c: torch.Tensor, obs: Evidence | None = None
    ) -> torch.Tensor:
        """Query points p (B, M, 3) -> occupancy logits (B, M); ``obs`` is the observation (skip models)."""
        p = self._check_points(p)
        if c.ndim != 2 or c.shape[0] != p.shape[0]:
            raise ModelInputError(
                f"code c must have shape ({p.shape[0]}, {self.c_dim}), got {tuple(c.shape)}"
            )
        if z is not None and (z.ndim != 2 or z.shape != (p.shape[0], self.z_dim)):
            raise ModelInputError(
                f"latent z must have shape ({p.shape[0]}, {self.z_dim}), got {tuple(z.shape)}"
            )
        if self.training and p.shape[0] * p.shape[1] < 2:
            raise ModelInputError("training needs at least 2 query points in a batch (batch norm statistics)")
        return self.decoder(self.decoder_inputs(p.to(self._dtype()), obs), z, c)

    def sample_z(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
        """A latent from the prior N(0, I), or None for deterministic models."""
        if self.z_dim == 0:
            return None
        return torch.randn(batch_size, self.z_dim, generator=generator).to(self._device())

    def loss(
        self, p: torch.Tensor, occ: torch.Tensor, inputs: torch.Tensor | ViewSet | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Negative ELBO: BCE summed over the query points (as the original) + KL(q(z) || N(0, I))."""
        p = self._check_points(p)
        occ = _check_tensor(occ, "occupancy", "(B, M)")
        if occ.shape != p.shape[:2]:
            raise ModelInputError(
                f"occupancy must have shape {tuple(p.shape[:2])} (B, M), got {tuple(occ.shape)}"
            )
        if occ.numel() and not (float(occ.min()) >= 0 and float(occ.max()) <= 1):
            raise ModelInputError("occupancy targets must lie in [0, 1]")
        c, obs = self.encode_local(inputs, batch_size=p.shape[0])
        z = None
        kl = torch.zeros((), device=p.device)
        if self.latent is not None:
            mean, logstd = self.latent(p, occ, c if self.c_dim > 0 else None)
            z = mean + torch.randn_like(mean) * logstd.exp()
            kl = (0.5 * (mean**2 + (2 * logstd).exp() - 1) - logstd).sum(-1).mean()
        logits = self.decode(p, z, c, obs)
        bce = F.binary_cross_entropy_with_logits(logits, occ, reduction="none").sum(-1).mean()
        return bce + kl, {"bce": bce.item() / p.shape[1], "kl": kl.item()}

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def build_model(cfg: ModelConfig) -> OccupancyNetwork:
    """Instantiate the network described by ``cfg`` (sizes included); its kind (``backend.kinds``)
    chooses the encoder and what the decoder reads at each point."""
    from ..kinds import kind  # the kinds are built from this package's modules: import them late

    cfg.validate()
    spec = kind(cfg.kind)
    encoder = spec.encoder(cfg)
    local = spec.local_features(cfg, encoder)
    point_dim = 3 + (local.dims() if local is not None else 0)
    decoder: nn.Module
    if cfg.decoder == "cbatchnorm":
        decoder = DecoderCBatchNorm(cfg.c_dim, cfg.z_dim, cfg.hidden, cfg.n_blocks, point_dim)
    else:
        decoder = DecoderSimple(cfg.c_dim, cfg.z_dim, cfg.hidden, cfg.n_blocks)
    latent = (
        LatentPointNet(cfg.z_dim, cfg.c_dim, cfg.encoder_hidden, cfg.latent_pool_relu)
        if cfg.z_dim > 0
        else None
    )
    shape = spec.input_shape(spec.input_size(cfg)) if spec.array is not None else ()
    return OccupancyNetwork(encoder, decoder, latent, cfg.z_dim, cfg.c_dim, cfg.kind, shape, local)
