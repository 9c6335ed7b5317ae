"""Procedural training data: determinism, the batches the trainer draws, and unusable split files."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.config import DataConfig
from backend.data.augment import (
    apply_to_grids,
    apply_to_images,
    apply_to_points,
    random_square_symmetries,
    random_symmetries,
    symmetry_matrices,
)
from backend.data.dataset import CSG_KEYS, DataError, ShapePool, validation_set
from backend.data.generate import build_split, make_shape
from backend.data.render import camera_rays
from backend.data.shapes import ShapeSet
from backend.models.local import project

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


def test_a_larger_split_extends_a_cached_smaller_one_to_the_same_data(tmp_path: Path) -> None:
    grown, scratch = tmp_path / "grown", tmp_path / "scratch"
    small = build_split(TINY, "val", 2, grown, workers=1)
    small_bytes = small.read_bytes()
    large = build_split(TINY, "val", 3, grown, workers=1)
    fresh = build_split(TINY, "val", 3, scratch, workers=1)
    with np.load(large) as a, np.load(fresh) as b:
        assert a.files == b.files
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert small.read_bytes() == small_bytes  # the cached split it grew from is left as it was
    # a smaller split is cut from the largest cached one; other settings never mix
    with np.load(build_split(TINY, "val", 1, grown, workers=1)) as one, np.load(fresh) as b:
        np.testing.assert_array_equal(one["surface"], b["surface"][:1])
    other_seed = build_split(DataConfig(**{**vars(TINY), "seed": 1}), "val", 1, grown, workers=1)
    with np.load(other_seed) as c, np.load(fresh) as b:
        assert not np.array_equal(c["surface"][0], b["surface"][0])


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


def _unmap(q: torch.Tensor, perm: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The inverse of ``apply_to_points``, written out per axis: p[perm[i]] = sign[i] * q[i]."""
    p = torch.empty_like(q)
    for b in range(len(q)):
        for i in range(3):
            p[b, :, perm[b, i]] = sign[b, i] * q[b, :, i]
    return p


def test_random_symmetries_are_the_48_of_the_cube() -> None:
    perm, sign = random_symmetries(4000, torch.Generator().manual_seed(0))
    assert {tuple(sorted(row)) for row in perm.tolist()} == {(0, 1, 2)}
    assert set(sign.unique().tolist()) == {-1.0, 1.0}
    assert len({(*p, *s) for p, s in zip(perm.tolist(), sign.tolist(), strict=True)}) == 48


def test_a_grid_maps_as_its_cell_centres_do() -> None:
    res = 6
    grid = torch.rand(1, res, res, res)
    centres = torch.linspace(0.5 / res - 0.5, 0.5 - 0.5 / res, res)
    cells = torch.stack(torch.meshgrid(centres, centres, centres, indexing="ij"), -1).reshape(1, -1, 3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(10):
        perm, sign = random_symmetries(1, gen)
        mapped_cells = apply_to_points(cells, perm, sign)[0]
        index = torch.round((mapped_cells + 0.5) * res - 0.5).long()
        mapped = apply_to_grids(grid, perm, sign)[0]
        assert torch.equal(mapped[index[:, 0], index[:, 1], index[:, 2]], grid.reshape(-1))


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "unconditional"])
def test_augmented_batches_are_exact_for_the_mapped_shapes(split: Path, kind: str) -> None:
    """Labels, observed points and voxels all describe the same mapped shape."""
    pool = ShapePool(split)
    assert pool.shapes is not None
    cfg = DataConfig(**{**vars(TINY), "augment": True, "query_points": 2000, "n_points": 300})
    idx = torch.tensor([0, 1, 2, 0])
    gen = torch.Generator().manual_seed(3)
    batch = pool.batch(kind, idx, cfg, gen)
    # the same draws without augmentation, then the symmetries drawn next from the generator
    gen = torch.Generator().manual_seed(3)
    plain = ShapePool(split).batch(kind, idx, DataConfig(**{**vars(cfg), "augment": False}), gen)
    perm, sign = random_symmetries(len(idx), gen)
    assert not torch.equal(batch.points, plain.points)
    shapes = pool.shapes.select(idx)
    torch.testing.assert_close(batch.occ, shapes.occupancy(_unmap(batch.points, perm, sign)))
    if kind == "pointcloud":
        assert batch.inputs is not None
        sdf = shapes.sdf(_unmap(batch.inputs, perm, sign))
        assert sdf.abs().max() < 0.03  # noisy surface samples of the shape, mapped
    if kind == "voxels":
        assert batch.inputs is not None and plain.inputs is not None
        res = batch.inputs.shape[-1]
        cell = torch.clamp(((batch.points + 0.5) * res).long(), 0, res - 1)
        inside = batch.points.abs().amax(-1) < 0.5
        rows = torch.arange(len(idx))[:, None].expand_as(cell[..., 0])
        voxel = batch.inputs[rows, cell[..., 0], cell[..., 1], cell[..., 2]]
        agree = (voxel == batch.occ)[inside].float().mean()
        assert agree > 0.9  # voxels and labels agree except in cells the surface cuts
        assert int(batch.inputs.sum()) == int(plain.inputs.sum())


