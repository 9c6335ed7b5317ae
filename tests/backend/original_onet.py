"""The original Occupancy Networks as the tests know it, independently of the converter.

- ``original_state(kind)``: a state dict with the parameter names and shapes of the original's
  published networks (im2mesh/onet/models/decoder.py, encoder_latent.py, im2mesh/encoder/*.py,
  torchvision's ResNet-18), filled with random values of a realistic scale.
- ``write_original(path, kind)``: that state as the original saves it: a ``torch.save`` dict with
  the parameters under ``'model'`` beside the training counters and the optimizer's state.
- ``OriginalForward``: the original's forward pass in plain functional torch, reading that state
  dict by the original's names: what a converted model must compute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

KINDS = ("pointcloud", "voxels", "image", "image-legacy", "unconditional")
CONDITIONED = {"pointcloud": 512, "voxels": 256, "image": 256, "image-legacy": 256}  # c_dim per model
HIDDEN_CBN, HIDDEN_SIMPLE, Z_DIM = 256, 128, 128
RESIDUAL_GAIN = 0.3  # residual branches smaller than their input, as in a trained network: bounded logits
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

Shapes = Iterator[tuple[str, tuple[int, ...]]]


def _linear(name: str, n_out: int, n_in: int, bias: bool = True) -> Shapes:
    yield f"{name}.weight", (n_out, n_in)
    if bias:
        yield f"{name}.bias", (n_out,)


def _conv1x1(name: str, n_out: int, n_in: int) -> Shapes:  # the original's Conv1d(n_in, n_out, 1)
    yield f"{name}.weight", (n_out, n_in, 1)
    yield f"{name}.bias", (n_out,)


def _batch_norm(name: str, n: int, affine: bool) -> Shapes:
    if affine:
        yield f"{name}.weight", (n,)
        yield f"{name}.bias", (n,)
    yield f"{name}.running_mean", (n,)
    yield f"{name}.running_var", (n,)
    yield f"{name}.num_batches_tracked", ()


def _cbn(name: str, c_dim: int, n: int, legacy: bool) -> Shapes:
    if legacy:  # CBatchNorm1d_legacy: Linear
        yield from _linear(f"{name}.fc_gamma", n, c_dim)
        yield from _linear(f"{name}.fc_beta", n, c_dim)
    else:  # CBatchNorm1d: Conv1d
        yield from _conv1x1(f"{name}.conv_gamma", n, c_dim)
        yield from _conv1x1(f"{name}.conv_beta", n, c_dim)
    yield from _batch_norm(f"{name}.bn", n, affine=False)


def decoder_cbatchnorm(c_dim: int, legacy: bool) -> Shapes:
    h = HIDDEN_CBN
    yield from _conv1x1("decoder.fc_p", h, 3)
    for i in range(5):
        yield from _cbn(f"decoder.block{i}.bn_0", c_dim, h, legacy)
        yield from _cbn(f"decoder.block{i}.bn_1", c_dim, h, legacy)
        yield from _conv1x1(f"decoder.block{i}.fc_0", h, h)
        yield from _conv1x1(f"decoder.block{i}.fc_1", h, h)
    yield from _cbn("decoder.bn", c_dim, h, legacy)
    yield from _conv1x1("decoder.fc_out", 1, h)


def _resnet_block_fc(name: str, n_in: int, n_out: int) -> Shapes:
    n_h = min(n_in, n_out)
    yield from _linear(f"{name}.fc_0", n_h, n_in)
    yield from _linear(f"{name}.fc_1", n_out, n_h)
    if n_in != n_out:
        yield from _linear(f"{name}.shortcut", n_out, n_in, bias=False)


def decoder_simple() -> Shapes:
    h = HIDDEN_SIMPLE
    yield from _linear("decoder.fc_p", h, 3)
    yield from _linear("decoder.fc_z", h, Z_DIM)
    for i in range(5):
        yield from _resnet_block_fc(f"decoder.block{i}", h, h)
    yield from _linear("decoder.fc_out", 1, h)


def encoder_latent() -> Shapes:
    yield from _linear("encoder_latent.fc_pos", 128, 3)
    yield from _linear("encoder_latent.fc_0", 128, 1)
    yield from _linear("encoder_latent.fc_1", 128, 128)
    yield from _linear("encoder_latent.fc_2", 128, 256)
    yield from _linear("encoder_latent.fc_3", 128, 256)
    yield from _linear("encoder_latent.fc_mean", Z_DIM, 128)
    yield from _linear("encoder_latent.fc_logstd", Z_DIM, 128)


def resnet_pointnet(c_dim: int = 512, hidden: int = 512) -> Shapes:
    yield from _linear("encoder.fc_pos", 2 * hidden, 3)
    for i in range(5):
        yield from _resnet_block_fc(f"encoder.block_{i}", 2 * hidden, hidden)
    yield from _linear("encoder.fc_c", c_dim, hidden)


def voxel_encoder(c_dim: int = 256) -> Shapes:
    channels = [1, 32, 64, 128, 256, 512]
    names = ["conv_in", "conv_0", "conv_1", "conv_2", "conv_3"]
    for name, n_in, n_out in zip(names, channels, channels[1:], strict=False):
        yield f"encoder.{name}.weight", (n_out, n_in, 3, 3, 3)
        yield f"encoder.{name}.bias", (n_out,)
    yield from _linear("encoder.fc", c_dim, 512 * 8)


def resnet18(c_dim: int = 256) -> Shapes:
    f = "encoder.features"
    yield f"{f}.conv1.weight", (64, 3, 7, 7)
    yield from _batch_norm(f"{f}.bn1", 64, affine=True)
    n_in = 64
    for layer, n in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            name = f"{f}.layer{layer}.{b}"
            yield f"{name}.conv1.weight", (n, n_in if b == 0 else n, 3, 3)
            yield from _batch_norm(f"{name}.bn1", n, affine=True)
            yield f"{name}.conv2.weight", (n, n, 3, 3)
            yield from _batch_norm(f"{name}.bn2", n, affine=True)
            if b == 0 and n_in != n:
                yield f"{name}.downsample.0.weight", (n, n_in, 1, 1)
                yield from _batch_norm(f"{name}.downsample.1", n, affine=True)
        n_in = n
    yield from _linear("encoder.fc", c_dim, 512)


def original_shapes(kind: str) -> dict[str, tuple[int, ...]]:
    """The original's parameter names and shapes for ``kind`` (one of KINDS)."""
    if kind == "unconditional":
        parts = [decoder_simple(), encoder_latent()]
    else:
        encoder = {"pointcloud": resnet_pointnet, "voxels": voxel_encoder}.get(kind, resnet18)
        parts = [decoder_cbatchnorm(CONDITIONED[kind], kind == "image-legacy"), encoder()]
    return {name: shape for part in parts for name, shape in part}


