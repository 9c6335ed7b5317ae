"""Listing models without torch: the safetensors header read with the standard library."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from occupancy_addon.model_files import (
    ModelFileError,
    from_ready,
    list_models,
    pick_model,
    read_model_file,
    shipped_weights_dir,
)


def fake_model(
    path: Path,
    kind: str,
    tau: float = 0.3,
    fmt: str = "occupancy-reconstruct",
    version: str = "1",
    automatic_points: object = None,
) -> Path:
    """A file with a real safetensors header (no tensors): all the add-on ever reads."""
    meta = {"name": path.stem, "kind": kind, "tau": tau, "config": {}, "automatic_points": automatic_points}
    info = {"format": fmt, "format_version": version, "meta": json.dumps(meta)}
    header = json.dumps({"__metadata__": info})
    path.write_bytes(struct.pack("<Q", len(header)) + header.encode())
    return path


def test_reads_kind_and_tau(tmp_path: Path) -> None:
    model = read_model_file(fake_model(tmp_path / "points.safetensors", "pointcloud", 0.25), shipped=True)
    assert (model.name, model.kind, model.tau, model.label) == (
        "points",
        "pointcloud",
        0.25,
        "points (point cloud)",
    )
    user = read_model_file(tmp_path / "points.safetensors")
    assert user.name == str(tmp_path / "points.safetensors")  # a checkpoint is asked for by path


def test_bad_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="model file not found"):
        read_model_file(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\xff" * 40)
    with pytest.raises(ModelFileError, match="junk.safetensors is not a readable model file"):
        read_model_file(tmp_path / "junk.safetensors")
    with pytest.raises(ModelFileError, match="other.safetensors is not an Occupancy Reconstruct model file"):
        read_model_file(fake_model(tmp_path / "other.safetensors", "pointcloud", fmt="something-else"))
    with pytest.raises(ModelFileError, match="unknown kind 'mesh'"):
        read_model_file(fake_model(tmp_path / "mesh.safetensors", "mesh"))
    with pytest.raises(ModelFileError, match="newer.safetensors has model format version 99, this build"):
        read_model_file(fake_model(tmp_path / "newer.safetensors", "pointcloud", version="99"))
    for span in ([500, 0], [0], "0-500", [0.0, 500.0], [True, 500]):
        with pytest.raises(ModelFileError, match=r"'automatic_points' must be \[low, high\)"):
            read_model_file(fake_model(tmp_path / "span.safetensors", "pointcloud", automatic_points=span))


def test_listing_and_picking(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    fake_model(weights / "pointcloud-sparse.safetensors", "pointcloud", automatic_points=[0, 500])
    fake_model(weights / "pointcloud.safetensors", "pointcloud")
    fake_model(weights / "voxels.safetensors", "voxels")
    (weights / "broken.safetensors").write_bytes(b"")
    own = fake_model(tmp_path / "mine.safetensors", "pointcloud")
    models, problems = list_models(weights, [str(own), "  "])
    assert [m.name for m in models] == ["pointcloud", "pointcloud-sparse", "voxels", str(own)]
    assert len(problems) == 1 and "broken.safetensors" in problems[0]

    # the first of the kind by name: the kind's own model, not the variant whose file sorts first
    assert pick_model(models, "", "pointcloud").name == "pointcloud"
    assert pick_model(models, "pointcloud-sparse", "pointcloud").name == "pointcloud-sparse"
    # Automatic takes the sparse variant only for the cloud sizes its header names
    assert models[1].automatic_points == (0, 500)
    assert pick_model(models, "", "pointcloud", 300).name == "pointcloud-sparse"
    assert pick_model(models, "", "pointcloud", 500).name == "pointcloud"
    assert pick_model(models, "pointcloud", "pointcloud", 300).name == "pointcloud"  # a choice stands
    assert pick_model(models, str(own), "pointcloud").path == own
    with pytest.raises(ModelFileError, match="no image model is installed: add a checkpoint file"):
        pick_model(models, "", "image")
    with pytest.raises(ModelFileError, match="takes voxels input, not point cloud"):
        pick_model(models, "voxels", "pointcloud")
    with pytest.raises(
        ModelFileError, match=r"no model named 'chair' \(available: pointcloud, pointcloud-sparse, voxels"
    ):
        pick_model(models, "chair", "pointcloud")
    with pytest.raises(ModelFileError, match="model file not found"):
        pick_model(models, str(tmp_path / "gone.safetensors"), "pointcloud")


def test_weights_folder_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OCC_WEIGHTS_DIR", raising=False)
    assert shipped_weights_dir(tmp_path) == tmp_path / "backend" / "weights"
    monkeypatch.setenv("OCC_WEIGHTS_DIR", "/from/env")
    assert shipped_weights_dir(tmp_path) == Path("/from/env")
    assert shipped_weights_dir(tmp_path, "/from/preferences") == Path("/from/preferences")


def test_models_as_the_backend_reports_them(tmp_path: Path) -> None:
    reported = [
        {"name": "pointcloud", "kind": "pointcloud", "tau": 0.4},
        {"name": "odd", "kind": "mesh", "tau": 0.5},
        {"name": "sparse", "kind": "pointcloud", "tau": 0.3, "automatic_points": [0, 500]},
        {"name": "odd-range", "kind": "pointcloud", "tau": 0.3, "automatic_points": [9, 1]},
    ]
    model, sparse, odd = from_ready(tmp_path, reported)  # kinds the add-on does not know are left out
    assert (sparse.automatic_points, odd.automatic_points) == ((0, 500), None)
    assert (model.name, model.kind, model.tau, model.path) == (
        "pointcloud",
        "pointcloud",
        0.4,
        tmp_path / "pointcloud.safetensors",
    )


def test_a_picture_goes_to_the_views_model_when_one_is_installed(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    fake_model(weights / "image.safetensors", "image")
    fake_model(weights / "voxels.safetensors", "voxels")
    alone, _ = list_models(weights, [])
    assert pick_model(alone, "", "image").name == "image"  # no views model: the image model
    fake_model(weights / "views.safetensors", "views")
    models, _ = list_models(weights, [])
    # a views model reads one picture as a single view, and measures better than the image model
    assert pick_model(models, "", "image").name == "views"
    assert pick_model(models, "image", "image").name == "image"  # a choice stands
    assert pick_model(models, "", "views").name == "views"
    with pytest.raises(ModelFileError, match="takes image input, not reference views"):
        pick_model(models, "image", "views")  # several views need the views model
    with pytest.raises(ModelFileError, match="takes voxels input, not image"):
        pick_model(models, "voxels", "image")