def test_random_square_symmetries_are_the_8_that_keep_the_view_axis() -> None:
    perm, sign = random_square_symmetries(2000, torch.Generator().manual_seed(0))
    assert (perm[:, 2] == 2).all() and (sign[:, 2] == 1).all()
    assert len({(*p, *s) for p, s in zip(perm.tolist(), sign.tolist(), strict=True)}) == 8


def test_an_image_maps_as_its_pixel_rays_do() -> None:
    """The pixel whose ray is mapped by a symmetry gets the colour of the original pixel."""
    size = 6
    images = torch.rand(1, 3, size, size)
    rays = camera_rays(size)  # row-major from the top-left pixel
    gen = torch.Generator().manual_seed(1)
    for _ in range(12):
        perm, sign = random_square_symmetries(1, gen)
        mapped_rays = apply_to_points(rays[None], perm, sign)[0]
        # the mapped ray of pixel k is the ray of some pixel j: find j
        gap, j = torch.cdist(mapped_rays, rays).min(1)
        assert gap.max() < 1e-3  # pixels are 0.1 apart
        mapped = apply_to_images(images, perm, sign)[0].reshape(3, -1)
        assert torch.equal(mapped[:, j], images[0].reshape(3, -1))
    with pytest.raises(ValueError, match="keep the view axis"):
        apply_to_images(images, *random_symmetries(1, torch.Generator().manual_seed(4)))


def test_augmented_image_batches_show_the_mapped_shape(split: Path) -> None:
    """Occupied query points project onto the object in the augmented image, not the background."""
    cfg = DataConfig(**{**vars(TINY), "augment": True, "query_points": 2000})
    idx = torch.tensor([0, 1, 2, 0, 1, 2])
    gen = torch.Generator().manual_seed(5)
    batch = ShapePool(split).batch("image", idx, cfg, gen)
    gen = torch.Generator().manual_seed(5)
    plain = ShapePool(split).batch("image", idx, DataConfig(**{**vars(cfg), "augment": False}), gen)
    perm, sign = random_square_symmetries(len(idx), gen)
    assert not torch.equal(batch.points, plain.points)
    # labels: the plain batch's, at the mapped points
    torch.testing.assert_close(batch.points, apply_to_points(plain.points, perm, sign))
    torch.testing.assert_close(batch.occ, plain.occ)

    def on_object(images: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        size = images.shape[-1]
        uv = ((project(points) + 1) / 2 * size).long().clamp(0, size - 1)
        rows = torch.arange(len(points))[:, None].expand_as(uv[..., 0])
        pixels = images[rows, :, uv[..., 1], uv[..., 0]]
        background = images[:, :, 0, 0][:, None, :]  # the corners never see the object
        return (pixels - background).abs().amax(-1) > 1e-3

    assert batch.inputs is not None and plain.inputs is not None
    inside = batch.occ.bool()
    assert on_object(batch.inputs, batch.points)[inside].float().mean() > 0.9
    # an image left unmapped would disagree with the mapped labels
    assert on_object(plain.inputs, batch.points)[inside].float().mean() < 0.85


def test_symmetry_matrices_map_as_the_symmetries_map_points() -> None:
    perm, sign = random_symmetries(48, torch.Generator().manual_seed(3))
    points = torch.rand(48, 10, 3) - 0.5
    matrices = symmetry_matrices(perm, sign)
    torch.testing.assert_close(
        torch.einsum("bij,bmj->bmi", matrices, points), apply_to_points(points, perm, sign)
    )


def test_opened_shapes_are_thin_walls_of_their_solid_cut_by_a_plane_and_solids_stay_as_they_were(
    tmp_path: Path,
) -> None:
    hollow = DataConfig(**{**vars(TINY), "views": 0, "hollow": 0.5})
    solid = DataConfig(**{**vars(TINY), "views": 0})
    pool = ShapePool(build_split(hollow, "val", 6, tmp_path, workers=1))
    plain = ShapePool(build_split(solid, "val", 6, tmp_path, workers=1))
    assert pool.shapes is not None and plain.shapes is not None
    opened = (pool.shapes.shell > 0).tolist()
    assert any(opened) and not all(opened)  # about half of them, by the split's own draws
    p = torch.rand(6, 20000, 3) - 0.5
    for i, was_opened in enumerate(opened):
        walls, whole = pool.shapes.select([i]), plain.shapes.select([i])
        if not was_opened:  # the same shape, point for point, as in a split of solids
            assert torch.equal(pool.surface[i], plain.surface[i])
            torch.testing.assert_close(walls.sdf(p[i : i + 1]), whole.sdf(p[i : i + 1]))
            continue
        sdf = walls.sdf(p[i : i + 1])[0]
        # in the shape's own frame: the walls are the band |d_solid| <= shell on the kept side
        solid_shape = ShapeSet.from_numpy({k: getattr(walls, k).numpy() for k in CSG_KEYS})
        q = walls.scale * p[i] + walls.center
        d_solid = solid_shape.sdf_shape_frame(q[None])[0]
        kept = q @ walls.cut[0, :3] <= walls.cut[0, 3]
        expected = (d_solid.abs() <= walls.shell) & kept
        agree = (sdf <= 0) == expected
        assert agree.float().mean() > 0.999  # sign ties at the band's edge only
        inside = walls.occupancy(p[i : i + 1])[0] > 0
        assert not inside[d_solid < -2 * walls.shell].any()  # the solid's core is empty
        assert walls.sdf(pool.surface[i : i + 1].float()).abs().max() < 2e-3  # samples on the walls
