"""Configuration dataclasses for models, data and training, loaded from TOML files.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Kind = Literal["pointcloud", "voxels", "image", "unconditional"]
KINDS: tuple[str, ...] = ("pointcloud", "voxels", "image", "unconditional")


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key."""


@dataclass
class ModelConfig:
    kind: str = "pointcloud"
    decoder: str = "cbatchnorm"  # "cbatchnorm" (conditional tasks) or "simple" (VAE)
    hidden: int = 128  # decoder width
    n_blocks: int = 5  # decoder ResNet blocks
    c_dim: int = 128  # size of the code c (0 = unconditional)
    z_dim: int = 0  # size of the latent z (0 = deterministic)
    encoder_hidden: int = 128  # PointNet width / latent encoder width
    encoder_width: int = 32  # first-stage channels of the voxel CNN or the ResNet-18
    image_size: int = 64  # input image side for the image model

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.decoder not in ("cbatchnorm", "simple"):
            raise ConfigError(f"model.decoder must be 'cbatchnorm' or 'simple', got {self.decoder!r}")
        for name in ("hidden", "n_blocks", "encoder_hidden", "encoder_width", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        if self.kind == "unconditional":
            if self.c_dim != 0 or self.z_dim <= 0:
                raise ConfigError("an unconditional model needs c_dim = 0 and z_dim > 0")
            if self.decoder != "simple":
                raise ConfigError("an unconditional model needs decoder = 'simple'")
        elif self.c_dim <= 0:
            raise ConfigError(f"a {self.kind} model needs c_dim > 0")
        if self.decoder == "cbatchnorm" and self.c_dim <= 0:
            raise ConfigError("decoder 'cbatchnorm' needs c_dim > 0")


@dataclass
class DataConfig:
    source: str = "procedural"  # "procedural" or a folder made by `prepare-meshes`
    n_train: int = 4096  # shapes in the training pool
    n_val: int = 128
    seed: int = 0  # base seed: shape i of a split is generated from (seed, split, i)
    surface_points: int = 10000  # surface samples stored per shape
    n_points: int = 300  # observed points (point cloud input)
    noise: float = 0.005  # std of the Gaussian noise on observed points
    query_points: int = 2048  # query points per shape per step
    near_surface_ratio: float = 0.5  # share of query points near the surface (0 = original, uniform only)
    near_surface_sigma: float = 0.05
    padding: float = 0.1  # queries are uniform in [-(1+padding)/2, (1+padding)/2]^3
    voxel_res: int = 32
    image_size: int = 64
    views: int = 2  # rendered views per shape (image model)


@dataclass
class TrainConfig:
    out_dir: str = "runs/pointcloud"
    batch_size: int = 32
    lr: float = 5e-4
    lr_final: float = 5e-5  # cosine decay to this at max_steps
    max_steps: int = 100_000
    weight_decay: float = 0.0
    eval_every: int = 500
    checkpoint_every: int = 100
    val_points: int = 20000  # uniform points per validation shape for IoU
    threads: int = 0  # torch threads (0 = torch default)
    seed: int = 0


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T = TypeVar("T")


def _build(cls: type[T], values: dict[str, Any], section: str) -> T:
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] must be a table, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) in [{section}]: {', '.join(unknown)}; known: {', '.join(known)}")
    out = {}
    for key, value in values.items():
        default = getattr(cls(), key)
        if isinstance(default, bool) or not isinstance(default, int | float | str):
            out[key] = value
        elif isinstance(default, float) and isinstance(value, int | float) and not isinstance(value, bool):
            out[key] = float(value)
        elif type(value) is not type(default):
            raise ConfigError(f"[{section}] {key} must be {type(default).__name__}, got {value!r}")
        else:
            out[key] = value
    return cls(**out)


def config_from_dict(d: dict[str, Any]) -> Config:
    unknown = sorted(set(d) - {"model", "data", "train"})
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(unknown)}; known: model, data, train")
    cfg = Config(
        model=_build(ModelConfig, d.get("model", {}), "model"),
        data=_build(DataConfig, d.get("data", {}), "data"),
        train=_build(TrainConfig, d.get("train", {}), "train"),
    )
    cfg.model.validate()
    return cfg


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return config_from_dict(d)