def original_state(kind: str, seed: int = 0) -> dict[str, Tensor]:
    """Random values of a trained network's scale: weights ~ N(0, 1/fan_in), batch-norm statistics
    away from the identity, conditional batch norm's gamma around 1, so every path matters."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, Tensor] = {}
    for name, shape in original_shapes(kind).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        elif name.endswith("running_mean"):
            state[name] = 0.2 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # biases and batch-norm affine parameters
            base = 1.0 if name.endswith(("gamma.bias", "bn1.weight", "downsample.1.weight")) else 0.0
            base = RESIDUAL_GAIN if name.endswith("bn2.weight") else base
            state[name] = base + 0.1 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            gain = RESIDUAL_GAIN if re.search(r"block_?\d\.fc_1\.weight$", name) else 1.0
            state[name] = gain * torch.randn(shape, generator=gen) / fan_in**0.5
    return state


def write_original(
    path: Path, kind: str, state: dict[str, Tensor] | None = None, legacy_format: bool = False
) -> Path:
    """Save like the original's CheckpointIO: the module dicts and scalars in one ``torch.save``.
    ``legacy_format`` writes PyTorch's pre-1.6 serialisation, as the 2019 files were."""
    state = original_state(kind) if state is None else state
    param = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([param], lr=1e-4)
    param.sum().backward()
    optimizer.step()
    top = {
        "model": state,
        "optimizer": optimizer.state_dict(),
        "epoch_it": 40,
        "it": 123000,
        "loss_val_best": -0.6,
    }
    torch.save(top, path, _use_new_zipfile_serialization=not legacy_format)
    return path


