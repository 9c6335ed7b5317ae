"""Observations in the user's frame -> normalised model inputs, and the errors bad input gets."""

from __future__ import annotations

import numpy as np
import pytest

from backend.engine.observation import (
    VOXEL_RES,
    prepare_image,
    prepare_points,
    prepare_voxels,
)
from backend.engine.types import InputError, Observation
from backend.kinds import observed_kind


def cloud(n: int = 200, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) * [3.0, 1.0, 0.5] + [10.0, -4.0, 2.0]


def test_points_are_centred_and_scaled_to_a_unit_box_and_mapped_back() -> None:
    pts = cloud()
    prepared = prepare_points(pts, max_points=1000)
    unit = prepared.inputs[0].numpy()
    assert unit.shape == (200, 3)
    lo, hi = unit.min(axis=0), unit.max(axis=0)
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    assert (hi - lo).max() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(prepared.frame.to_user(unit), pts, atol=1e-4)
    assert prepared.warnings == []


def test_non_finite_points_are_dropped_with_a_warning() -> None:
    pts = cloud()
    pts[3] = np.nan
    pts[7, 1] = np.inf
    prepared = prepare_points(pts, max_points=1000)
    assert prepared.inputs.shape == (1, 198, 3)
    assert "dropped 2 of 200 points" in prepared.warnings[0]


def test_large_clouds_are_subsampled_to_the_training_size_deterministically() -> None:
    pts = cloud(5000)
    a, b = prepare_points(pts, 300, seed=1), prepare_points(pts, 300, seed=1)
    assert a.inputs.shape == (1, 300, 3)
    np.testing.assert_array_equal(a.inputs.numpy(), b.inputs.numpy())
    assert not np.array_equal(a.inputs.numpy(), prepare_points(pts, 300, seed=2).inputs.numpy())
    assert "used 300" in a.warnings[0]


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (np.zeros((0, 3)), "at least 10 points"),
        (np.ones((9, 3)), "at least 10 points"),
        (np.full((50, 3), np.nan), "at least 10 points"),
        (np.tile([1.0, 2.0, 3.0], (50, 1)), "one spot"),
        (np.zeros((50, 2)), r"\(N, 3\)"),
        (np.zeros((5, 3, 3)), r"\(N, 3\)"),
        (np.array([["a", "b", "c"]] * 20), "numbers"),
        (np.ones((20, 3), complex), "real numbers"),
        (np.array([[-1e308] * 3, [1e308] * 3] * 10), "magnitudes up to"),
        (np.array([[1e13] * 3] + [[0.0] * 3] * 20), "magnitudes up to"),
    ],
)
def test_bad_point_clouds_are_refused_with_a_clear_message(points: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_points(points, 300)


def test_a_cubic_32_grid_over_the_unit_cube_is_used_as_is() -> None:
    grid = np.random.default_rng(0).random((32, 32, 32)) > 0.6
    prepared = prepare_voxels(grid)
    np.testing.assert_array_equal(prepared.inputs[0].numpy(), grid.astype(np.float32))
    np.testing.assert_allclose(prepared.frame.center, 0)
    assert prepared.frame.scale == 1.0


def test_non_cubic_bounds_keep_the_aspect_and_pad_the_short_sides() -> None:
    grid = np.ones((64, 32, 16), bool)  # a solid box 4 x 2 x 1 units
    bounds = np.array([[0.0, 0.0, 0.0], [4.0, 2.0, 1.0]])
    prepared = prepare_voxels(grid, bounds)
    occ = prepared.inputs[0].numpy() > 0
    assert prepared.frame.scale == 4.0
    np.testing.assert_allclose(prepared.frame.center, [2.0, 1.0, 0.5])
    extent = [np.flatnonzero(occ.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    assert [len(e) for e in extent] == [32, 16, 8]  # 4 : 2 : 1, centred
    assert extent[1][0] == 8 and extent[2][0] == 12


def test_downsampling_keeps_thin_walls() -> None:
    grid = np.zeros((128, 128, 128), bool)
    grid[64, 10:120, 10:120] = True  # one voxel thick at 128^3
    occ = prepare_voxels(grid).inputs[0].numpy() > 0
    assert occ[16].sum() > 600 and occ.sum() == occ[16].sum()


def test_voxel_values_and_bounds_are_checked() -> None:
    with pytest.raises(InputError, match="empty"):
        prepare_voxels(np.zeros((32, 32, 32)))
    with pytest.raises(InputError, match="3D"):
        prepare_voxels(np.ones((32, 32)))
    with pytest.raises(InputError, match="NaN"):
        prepare_voxels(np.full((8, 8, 8), np.nan))
    with pytest.raises(InputError, match="max > min"):
        prepare_voxels(np.ones((8, 8, 8)), np.array([[0, 0, 0], [1, 0, 1.0]]))
    with pytest.raises(InputError, match=r"\(2, 3\)"):
        prepare_voxels(np.ones((8, 8, 8)), np.zeros(6))
    full = prepare_voxels(np.ones((8, 8, 8)))
    assert "every voxel is occupied" in full.warnings[0]
    assert full.inputs.shape == (1, VOXEL_RES, VOXEL_RES, VOXEL_RES)


def test_unframed_images_are_composited_on_white_padded_square_and_resized() -> None:
    """The whole picture, as the model's own renders are made (framing.py frames users' pictures)."""
    rgba = np.zeros((40, 80, 4), np.uint8)
    rgba[..., 0] = 255  # red where opaque
    rgba[:, :40, 3] = 255  # left half opaque, right half transparent
    x = prepare_image(rgba, 32, framed=False).inputs[0].numpy()  # (3, 32, 32)
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 0, 16], 1.0)  # padding above: white
    np.testing.assert_allclose(x[:, 16, 4], [1.0, 0.0, 0.0], atol=1e-6)  # opaque red
    np.testing.assert_allclose(x[:, 16, 28], 1.0)  # transparent -> white
    gray = prepare_image(np.full((10, 10), 0.5, np.float32), 8, framed=False).inputs
    np.testing.assert_allclose(gray.numpy(), 128 / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((4, 4, 2)), "image must be"),
        (np.zeros((0, 4, 3)), "image must be"),
        (np.full((4, 4, 3), 2.0), r"\[0, 1\]"),
        (np.full((4, 4, 3), np.nan), r"\[0, 1\]"),
        (np.full((4, 4, 3), 300, np.int32), "0..255"),
    ],
)
def test_bad_images_are_refused(image: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        prepare_image(image, 32)


def test_an_observation_needs_exactly_one_input() -> None:
    with pytest.raises(InputError, match="got none"):
        observed_kind(Observation())
    with pytest.raises(InputError, match="points, voxels"):
        observed_kind(Observation(points=np.zeros((10, 3)), image=np.zeros((4, 4, 3))))
    with pytest.raises(InputError, match="bounds only apply"):
        observed_kind(Observation(points=np.zeros((10, 3)), bounds=np.zeros((2, 3))))
    assert observed_kind(Observation(voxels=np.ones((4, 4, 4)))).name == "voxels"
