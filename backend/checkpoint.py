"""Safe model files: safetensors weights with the config, tau and metrics stored as metadata.

Nothing here unpickles arbitrary objects. Shipped weights are stored in float16 to
halve their size and are loaded back as float32. Training state (optimizer, step)
lives in a separate file loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ConfigError, ModelConfig, _build
from .models import OccupancyNetwork, build_model
from .wire.constants import Kind
from .wire.model_header import (
    FORMAT,
    FORMAT_VERSION,
    BadMetadataError,
    ForeignModelError,
    FormatVersionError,
    NotSafetensorsError,
    read_model_header,
)

WEIGHTS_DIR = Path(__file__).parent / "weights"


class CheckpointError(ValueError):
    """A model file is missing, corrupt, foreign or from an incompatible version."""


@dataclass
class ModelMeta:
    name: str
    kind: Kind  # checked against the config's when read
    tau: float
    config: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)  # steps, wall time, data

    def model_config(self) -> ModelConfig:
        return _build(ModelConfig, self.config, "model")


def save_weights(path: str | Path, model: OccupancyNetwork, meta: ModelMeta, half: bool = True) -> None:
    """Write the model's weights and ``meta`` to a .safetensors file (atomically)."""
    path = Path(path)
    tensors = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue  # bookkeeping only; not needed for inference
        v = v.detach().cpu().contiguous()
        tensors[k] = v.half() if half and v.is_floating_point() else v
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "meta": json.dumps(asdict(meta))}
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=header)
        os.chmod(tmp, 0o644)  # a model file is for everyone to read, like any other installed file
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves neither a partial file nor the old one changed
        raise


def read_meta(path: str | Path) -> ModelMeta:
    """Read only the metadata of a model file (cheap: no weights are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        fields = read_model_header(path)
    except NotSafetensorsError as e:
        raise CheckpointError(f"{path} is not a safetensors model file ({e})") from None
    except ForeignModelError:
        raise CheckpointError(
            f"{path} is not an Occupancy Reconstruct model (no '{FORMAT}' format tag)"
        ) from None
    except FormatVersionError as e:
        raise CheckpointError(f"{path} has {e}") from None
    except BadMetadataError as e:
        raise CheckpointError(f"{path} has invalid metadata: {e}") from None
    try:
        meta = ModelMeta(**fields)
        config = meta.model_config()
        config.validate()
    except (KeyError, TypeError, ValueError, ConfigError) as e:
        raise CheckpointError(f"{path} has invalid metadata: {e}") from None
    if meta.kind != config.kind:
        raise CheckpointError(
            f"{path} has invalid metadata: kind {meta.kind!r} but its config says {config.kind!r}"
        )
    if not isinstance(meta.training, dict) or not isinstance(meta.metrics, dict):
        raise CheckpointError(f"{path} has invalid metadata: 'training' and 'metrics' must be objects")
    if not (isinstance(meta.tau, float | int) and 0 < meta.tau < 1 and math.isfinite(meta.tau)):
        raise CheckpointError(f"{path} stores an invalid threshold tau={meta.tau!r}")
    return meta


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OccupancyNetwork, ModelMeta]:
    """Load a model file -> (model in eval mode on ``device``, its metadata)."""
    meta = read_meta(path)
    model = build_model(meta.model_config())
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is corrupt: {e}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path} is corrupt: NaN or infinite values in {', '.join(bad[:5])}")
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        first = str(e).strip().splitlines()[-1].strip()
        raise CheckpointError(f"{path} does not match its config: {first}") from None
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.to(device).eval(), meta


def shipped_models(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Name -> path of every model file in the weights folder."""
    return {p.stem: p for p in sorted(weights_dir.glob("*.safetensors"))}
