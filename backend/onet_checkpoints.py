"""The original Occupancy Networks' published checkpoints -> this project's model files.

Mescheder et al. published their trained networks (onet_pcl2mesh, onet_voxel2mesh,
onet_img2mesh_3, the paper's legacy onet_img2mesh and onet_uncond_*) as ``torch.save`` dicts
whose ``'model'`` entry is the network's state dict (their ``im2mesh/checkpoints.py``). Each
kind here is the original's exact configuration, written as this project's ``ModelConfig``, and
every one of the original's parameters has exactly one place in the network it builds: the
original's 1x1 convolutions are this project's linear layers, its numbered modules are list
items. The conversion is strict, so a file that is not exactly that network fails with the
parameter's name instead of giving a model that quietly computes something else.

The file is read with ``torch.load(weights_only=True)``: tensors and plain values only, so no
code in it runs. The weights are kept in float32, as published.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoint import ModelMeta, save_weights
from .config import ModelConfig
from .models import OccupancyNetwork, build_model

ORIGINAL_TAU = 0.2  # test.threshold of every published configuration

# configs/{pointcloud,voxels,img,unconditional}/onet.yaml of the original, in this project's terms
ORIGINAL_MODELS: dict[str, ModelConfig] = {
    # pointnet_resnet (hidden_dim 512) -> c 512; cbatchnorm decoder, hidden 256
    "pointcloud": ModelConfig(kind="pointcloud", hidden=256, c_dim=512, encoder_hidden=512),
    # voxel_simple (32 to 512 channels) -> c 256, reading the grid as 0/1
    "voxels": ModelConfig(kind="voxels", hidden=256, c_dim=256, encoder_width=32, voxel_offset=0.0),
    # resnet18 (64 channels first, ImageNet statistics inside) + Linear(512 -> 256), 224 px input
    "image": ModelConfig(kind="image", hidden=256, c_dim=256, encoder_width=64, image_size=224),
    # a VAE: the `simple` decoder (hidden 128) and latent encoder, z 128, no observation
    "unconditional": ModelConfig(
        kind="unconditional",
        decoder="simple",
        hidden=128,
        c_dim=0,
        z_dim=128,
        encoder_hidden=128,
        latent_pool_relu=False,
    ),
}
ORIGINAL_KINDS = tuple(ORIGINAL_MODELS)

# how the original observed its training shapes, where the engine or evaluation reads it
ORIGINAL_DATA: dict[str, dict[str, Any]] = {
    "pointcloud": {"n_points": 300, "noise": 0.005},  # pointcloud_n, pointcloud_noise
    "voxels": {"voxel_res": 32},
    "image": {"image_size": 224, "views": 24},  # img_choy2016: 24 views per object
    "unconditional": {},
}
BOOKKEEPING = "num_batches_tracked"  # batch-norm counters: optional, not needed for inference


class OriginalCheckpointError(ValueError):
    """The file is not one of the original's checkpoints of the kind asked for; the message says why."""


@dataclass(frozen=True)
class Slot:
    """Where one of the original's parameters goes: our key, and whether the original stores it as
    a 1x1 Conv1d weight (a trailing axis of size 1 that our linear layer does not have)."""

    ours: str
    shape: tuple[int, ...]
    conv1d: bool

    @property
    def original_shape(self) -> tuple[int, ...]:
        return (*self.shape, 1) if self.conv1d else self.shape


def _decoder_name(rest: str, cfg: ModelConfig, legacy: bool) -> tuple[str, bool]:
    rest = re.sub(r"^blocks\.(\d+)\.", r"block\1.", rest)
    if cfg.decoder == "simple":
        return rest, False
    # conditional batch norm: gamma/beta are Conv1d (conv_*) or, in the legacy layout, Linear (fc_*)
    rest, cbn = re.subn(r"(^|\.)(gamma|beta)\.", rf"\1{'fc' if legacy else 'conv'}_\2.", rest)
    return rest, rest.endswith(".weight") and not (cbn and legacy)


