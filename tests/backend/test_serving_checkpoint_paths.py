"""A request may name a checkpoint file by path, next to the models of the weights folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from backend import wire
from backend.engine.types import ModelInfo
from backend.serving.requests import RequestError, choose_model, observation_from_arrays

from .conftest import write_model


def test_a_checkpoint_path_is_a_model(tmp_path: Path) -> None:
    path = write_model(tmp_path, "my-scans", 5, tau=0.3, kind="pointcloud")
    shipped = [ModelInfo("voxels", "voxels", 0.2, "/weights/voxels.safetensors")]
    found = choose_model(shipped, str(path), "pointcloud")
    assert (found.name, found.kind, found.tau, found.path) == (str(path), "pointcloud", 0.3, str(path))
    with pytest.raises(RequestError, match="takes pointcloud input, not voxels") as wrong_kind:
        choose_model(shipped, str(path), "voxels")
    assert wrong_kind.value.code == wire.BAD_INPUT


def test_a_missing_or_foreign_checkpoint_is_an_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(RequestError, match="model file not found") as missing:
        choose_model([], str(tmp_path / "gone.safetensors"), None)
    assert missing.value.code == wire.UNKNOWN_MODEL
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    with pytest.raises(RequestError, match="is not a safetensors model file") as junk:
        choose_model([], str(tmp_path / "junk.safetensors"), None)
    assert junk.value.code == wire.UNKNOWN_MODEL


def test_a_views_model_takes_one_plain_picture_and_automatic_sends_pictures_to_it() -> None:
    picture = np.full((16, 16, 3), 255, np.uint8)
    one = observation_from_arrays("views", {"image": picture})
    assert one.image is not None and one.views is None
    cameras = np.zeros((1, 15), np.float32)
    several = observation_from_arrays("views", {"views": picture[None], "cameras": cameras})
    assert several.views is not None and several.image is None
    with pytest.raises(
        RequestError, match=r"a views model needs the array 'views' \(and optionally 'cameras'\)"
    ):
        observation_from_arrays("views", {"points": np.zeros((5, 3), np.float32)})
    with pytest.raises(RequestError, match="a image model needs the array 'image', not views"):
        observation_from_arrays("image", {"views": picture[None]})  # several views need a views model
    models = [ModelInfo("image", "image", 0.5, "image.safetensors"), ModelInfo("views", "views", 0.4, "v")]
    assert choose_model(models, None, "image").name == "views"
    assert choose_model(models[:1], None, "image").name == "image"
    assert choose_model(models, "image", "image").name == "image"  # a named model stands
    with pytest.raises(RequestError, match="takes image input, not views"):
        choose_model(models, "image", "views")
