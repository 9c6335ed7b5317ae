"""The unfamiliar test set: closed, sensible, reproducible meshes that prepare as a test-only dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.data.dataset import ShapePool
from backend.data.meshes import MeshDataError, MeshSettings, prepare_meshes, prepared_split
from backend.data.unfamiliar import FAMILIES, family, shape_name, unfamiliar_shape, write_unfamiliar_meshes

RES = 40  # coarse grids keep the tests fast; thin parts stay a few cells thick at the full 128

# (min, max) of the volume relative to the bounding box's: thin shells and tubes fill little of it
FILL = {
    "revolved": (0.3, 0.8),
    "tube": (0.003, 0.2),
    "shell": (0.02, 0.3),
    "blob": (0.3, 0.8),
    "extruded": (0.4, 0.9),
    "gyroid": (0.05, 0.4),
}


@pytest.mark.parametrize("index", range(2 * len(FAMILIES)), ids=lambda i: f"{family(i)}-{i}")
def test_each_family_gives_a_closed_single_piece_of_sensible_size(index: int) -> None:
    vertices, faces = unfamiliar_shape(index, seed=3, resolution=RES)
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.body_count == 1
    extent = np.ptp(vertices, axis=0)
    assert extent.min() > 0.1 and extent.max() < 4  # neither flat nor far-flung
    fill = mesh.volume / np.prod(extent)  # positive: the faces point outward
    low, high = FILL[family(index)]
    assert low < fill < high, fill


def test_shapes_depend_only_on_seed_and_index() -> None:
    for i in range(len(FAMILIES)):
        v1, f1 = unfamiliar_shape(i, seed=7, resolution=24)
        v2, f2 = unfamiliar_shape(i, seed=7, resolution=24)
        assert np.array_equal(v1, v2) and np.array_equal(f1, f2)
        v3, _ = unfamiliar_shape(i, seed=8, resolution=24)
        assert v3.shape != v1.shape or not np.allclose(v3, v1)
    n = len(FAMILIES)
    assert [family(i) for i in range(n + 2)] == [*FAMILIES, *FAMILIES[:2]]


def test_written_shapes_prepare_as_a_test_only_split(tmp_path: Path) -> None:
    paths = write_unfamiliar_meshes(tmp_path / "meshes", len(FAMILIES), seed=1, resolution=RES)
    assert [p.name for p in paths] == [f"{f}-{i:03d}.ply" for i, f in enumerate(FAMILIES)]
    settings = MeshSettings(
        surface_points=300,
        uniform_points=2000,
        near_points=2000,
        voxel_res=16,  # the 32^3 grid's winding numbers would take most of the test's time
        val_fraction=0.0,
        test_fraction=1.0,
    )
    manifest = prepare_meshes(tmp_path / "meshes", tmp_path / "prepared", settings, progress=False)
    assert manifest["splits"] == {"val": [], "train": [], "test": sorted(p.name for p in paths)}
    assert manifest["skipped"] == {}
    assert sorted(p.name for p in (tmp_path / "prepared").iterdir()) == ["dataset.json", "test.npz"]
    assert json.loads((tmp_path / "prepared" / "dataset.json").read_text())["settings"]["test_fraction"] == 1
    pool = ShapePool(prepared_split(tmp_path / "prepared", "test"))
    assert len(pool) == len(FAMILIES) and pool.names == sorted(p.name for p in paths)
    assert pool.queries is not None
    for i in range(len(FAMILIES)):  # every shape encloses volume, and the near points straddle its surface
        assert 0.05 < pool.queries.near_occ[i].float().mean() < 0.95
    with pytest.raises(MeshDataError, match="has no train split"):
        prepared_split(tmp_path / "prepared", "train")


def test_a_test_only_dataset_takes_no_validation_share() -> None:
    MeshSettings(val_fraction=0.0, test_fraction=1.0).validate()
    with pytest.raises(MeshDataError, match="test-only dataset .* takes val_fraction 0"):
        MeshSettings(val_fraction=0.1, test_fraction=1.0).validate()
    with pytest.raises(MeshDataError, match="must leave meshes for training"):
        MeshSettings(val_fraction=0.5, test_fraction=0.5).validate()
    with pytest.raises(MeshDataError, match=r"must lie in \[0, 1\]"):
        MeshSettings(test_fraction=1.5).validate()


def test_a_set_of_fewer_families_is_the_set_as_it_was_before_the_others() -> None:
    five = FAMILIES[:5]  # the set before gyroids were added
    assert [shape_name(i, five) for i in (4, 5, 7)] == ["extruded-004", "revolved-005", "shell-007"]
    assert shape_name(5) == "gyroid-005"
    v5, f5 = unfamiliar_shape(7, seed=2, resolution=24, families=five)
    v6, f6 = unfamiliar_shape(8, seed=2, resolution=24)  # shell too, but another draw
    assert family(8) == "shell" and (v5.shape != v6.shape or not np.allclose(v5, v6))
    for bad in (["shell", "cube"], ["shell", "shell"], []):
        with pytest.raises(ValueError, match="families must be distinct names among"):
            write_unfamiliar_meshes(Path("unused"), 1, families=bad)