def _encoder_name(rest: str, kind: str) -> str:
    if kind == "pointcloud":
        return re.sub(r"^blocks\.(\d+)\.", r"block_\1.", rest)
    if kind == "voxels":
        return re.sub(r"^convs\.(\d+)\.", r"conv_\1.", rest)
    # image: torchvision's ResNet-18 under `features`, then the encoder's own fc
    rest = re.sub(r"^stem\.0\.", "features.conv1.", rest)
    rest = re.sub(r"^stem\.1\.", "features.bn1.", rest)
    return re.sub(r"^stages\.(\d+)\.", lambda m: f"features.layer{int(m[1]) + 1}.", rest)


# this project's LatentPointNet names its occupancy input fc_occ and counts its layers from 0 after it
LATENT_NAMES = {"fc_occ": "fc_0", "fc_0": "fc_1", "fc_1": "fc_2", "fc_2": "fc_3"}


def original_name(ours: str, kind: str, legacy: bool = False) -> tuple[str, bool]:
    """Our state-dict key -> (the original's key, whether it is a 1x1 Conv1d weight there)."""
    cfg = ORIGINAL_MODELS[kind]
    part, rest = ours.split(".", 1)
    if part == "decoder":
        name, conv1d = _decoder_name(rest, cfg, legacy)
        return f"decoder.{name}", conv1d
    if part == "encoder":
        return f"encoder.{_encoder_name(rest, kind)}", False
    if part == "latent":
        layer, tail = rest.split(".", 1)
        return f"encoder_latent.{LATENT_NAMES.get(layer, layer)}.{tail}", False
    raise KeyError(ours)


def layout(kind: str, legacy: bool = False) -> dict[str, Slot]:
    """The original's key -> its slot in our network, for every parameter and buffer of ``kind``."""
    with torch.device("meta"):  # shapes only: nothing is allocated
        state = build_model(ORIGINAL_MODELS[kind]).state_dict()
    slots = {}
    for ours, value in state.items():
        name, conv1d = original_name(ours, kind, legacy)
        slots[name] = Slot(ours, tuple(value.shape), conv1d)
    return slots


def _is_legacy(state: Mapping[str, Any]) -> bool:
    """The paper's first image model (onet_img2mesh) has Linear conditional batch norms (fc_gamma)."""
    return any(re.search(r"\.fc_(gamma|beta)\.", k) for k in state)


def _names(keys: list[str]) -> str:
    shown = ", ".join(f"'{k}'" for k in keys[:3])
    return shown + (f" (and {len(keys) - 3} more)" if len(keys) > 3 else "")


def _matching_kind(keys: set[str], asked: str) -> str | None:
    """Another kind whose parameters are exactly ``keys``, to suggest when the wrong one was asked for."""
    for other in ORIGINAL_KINDS:
        for legacy in (False, True):
            if other != asked and keys == {k for k in layout(other, legacy) if not k.endswith(BOOKKEEPING)}:
                return other
    return None


