"""Mesh -> 32^3 voxels for the voxel models: the surface and everything it encloses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from occupancy_addon.voxelize import VoxelizeError, cubic_bounds, voxelize
from tests.voxel_meshes import voxel_quads


def centres(bounds: np.ndarray, resolution: int = 32) -> np.ndarray:
    side = bounds[1, 0] - bounds[0, 0]
    axis = (np.arange(resolution) + 0.5) / resolution * side
    grid = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1)
    return grid + bounds[0]


def test_sphere_inside_and_surface() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=1.0)
    grid, bounds = voxelize(sphere.vertices, sphere.faces)
    assert grid.shape == (32, 32, 32) and grid.dtype == bool
    assert np.allclose(bounds, [[-1, -1, -1], [1, 1, 1]], atol=1e-6)
    inside = np.linalg.norm(centres(bounds), axis=-1) < 0.99
    assert grid[inside].all()  # every centre inside is occupied
    far = np.linalg.norm(centres(bounds), axis=-1) > 1.0 + 2 * np.sqrt(3) / 32
    assert not grid[far].any()  # nothing beyond a voxel's diagonal from the surface


def test_non_cubic_mesh_gets_cubic_bounds_around_its_centre() -> None:
    box = trimesh.creation.box((2.0, 1.0, 0.5))
    box.apply_translation((10.0, -3.0, 2.0))
    grid, bounds = voxelize(box.vertices, box.faces)
    assert np.allclose(bounds, [[9, -4, 1], [11, -2, 3]])
    # x spans the whole grid, y the middle half, z the middle quarter (plus surface voxels)
    assert grid[:, 8:24, 12:20].all()
    assert not grid[:, :7].any() and not grid[:, :, :11].any()


def test_open_and_thin_surfaces_still_occupy_their_voxels() -> None:
    plane = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    plane.vertices[:, 2] = plane.vertices[:, 0] * 0.01  # nearly flat: a sheet of voxels
    grid, _ = voxelize(plane.vertices, plane.faces)
    assert grid.any(axis=2).mean() > 0.95 and grid.sum() < 32 * 32 * 2


def test_overlapping_parts_fill_as_their_union() -> None:
    # two boxes crossing each other, as modelled objects often are: parity along rays would leave
    # their shared part empty
    bar = trimesh.creation.box((2.0, 0.5, 0.5))
    cross = trimesh.creation.box((0.5, 2.0, 0.5))
    grid, bounds = voxelize(*_arrays(trimesh.util.concatenate([bar, cross])))
    assert np.allclose(bounds, [[-1, -1, -1], [1, 1, 1]])
    assert grid[:, 14:18, 14:18].all() and grid[14:18, :, 14:18].all()  # both bars, centre included
    assert not grid[:4, :4].any()  # the corners between the arms stay empty


def test_a_box_filling_its_bounds_fills_the_grid() -> None:
    grid, _ = voxelize(*_arrays(trimesh.creation.box((1.0, 1.0, 1.0))))
    assert grid.all()


def _arrays(mesh: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def test_errors_say_what_is_wrong() -> None:
    with pytest.raises(VoxelizeError, match="no faces"):
        voxelize(np.zeros((3, 3)), np.zeros((0, 3), int))
    with pytest.raises(VoxelizeError, match="NaN or infinite"):
        voxelize(np.array([[0, 0, 0], [1, 0, 0], [np.nan, 1, 0]]), np.array([[0, 1, 2]]))
    with pytest.raises(VoxelizeError, match="no extent"):
        cubic_bounds(np.ones((4, 3)))


def voxel_faces(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The outer faces of occupied voxels as triangles with outward normals (a voxel editor's mesh)."""
    quads = voxel_quads(grid)
    base = 4 * np.arange(len(quads))[:, None]
    triangles = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]], axis=1).reshape(-1, 3)
    return quads.reshape(-1, 3), triangles


def test_a_voxel_mesh_gives_back_its_own_grid(repo_root: Path) -> None:
    grid = np.load(repo_root / "examples" / "chair_voxels.npy")
    assert grid.any(axis=(0, 1)).all()  # the chair spans the whole height: the same 32 cells
    again, bounds = voxelize(*voxel_faces(grid))
    assert np.array_equal(again, grid)
    assert np.allclose(bounds, [[0, 0, 0], [32, 32, 32]])
