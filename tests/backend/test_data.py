"""Procedural training data: determinism, the batches the trainer draws, and unusable split files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.config import DataConfig
from backend.data.dataset import DataError, ShapePool, validation_set
from backend.data.generate import build_split, make_shape
from backend.data.shapes import ShapeSet

TINY = DataConfig(surface_points=400, image_size=16, views=1, query_points=64, n_points=50)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_split(TINY, "val", 3, tmp_path_factory.mktemp("data"), workers=1)


def test_the_same_seed_gives_the_same_shape_and_other_seeds_other_shapes() -> None:
    first = make_shape(7, 0, 5, TINY)
    again = make_shape(7, 0, 5, TINY)
    assert first.keys() == again.keys()
    for key in first:
        np.testing.assert_array_equal(first[key], again[key], err_msg=key)
    for other in (make_shape(7, 0, 6, TINY), make_shape(8, 0, 5, TINY), make_shape(7, 1, 5, TINY)):
        assert not np.array_equal(first["surface"], other["surface"])


def test_a_split_is_generated_once_and_reused(split: Path) -> None:
    mtime = split.stat().st_mtime_ns
    assert build_split(TINY, "val", 3, split.parent, workers=1) == split
    assert split.stat().st_mtime_ns == mtime
    # the key covers what changes the stored data: a different seed is a different file
    other = build_split(DataConfig(**{**vars(TINY), "seed": 1}), "val", 1, split.parent, workers=1)
    assert other != split


def test_surface_samples_lie_on_the_shapes_and_fill_the_unit_box(split: Path) -> None:
    pool = ShapePool(split)
    sdf = pool.shapes.sdf(pool.surface.float()) if pool.shapes is not None else None
    assert sdf is not None and sdf.abs().max() < 2e-3
    extent = pool.surface.float().amax(1) - pool.surface.float().amin(1)
    torch.testing.assert_close(extent.amax(1), torch.ones(3), atol=2e-3, rtol=0)
    normals = pool.normals.float().norm(dim=-1)
    torch.testing.assert_close(normals, torch.ones_like(normals), atol=2e-3, rtol=0)


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "image", "unconditional"])
def test_batches_have_the_model_input_and_exact_labels(split: Path, kind: str) -> None:
    pool = ShapePool(split)
    gen = torch.Generator().manual_seed(0)
    batch = pool.batch(kind, torch.tensor([0, 2]), TINY, gen)
    shapes = {"pointcloud": (2, 50, 3), "voxels": (2, 32, 32, 32), "image": (2, 3, 16, 16)}
    if kind == "unconditional":
        assert batch.inputs is None
    else:
        assert batch.inputs is not None and tuple(batch.inputs.shape) == shapes[kind]
        assert batch.inputs.dtype == torch.float32 and batch.inputs.min() >= -1 and batch.inputs.max() <= 1
    assert batch.points.shape == (2, 64, 3) and batch.occ.shape == (2, 64)
    assert set(batch.occ.unique().tolist()) <= {0.0, 1.0} and 0 < batch.occ.mean() < 1
    uniform = batch.points[:, :32]  # near_surface_ratio 0.5: the first half is uniform in the padded box
    assert uniform.abs().max() <= 0.55


def test_validation_sets_are_fixed(split: Path) -> None:
    pool = ShapePool(split)
    a, b = validation_set(pool, "pointcloud", TINY, 100), validation_set(pool, "pointcloud", TINY, 100)
    for (xa, pa, oa), (xb, pb, ob) in zip(a, b, strict=True):
        assert xa is not None and xb is not None
        assert torch.equal(xa, xb) and torch.equal(pa, pb) and torch.equal(oa, ob)


def test_a_split_without_views_builds_but_cannot_feed_an_image_model(tmp_path: Path) -> None:
    cfg = DataConfig(**{**vars(TINY), "views": 0})
    pool = ShapePool(build_split(cfg, "train", 1, tmp_path, workers=1))
    assert pool.images.shape[1] == 0
    pool.batch("voxels", torch.tensor([0]), cfg, torch.Generator())
    with pytest.raises(DataError, match="no rendered views"):
        pool.batch("image", torch.tensor([0]), cfg, torch.Generator())


def test_bad_split_requests_are_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown split 'tset'"):
        build_split(TINY, "tset", 2, tmp_path)
    with pytest.raises(ValueError, match="at least one shape, got n=0"):
        build_split(TINY, "test", 0, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _missing_key(path: Path, split: Path) -> None:
    with np.load(split) as f:
        np.savez(path, **{k: f[k] for k in f.files if k != "surface"})


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, s: None, "split file not found"),
        (lambda p, s: p.write_text("not a split"), "is not a readable split file"),
        (lambda p, s: p.write_bytes(s.read_bytes()[:5000]), "is not a readable split file"),
        (lambda p, s: np.save(p, np.zeros(3)), "is not a split file"),
        (lambda p, s: np.savez(p, voxels=np.zeros(3)), "is not a split file: it lacks surface, normals"),
        (_missing_key, "it lacks surface$"),
        (lambda p, s: np.savez(p, names=np.array([None, 1], dtype=object)), "is not a readable split file"),
    ],
    ids=["missing", "text", "truncated", "npy", "foreign npz", "missing key", "pickled objects"],
)
def test_unusable_split_files_raise_a_data_error(
    tmp_path: Path, split: Path, make: object, message: str
) -> None:
    path = tmp_path / "split.npz"
    make(path, split)  # type: ignore[operator]
    if path.with_suffix(".npz.npy").exists():  # np.save appends .npy
        path.with_suffix(".npz.npy").rename(path)
    with pytest.raises(DataError, match=message):
        ShapePool(path)
    assert isinstance(zipfile.is_zipfile(split), bool)


def test_shapes_select_and_occupancy_agree_with_the_sdf(split: Path) -> None:
    pool = ShapePool(split)
    assert isinstance(pool.shapes, ShapeSet)
    p = torch.rand(2, 500, 3) - 0.5
    one = pool.shapes.select([1, 2])
    torch.testing.assert_close(one.occupancy(p), (one.sdf(p) <= 0).float())