def convert_state(state: Mapping[str, Any], kind: str) -> tuple[OccupancyNetwork, bool]:
    """The original's state dict -> (our network in eval mode, whether it was the legacy layout).

    OriginalCheckpointError names the first parameters that are missing, unexpected, not tensors,
    of the wrong shape or not finite.
    """
    legacy = _is_legacy(state)
    slots = layout(kind, legacy)
    keys = set(state)
    required = {k for k in slots if not k.endswith(BOOKKEEPING)}
    unexpected, missing = sorted(keys - set(slots)), sorted(required - keys)
    if unexpected or missing:
        problems = []
        if unexpected:
            problems.append(f"unexpected parameter(s) {_names(unexpected)}")
        if missing:
            problems.append(f"missing parameter(s) {_names(missing)}")
        other = _matching_kind(keys - {k for k in keys if k.endswith(BOOKKEEPING)}, kind)
        hint = f"; it is the original's {other} model: use --kind {other}" if other else ""
        raise OriginalCheckpointError(f"not the original's {kind} model: {'; '.join(problems)}{hint}")
    model = build_model(ORIGINAL_MODELS[kind])
    ours = model.state_dict()
    for name in sorted(keys):
        value, slot = state[name], slots[name]
        if not isinstance(value, torch.Tensor):
            raise OriginalCheckpointError(f"parameter '{name}' is a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != slot.original_shape:
            raise OriginalCheckpointError(
                f"parameter '{name}' has shape {tuple(value.shape)}, the original's {kind} model has "
                f"{slot.original_shape}"
            )
        if name.endswith(BOOKKEEPING):
            if value.is_floating_point() or value.is_complex():
                raise OriginalCheckpointError(f"parameter '{name}' must hold an integer count")
            ours[slot.ours] = value.to(torch.long)
            continue
        if not value.is_floating_point():
            raise OriginalCheckpointError(
                f"parameter '{name}' holds {value.dtype}, not floating-point values"
            )
        if not bool(torch.isfinite(value).all()):
            raise OriginalCheckpointError(f"parameter '{name}' holds NaN or infinite values")
        ours[slot.ours] = value.detach().to("cpu", torch.float32).reshape(slot.shape)
    model.load_state_dict(ours, strict=True)
    return model.eval(), legacy


def read_original(path: Path) -> dict[str, Any]:
    """The file's top-level dict, loaded with ``weights_only=True`` (no code from the file runs)."""
    if not path.is_file():
        raise OriginalCheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols: not the user's concern
            warnings.simplefilter("ignore")
            top = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds on foreign bytes
        message = str(e)
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", message)
        if unsafe:
            raise OriginalCheckpointError(
                f"{path} holds Python objects, not only tensors ({unsafe[1]}); refused, since loading "
                "it would run code from the file"
            ) from None
        reason = re.search(r"WeightsUnpickler error: \s*(.+?)\s*$", message, re.MULTILINE)
        detail = reason[1] if reason else (message.strip().splitlines() or [type(e).__name__])[0]
        raise OriginalCheckpointError(f"{path} is not a PyTorch checkpoint ({detail})") from None
    if not isinstance(top, dict):
        raise OriginalCheckpointError(f"{path} holds a {type(top).__name__}, not a checkpoint dict")
    if "model" not in top:
        found = ", ".join(repr(k) for k in list(top)[:5]) or "nothing"
        raise OriginalCheckpointError(
            f"{path} has no 'model' entry, where the original keeps its parameters (found {found})"
        )
    state = top["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise OriginalCheckpointError(
            f"{path}: its 'model' entry is not a state dict (parameter names to tensors)"
        )
    return top


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_checkpoint(source: Path, kind: str, output: Path) -> tuple[OccupancyNetwork, ModelMeta]:
    """Convert the original's checkpoint ``source`` of ``kind`` into the model file ``output``.

    Nothing is written unless the whole conversion succeeds (and then atomically).
    """
    if kind not in ORIGINAL_MODELS:
        raise OriginalCheckpointError(f"unknown kind {kind!r}; one of {', '.join(ORIGINAL_KINDS)}")
    if output.suffix != ".safetensors":
        raise OriginalCheckpointError(f"the output must be a .safetensors file, got {output}")
    if not output.parent.is_dir():
        raise OriginalCheckpointError(f"the output's folder does not exist: {output.parent}")
    if output.exists() and source.exists() and output.resolve() == source.resolve():
        raise OriginalCheckpointError("the output would overwrite the checkpoint; choose another file")
    top = read_original(source)
    model, legacy = convert_state(top["model"], kind)
    cfg = ORIGINAL_MODELS[kind]
    training: dict[str, Any] = {
        "origin": "Occupancy Networks (Mescheder et al., CVPR 2019), a published checkpoint",
        "imported_from": source.name,
        "sha256": _sha256(source),
        "decoder_layout": "legacy" if legacy else "current",
        "data": dict(ORIGINAL_DATA[kind]),
    }
    for key in ("it", "epoch_it"):  # the original's training counters, when the file keeps them
        if isinstance(top.get(key), int):
            training["steps" if key == "it" else "epochs"] = top[key]
    meta = ModelMeta(output.stem, cfg.kind, ORIGINAL_TAU, asdict(cfg), {}, training)
    try:
        save_weights(output, model, meta, half=False)  # float32, exactly as published
    except OSError as e:
        raise OriginalCheckpointError(f"cannot write {output}: {e}") from None
    return model, meta
