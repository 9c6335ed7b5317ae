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
from .limits import (
    MAX_MODEL_BLOCKS,
    MAX_MODEL_GRID_RES,
    MAX_MODEL_HEADER_BYTES,
    MAX_MODEL_IMAGE_SIZE,
    MAX_MODEL_NEIGHBOURS,
    MAX_MODEL_PARAMETERS,
    MAX_MODEL_WIDTH,
)
from .models import OccupancyNetwork, build_model
from .wire.constants import Kind
from .wire.model_header import (
    FORMAT,
    FORMAT_VERSION,
    BadMetadataError,
    ForeignModelError,
    FormatVersionError,
    NotSafetensorsError,
    automatic_points,
    read_model_header,
)

WEIGHTS_DIR = Path(__file__).parent / "weights"
# the sizes a model file's metadata names, and the most each may be (see ``backend.limits``)
SIZE_LIMITS = {
    "hidden": MAX_MODEL_WIDTH,
    "c_dim": MAX_MODEL_WIDTH,
    "z_dim": MAX_MODEL_WIDTH,
    "encoder_hidden": MAX_MODEL_WIDTH,
    "encoder_width": MAX_MODEL_WIDTH,
    "patch_width": MAX_MODEL_WIDTH,
    "n_blocks": MAX_MODEL_BLOCKS,
    "grid_res": MAX_MODEL_GRID_RES,
    "image_size": MAX_MODEL_IMAGE_SIZE,
    "neighbours": MAX_MODEL_NEIGHBOURS,
}
DTYPE_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2}
DTYPE_BYTES |= {"I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1}


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
    automatic_points: list[int] | None = None  # [low, high): see wire.automatic_points

    def model_config(self) -> ModelConfig:
        return _build(ModelConfig, self.config, "model")

    def provenance(self, path: Path) -> dict[str, Any]:
        """What the model in ``path`` was, for the metadata of a model made from it (fine-tuned or
        distilled); it nests, so a chain of stages names every earlier one."""
        t = self.training
        return {
            "file": path.name,
            "name": self.name,
            "run": t.get("run"),
            "steps": t.get("steps"),
            "wall_time_min": t.get("wall_time_min"),
            "n_train": t.get("data", {}).get("n_train"),
            "val_iou": self.metrics.get("val_iou"),
            "started_from": t.get("started_from"),  # the stages before it, if it was fine-tuned too
            "distilled_from": t.get("distilled_from"),  # ... or the model it learnt from (distill.py)
        }


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
    finally:
        tmp.unlink(missing_ok=True)  # left only when interrupted or failed


def read_meta(path: str | Path) -> ModelMeta:
    """Read only the metadata of a model file (cheap: no weights are loaded)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    try:
        fields = read_model_header(path)  # refuses a header over the limit before reading it
    except RecursionError:  # JSON nested beyond Python's stack
        raise CheckpointError(
            f"{path} is not a safetensors model file (its header nests too deeply)"
        ) from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
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
    for name, limit in SIZE_LIMITS.items():
        if getattr(config, name) > limit:
            raise CheckpointError(
                f"{path} has invalid metadata: model.{name} = {getattr(config, name):,}, beyond the "
                f"{limit:,} the backend takes"
            )
    if meta.kind != config.kind:
        raise CheckpointError(
            f"{path} has invalid metadata: kind {meta.kind!r} but its config says {config.kind!r}"
        )
    if not isinstance(meta.training, dict) or not isinstance(meta.metrics, dict):
        raise CheckpointError(f"{path} has invalid metadata: 'training' and 'metrics' must be objects")
    try:
        automatic_points(fields)
    except ValueError as e:
        raise CheckpointError(f"{path} has invalid metadata: {e}") from None
    if not (isinstance(meta.tau, float | int) and 0 < meta.tau < 1 and math.isfinite(meta.tau)):
        raise CheckpointError(f"{path} stores an invalid threshold tau={meta.tau!r}")
    return meta


def load_checkpoint(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[OccupancyNetwork, ModelMeta]:
    """Load a model file -> (model in eval mode on ``device``, its metadata).

    Nothing the metadata names is allocated until the file is known to hold exactly those
    tensors: the network is first built without memory (torch's meta device) and compared, size
    by size, to the tensor table in the file's header, and that table to the file's real size.
    """
    meta = read_meta(path)
    _check_sizes(Path(path), meta.model_config())
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


def _tensor_table(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensors a safetensors file declares (name -> shape), checked against the file's size."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if not 0 < length < min(MAX_MODEL_HEADER_BYTES, size - 7):
            raise CheckpointError(f"{path} is corrupt: its header declares {length:,} bytes")
        try:
            header = json.loads(f.read(length))
        except (ValueError, RecursionError) as e:
            raise CheckpointError(f"{path} is corrupt: its header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path} is corrupt: its header is not a JSON object")
    shapes: dict[str, tuple[int, ...]] = {}
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = tuple(int(n) for n in entry["shape"])
            start, stop = (int(n) for n in entry["data_offsets"])
            nbytes = math.prod(shape) * DTYPE_BYTES[entry["dtype"]]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(
                f"{path} is corrupt: tensor {name!r:.60} has an invalid entry ({e})"
            ) from None
        if min(shape, default=0) < 0 or not 0 <= start <= stop or stop - start != nbytes:
            raise CheckpointError(f"{path} is corrupt: tensor {name!r:.60} declares inconsistent sizes")
        shapes[name] = shape
        end = max(end, stop)
    if end != size - 8 - length:
        raise CheckpointError(
            f"{path} is corrupt or truncated: its header declares {end:,} bytes of tensors, "
            f"but the file holds {size - 8 - length:,}"
        )
    return shapes


def _check_sizes(path: Path, config: ModelConfig) -> None:
    """CheckpointError unless the network ``config`` names is within the limits and is exactly
    what the file holds; nothing of the network's size is allocated."""
    with torch.device("meta"):
        network = build_model(config)
    parameters = sum(p.numel() for p in network.parameters())
    if parameters > MAX_MODEL_PARAMETERS:
        raise CheckpointError(
            f"{path} describes a network of {parameters:,} parameters; the backend takes up to "
            f"{MAX_MODEL_PARAMETERS:,}"
        )
    held = _tensor_table(path)
    wanted = {
        k: tuple(v.shape) for k, v in network.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    wrong = [k for k in wanted if held.get(k) != wanted[k]] + [k for k in held if k not in wanted]
    if wrong:
        first = wrong[0]
        raise CheckpointError(
            f"{path} does not match its config: {first!r} is {held.get(first, 'missing')} in the file, "
            f"{wanted.get(first, 'unknown')} in the network its config describes"
        )


def shipped_models(weights_dir: Path = WEIGHTS_DIR) -> dict[str, Path]:
    """Name -> path of every model file in the weights folder, by name: a kind's own model
    (``pointcloud``) comes before its variants (``pointcloud-sparse``), so it is the default."""
    return {p.stem: p for p in sorted(weights_dir.glob("*.safetensors"), key=lambda p: p.stem)}
