"""Fixtures shared by the engine tests: small real models written as real model files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from backend.checkpoint import ModelMeta, save_weights
from backend.config import ModelConfig
from backend.models import OccupancyNetwork, build_model

TINY_MODEL = {
    "hidden": 16,
    "n_blocks": 2,
    "c_dim": 16,
    "encoder_hidden": 16,
    "encoder_width": 4,
    "grid_res": 8,
    "image_size": 32,
}


def randomised_model(seed: int, **config: Any) -> OccupancyNetwork:
    """A tiny model whose weights (and the decoder's batch-norm statistics) are perturbed at random.

    A freshly built decoder starts with zero-initialised residual branches and constant
    conditional batch norm, so its field would not depend on the input at all.
    """
    torch.manual_seed(seed)
    model = build_model(ModelConfig(**{**TINY_MODEL, **config}))
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p.shape[1] if p.ndim > 1 else 16
            p.add_(torch.randn_like(p) * (0.5 / fan_in**0.5))
        for m in model.decoder.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_model(
    folder: Path,
    name: str,
    seed: int,
    tau: float = 0.5,
    automatic_points: list[int] | None = None,
    **config: Any,
) -> Path:
    model = randomised_model(seed, **config)
    cfg = ModelConfig(**{**TINY_MODEL, **config})
    path = folder / f"{name}.safetensors"
    meta = ModelMeta(name, cfg.kind, tau, vars(cfg), automatic_points=automatic_points)
    # stored as float32 so that a test can rebuild exactly the same network
    save_weights(path, model, meta, half=False)
    return path


@pytest.fixture(scope="session")
def engine_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weights folder with one tiny model of each kind."""
    folder = tmp_path_factory.mktemp("engine-weights")
    write_model(folder, "points", 0, kind="pointcloud")
    write_model(folder, "voxels", 1, kind="voxels")
    write_model(folder, "image", 2, kind="image")
    write_model(folder, "prior", 3, kind="unconditional", decoder="simple", c_dim=0, z_dim=8)
    return folder


@pytest.fixture(scope="session")
def tiny_config() -> dict[str, Any]:
    """The tiny model's size settings, to build configs around."""
    return dict(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., OccupancyNetwork]:
    """``tiny_model(seed, **config)``: a tiny randomised model (see ``randomised_model``)."""
    return randomised_model