class OriginalForward:
    """The original's forward pass (eval mode) over its own state dict, in functional torch."""

    def __init__(self, state: dict[str, Tensor], legacy: bool = False) -> None:
        self.s = state
        self.legacy = legacy

    def linear(self, name: str, x: Tensor) -> Tensor:
        return F.linear(x, self.s[f"{name}.weight"], self.s.get(f"{name}.bias"))

    def conv1x1(self, name: str, x: Tensor) -> Tensor:  # x: (B, C, T)
        return F.conv1d(x, self.s[f"{name}.weight"], self.s[f"{name}.bias"])

    def batch_norm(self, name: str, x: Tensor) -> Tensor:
        s = self.s
        return F.batch_norm(
            x,
            s[f"{name}.running_mean"],
            s[f"{name}.running_var"],
            s.get(f"{name}.weight"),
            s.get(f"{name}.bias"),
        )

    # ---------------------------------------------------------------- decoders
    def cbn(self, name: str, x: Tensor, c: Tensor) -> Tensor:
        if self.legacy:
            gamma = self.linear(f"{name}.fc_gamma", c).unsqueeze(2)
            beta = self.linear(f"{name}.fc_beta", c).unsqueeze(2)
        else:
            gamma = self.conv1x1(f"{name}.conv_gamma", c.unsqueeze(2))
            beta = self.conv1x1(f"{name}.conv_beta", c.unsqueeze(2))
        return gamma * self.batch_norm(f"{name}.bn", x) + beta

    def decoder_cbatchnorm(self, p: Tensor, c: Tensor) -> Tensor:
        net = self.conv1x1("decoder.fc_p", p.transpose(1, 2))
        for i in range(5):
            b = f"decoder.block{i}"
            h = self.conv1x1(f"{b}.fc_0", F.relu(self.cbn(f"{b}.bn_0", net, c)))
            net = net + self.conv1x1(f"{b}.fc_1", F.relu(self.cbn(f"{b}.bn_1", h, c)))
        return self.conv1x1("decoder.fc_out", F.relu(self.cbn("decoder.bn", net, c))).squeeze(1)

    def resnet_block_fc(self, name: str, x: Tensor) -> Tensor:
        h = self.linear(f"{name}.fc_0", F.relu(x))
        dx = self.linear(f"{name}.fc_1", F.relu(h))
        shortcut = self.linear(f"{name}.shortcut", x) if f"{name}.shortcut.weight" in self.s else x
        return shortcut + dx

    def decoder_simple(self, p: Tensor, z: Tensor) -> Tensor:
        net = self.linear("decoder.fc_p", p) + self.linear("decoder.fc_z", z).unsqueeze(1)
        for i in range(5):
            net = self.resnet_block_fc(f"decoder.block{i}", net)
        return self.linear("decoder.fc_out", F.relu(net)).squeeze(-1)

    # ---------------------------------------------------------------- encoders
    @staticmethod
    def _with_pool(net: Tensor) -> Tensor:
        return torch.cat([net, net.max(dim=1, keepdim=True).values.expand_as(net)], dim=2)

    def resnet_pointnet(self, points: Tensor) -> Tensor:
        net = self.linear("encoder.fc_pos", points)
        for i in range(5):
            net = self.resnet_block_fc(f"encoder.block_{i}", net)
            if i < 4:
                net = self._with_pool(net)
        return self.linear("encoder.fc_c", F.relu(net.max(dim=1).values))

    def voxel_encoder(self, voxels: Tensor) -> Tensor:
        s = self.s
        net = F.conv3d(voxels.unsqueeze(1), s["encoder.conv_in.weight"], s["encoder.conv_in.bias"], padding=1)
        for i in range(4):
            w, b = s[f"encoder.conv_{i}.weight"], s[f"encoder.conv_{i}.bias"]
            net = F.conv3d(F.relu(net), w, b, stride=2, padding=1)
        return self.linear("encoder.fc", F.relu(net.reshape(len(net), -1)))

    def resnet18(self, images: Tensor) -> Tensor:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        f = "encoder.features"
        x = F.conv2d((images - mean) / std, self.s[f"{f}.conv1.weight"], stride=2, padding=3)
        x = F.max_pool2d(F.relu(self.batch_norm(f"{f}.bn1", x)), 3, 2, 1)
        for layer in range(1, 5):
            for b in range(2):
                n = f"{f}.layer{layer}.{b}"
                stride = 2 if layer > 1 and b == 0 else 1
                out = F.conv2d(x, self.s[f"{n}.conv1.weight"], stride=stride, padding=1)
                out = F.relu(self.batch_norm(f"{n}.bn1", out))
                out = self.batch_norm(f"{n}.bn2", F.conv2d(out, self.s[f"{n}.conv2.weight"], padding=1))
                if f"{n}.downsample.0.weight" in self.s:
                    x = self.batch_norm(
                        f"{n}.downsample.1", F.conv2d(x, self.s[f"{n}.downsample.0.weight"], stride=stride)
                    )
                x = F.relu(out + x)
        return self.linear("encoder.fc", x.mean(dim=(2, 3)))

    def encoder_latent(self, p: Tensor, occ: Tensor) -> tuple[Tensor, Tensor]:
        e = "encoder_latent"
        net = self.linear(f"{e}.fc_0", occ.unsqueeze(-1)) + self.linear(f"{e}.fc_pos", p)
        net = self._with_pool(self.linear(f"{e}.fc_1", F.relu(net)))
        net = self._with_pool(self.linear(f"{e}.fc_2", F.relu(net)))
        net = self.linear(f"{e}.fc_3", F.relu(net)).max(dim=1).values
        return self.linear(f"{e}.fc_mean", net), self.linear(f"{e}.fc_logstd", net)

    def logits(self, kind: str, p: Tensor, inputs: Tensor) -> Tensor:
        """Occupancy logits at p (B, M, 3); ``inputs`` is the observation, or z for the VAE."""
        if kind == "unconditional":
            return self.decoder_simple(p, inputs)
        encode = {"pointcloud": self.resnet_pointnet, "voxels": self.voxel_encoder}.get(kind, self.resnet18)
        return self.decoder_cbatchnorm(p, encode(inputs))
