"""Configuration dataclasses for models, data and training, loaded from TOML files.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .wire.constants import MODEL_KINDS as KINDS
from .wire.constants import VOXEL_RES, Kind
from .wire.views import VIEW_SETS

CAMERA_STYLES = ("fixed", "random", "outside", *VIEW_SETS)  # data.cameras (data/views.py)


class ConfigError(ValueError):
    """A configuration is invalid; the message names the key."""


@dataclass
class ModelConfig:
    kind: Kind = "pointcloud"
    decoder: str = "cbatchnorm"  # "cbatchnorm" (conditional tasks) or "simple" (VAE)
    hidden: int = 128  # decoder width
    n_blocks: int = 5  # decoder ResNet blocks
    c_dim: int = 128  # size of the code c (0 = unconditional)
    z_dim: int = 0  # size of the latent z (0 = deterministic)
    encoder_hidden: int = 128  # PointNet width / latent encoder width
    encoder_width: int = 32  # first-stage channels of the voxel CNN, the ResNet-18 or the point U-Net
    grid_res: int = 32  # the point U-Net's grid (point clouds with local features)
    image_size: int = 64  # input image side for the image model
    # the decoder also reads the observation at each query point (a feature grid made from the
    # points, the voxels, or pixel-aligned image features; see models/local.py); off: the
    # original's global code
    local_features: bool = False
    # image models with local features: how many ResNet stages the pixel-aligned features read
    # (1: the first stage's fine features only; more adds the coarser, wider-context ones)
    pixel_stages: int = 1
    # point-cloud models with local features: the decoder also reads a patch of the k nearest
    # input points at each query (models/patches.py), detail finer than the grid's cells; 0: off
    neighbours: int = 0
    patch_width: int = 32  # channels of the patch features
    # the voxel CNN reads occupancy minus this (this project's models centre it; the original
    # Occupancy Networks feed 0/1 and read 0 here: an imported model keeps its own input)
    voxel_offset: float = 0.5
    # the VAE's latent encoder applies a ReLU to its pooled feature before the mean and log-std
    # heads (this project's models; the original's has none, so an imported one reads false)
    latent_pool_relu: bool = True

    def validate(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"model.kind must be one of {KINDS}, got {self.kind!r}")
        if self.decoder not in ("cbatchnorm", "simple"):
            raise ConfigError(f"model.decoder must be 'cbatchnorm' or 'simple', got {self.decoder!r}")
        for name in ("hidden", "n_blocks", "encoder_hidden", "encoder_width", "image_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        _finite(self.voxel_offset, "model.voxel_offset")
        if self.grid_res <= 0 or self.grid_res % 8:
            raise ConfigError(f"model.grid_res must be a positive multiple of 8, got {self.grid_res}")
        if self.z_dim < 0 or self.c_dim < 0:
            raise ConfigError(f"model.z_dim and model.c_dim must be >= 0, got {self.z_dim} and {self.c_dim}")
        if self.local_features and self.kind == "unconditional":
            raise ConfigError("model.local_features needs an observation; an unconditional model has none")
        if self.local_features and self.decoder != "cbatchnorm":
            raise ConfigError("model.local_features needs decoder = 'cbatchnorm'")
        if not 1 <= self.pixel_stages <= 4:
            raise ConfigError(
                f"model.pixel_stages must be 1 to 4 (ResNet-18 stages), got {self.pixel_stages}"
            )
        if self.kind == "views" and not self.local_features:
            raise ConfigError("a views model reads every view at each point: it needs local_features = true")
        if self.pixel_stages > 1 and not (self.kind in ("image", "views") and self.local_features):
            raise ConfigError(
                "model.pixel_stages > 1 needs kind = 'image' or 'views' and local_features = true"
            )
        if self.neighbours < 0 or self.patch_width <= 0:
            raise ConfigError(
                f"model.neighbours must be >= 0 and model.patch_width positive, "
                f"got {self.neighbours} and {self.patch_width}"
            )
        if self.neighbours > 0 and not (self.kind == "pointcloud" and self.local_features):
            raise ConfigError("model.neighbours > 0 needs kind = 'pointcloud' and local_features = true")
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
    # "procedural", a folder made by `prepare-meshes`, or a dataset in the original's layout
    # (class folders of objects with points.npz, ...; its settings become the defaults: see
    # data/onet_layout.py)
    source: str = "procedural"
    classes: list[str] = field(default_factory=list)  # the original's layout: these classes (all)
    n_train: int = 4096  # shapes in the training pool
    n_val: int = 128
    seed: int = 0  # base seed: shape i of a split is generated from (seed, split, i)
    surface_points: int = 10000  # surface samples stored per shape
    n_points: int = 300  # observed points (point cloud input)
    noise: float = 0.005  # std of the Gaussian noise on observed points
    # scans of any density (data/scans.py), off at their defaults: with n_points_max > n_points
    # each batch observes a number of points drawn log-uniformly from [n_points, n_points_max]
    n_points_max: int = 0
    noise_max: float = 0.0  # > noise: each shape's noise std is uniform in [noise, noise_max]
    outliers: float = 0.0  # each shape replaces a share uniform in [0, outliers] by uniform points
    density_gain: float = 0.0  # sampling density exp(g <p, d>), g uniform in [0, density_gain]
    partial_scans: float = 0.0  # share of shapes seen only from 1 to scan_views random viewpoints
    hollow: float = 0.0  # share of shapes made thin-walled and cut open (data/shapes.random_opening)
    scan_views: int = 4
    query_points: int = 2048  # query points per shape per step
    near_surface_ratio: float = 0.5  # share of query points near the surface (0 = original, uniform only)
    near_surface_sigma: float = 0.05
    padding: float = 0.1  # queries are uniform in [-(1+padding)/2, (1+padding)/2]^3
    voxel_res: int = VOXEL_RES
    image_size: int = 64
    views: int = 2  # rendered views per shape (image model)
    # how the views are shot: "fixed", the image models' one camera turned around the shape (the
    # prediction is in its frame); "random", as users shoot reference pictures (data/views.py:
    # any field of view, framing, elevation and look, framed as the engine frames a picture),
    # each view with its camera in the shape's own frame (the views model); or a named set of
    # views ("front-side", "front-side-top": wire/views.py), shot so, for evaluation
    cameras: str = "fixed"
    # training batches are mapped by a random symmetry per shape (data/augment.py): of the cube,
    # or for image models, whose frame is the camera's, of the square image plane
    augment: bool = False

    def validate(self) -> None:
        if not self.source:
            raise ConfigError("data.source must be 'procedural' or a folder made by prepare-meshes")
        if not (isinstance(self.classes, list) and all(isinstance(c, str) and c for c in self.classes)):
            raise ConfigError(f"data.classes must be a list of class folder names, got {self.classes!r}")
        for name in (
            "n_train",
            "n_val",
            "surface_points",
            "n_points",
            "query_points",
            "voxel_res",
            "image_size",
        ):
            _positive(self, name, "data")
        _at_least(self, "seed", 0, "data")
        _at_least(self, "views", 0, "data")
        for name in ("noise", "near_surface_sigma", "padding"):
            _at_least(self, name, 0.0, "data")
        for name in ("n_points_max", "scan_views"):
            _at_least(self, name, 0, "data")
        for name in ("noise_max", "outliers", "density_gain", "partial_scans"):
            _at_least(self, name, 0.0, "data")
        if self.n_points_max and self.n_points_max < self.n_points:
            raise ConfigError(
                f"data.n_points_max ({self.n_points_max}) must be 0 or at least "
                f"data.n_points ({self.n_points})"
            )
        if self.outliers > 0.5 or self.partial_scans > 1 or not 0 <= self.hollow <= 1:
            raise ConfigError(
                "data.outliers must be at most 0.5, and data.partial_scans and data.hollow between 0 and 1"
            )
        if self.partial_scans > 0 and self.scan_views < 1:
            raise ConfigError("data.partial_scans needs data.scan_views >= 1")
        if self.cameras not in CAMERA_STYLES:
            raise ConfigError(f"data.cameras must be one of {', '.join(CAMERA_STYLES)}, got {self.cameras!r}")
        if self.cameras in VIEW_SETS and self.views != len(VIEW_SETS[self.cameras]):
            count = len(VIEW_SETS[self.cameras])
            raise ConfigError(
                f'data.cameras = "{self.cameras}" shoots {count} views: set data.views = {count}'
            )
        if not 0.0 <= self.near_surface_ratio <= 1.0:
            raise ConfigError(f"data.near_surface_ratio must lie in [0, 1], got {self.near_surface_ratio}")


def _finite(value: float, key: str) -> None:
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}")


def _positive(obj: object, name: str, section: str) -> None:
    _at_least(obj, name, 1, section)


def _at_least(obj: object, name: str, low: float, section: str) -> None:
    value = getattr(obj, name)
    _finite(value, f"{section}.{name}")
    if value < low:
        raise ConfigError(f"{section}.{name} must be at least {low}, got {value}")


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
    # a model file whose occupancy this run's decoder learns to give (backend/distill.py): its
    # encoder and local features are copied and frozen; "" trains on ground truth as usual
    teacher: str = ""

    def validate(self) -> None:
        if not self.out_dir:
            raise ConfigError("train.out_dir must name a folder")
        for name in ("batch_size", "max_steps", "eval_every", "checkpoint_every", "val_points"):
            _positive(self, name, "train")
        for name in ("threads", "seed"):
            _at_least(self, name, 0, "train")
        for name in ("lr", "lr_final"):
            _finite(getattr(self, name), f"train.{name}")
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")
        _at_least(self, "weight_decay", 0.0, "train")


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
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"[{section}] {key} must be true or false, got {value!r}")
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
    original = _original_layout(cfg, d.get("data", {}))
    cfg.data.validate()
    cfg.train.validate()
    if cfg.data.classes and not original:
        raise ConfigError("data.classes needs data.source to be a dataset in the original's layout")
    if original and cfg.data.near_surface_ratio > 0:
        raise ConfigError(
            "data.near_surface_ratio must be 0 for a dataset in the original's layout: its points.npz "
            "holds one set of points"
        )
    if original and cfg.model.kind == "image" and cfg.data.augment:
        raise ConfigError(
            "data.augment maps an image with its camera's frame; the original's image models "
            "predict in the object's frame, so it does not apply to its layout"
        )
    if cfg.model.kind in ("image", "views") and cfg.data.image_size != cfg.model.image_size:
        raise ConfigError(
            f"data.image_size ({cfg.data.image_size}) must equal model.image_size ({cfg.model.image_size})"
        )
    if cfg.model.kind == "voxels" and cfg.data.voxel_res != VOXEL_RES:
        raise ConfigError(
            f"data.voxel_res must be {VOXEL_RES} (the voxel encoder's input), got {cfg.data.voxel_res}"
        )
    if cfg.model.kind == "image" and cfg.data.source != "procedural" and not original:
        raise ConfigError(
            "image models train on procedural data or the original's layout: mesh datasets have no "
            "rendered views"
        )
    if cfg.model.kind == "image" and cfg.data.views < 1:
        raise ConfigError("an image model needs data.views >= 1 rendered views per shape")
    if cfg.model.kind == "views" and (
        cfg.data.source != "procedural" or cfg.data.cameras == "fixed" or cfg.data.views < 1
    ):
        raise ConfigError(
            'a views model trains on procedural shapes with data.cameras = "random" and data.views >= 1'
        )
    if cfg.model.kind != "views" and cfg.data.cameras != "fixed":
        raise ConfigError(
            f'data.cameras = "{cfg.data.cameras}" shoots the views model\'s data: use model.kind = "views"'
        )
    return cfg


def _original_layout(cfg: Config, given: dict[str, Any]) -> bool:
    """Is the source a dataset in the original's layout? Then its settings become the defaults of
    the ``[data]`` keys the config leaves out."""
    from .data.onet_layout import is_onet_layout, original_settings  # the data modules import this one

    if cfg.data.source == "procedural" or not is_onet_layout(cfg.data.source):
        return False
    for key, value in original_settings(cfg.model.kind).items():
        if key not in given:
            setattr(cfg.data, key, value)
    return True


def load_config(path: str | Path) -> Config:
    path = Path(path)
    try:
        with path.open("rb") as f:
            d = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    return config_from_dict(d)
