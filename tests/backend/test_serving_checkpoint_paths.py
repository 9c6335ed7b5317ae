"""A request may name a checkpoint file by path, next to the models of the weights folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend import wire
from backend.engine.types import ModelInfo
from backend.serving.requests import RequestError, choose_model

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
