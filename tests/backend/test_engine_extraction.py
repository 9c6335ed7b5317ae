"""MISE + marching cubes on analytic fields: agreement with dense extraction, closedness,
orientation, vertex placement, evaluation savings and re-extraction at another threshold."""

from __future__ import annotations

import math
from collections.abc import Callable

import mcubes
import numpy as np
import pytest
import torch
import trimesh

from backend.engine.extract import extract_mesh, logit
from backend.engine.field import FunctionField
from backend.engine.grid import Grid, check_resolution
from backend.engine.lattice import LatticeValues
from backend.engine.marching import march_dense
from backend.engine.observation import UserFrame
from backend.engine.types import InputError, MeshResult, ReconstructOptions

TorchFn = Callable[[torch.Tensor], torch.Tensor]


def sphere(
    radius: float = 0.3, center: tuple[float, float, float] = (0.0, 0.0, 0.0), sharpness: float = 20.0
) -> TorchFn:
    c = torch.tensor(center)
    return lambda p: sharpness * (radius - (p - c).norm(dim=-1))


def union(*fns: TorchFn) -> TorchFn:
    return lambda p: torch.stack([f(p) for f in fns]).max(dim=0).values


def box(lo: tuple[float, float, float], hi: tuple[float, float, float], sharpness: float = 20.0) -> TorchFn:
    lo_t, hi_t = torch.tensor(lo), torch.tensor(hi)
    return lambda p: sharpness * torch.minimum(p - lo_t, hi_t - p).min(dim=-1).values


def extract(
    fn: TorchFn, resolution: int, tau: float = 0.5, values: LatticeValues | None = None
) -> tuple[MeshResult, LatticeValues]:
    grid = Grid(resolution)
    values = values if values is not None else LatticeValues(resolution + 1)
    result = extract_mesh(FunctionField(fn), values, grid, UserFrame.identity(), tau, ReconstructOptions())
    return result, values


def dense(fn: TorchFn, resolution: int, tau: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    grid = Grid(resolution)
    axis = np.arange(resolution + 1)
    lattice = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        vals = fn(torch.from_numpy(grid.to_unit(lattice))).numpy().reshape((resolution + 1,) * 3)
    verts, faces = march_dense(vals, logit(tau))
    return grid.to_unit(verts), faces


def triangles(vertices: np.ndarray, faces: np.ndarray) -> set[tuple[float, ...]]:
    """Faces as sets of rounded corner positions (independent of vertex order and numbering)."""
    tri = np.round(np.asarray(vertices, np.float64)[faces], 5)
    return {tuple(sorted(map(tuple, t))) for t in tri}  # type: ignore[misc]


def closed(vertices: np.ndarray, faces: np.ndarray) -> bool:
    return bool(trimesh.Trimesh(vertices, faces, process=False).is_watertight)


@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_sphere_is_the_dense_mesh_and_closed(resolution: int) -> None:
    fn = sphere()
    mesh, _ = extract(fn, resolution)
    ref_v, ref_f = dense(fn, resolution)
    assert len(mesh.faces) == len(ref_f) > 0
    assert triangles(mesh.vertices, mesh.faces) == triangles(ref_v, ref_f)
    assert closed(mesh.vertices, mesh.faces)
    assert mesh.vertices.dtype == np.float32 and mesh.faces.dtype == np.int32


def test_vertices_lie_on_the_sphere_and_faces_face_outwards() -> None:
    """Catches a half-cell offset (vertices would be off by 0.0086 at 64^3) and inverted winding."""
    center, radius = (0.05, -0.02, 0.03), 0.3
    mesh, _ = extract(sphere(radius, center), 64)
    v = mesh.vertices.astype(np.float64) - center
    assert np.abs(np.linalg.norm(v, axis=1) - radius).max() < 1e-3
    tri = v[mesh.faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(normals, axis=1)
    outward = np.einsum("ij,ij->i", normals, tri.mean(axis=1)) > 0
    assert outward[area > 1e-12].all()
    volume = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).volume
    assert volume == pytest.approx(4 / 3 * math.pi * radius**3, rel=0.02)


def test_thin_part_between_coarse_samples_is_followed_from_the_rest_of_the_surface() -> None:
    """A slab thinner than a base cell and between base samples: corner tests alone miss it."""
    slab = box((-0.4, 0.007, -0.4), (0.4, 0.027, 0.4))  # between the base planes y = 0 and 0.034
    fn = union(sphere(0.19, (0.0, 0.2, 0.0)), slab)
    mesh, _ = extract(fn, 128)
    ref_v, ref_f = dense(fn, 128)
    assert mesh.stats["passes"] > 1
    assert triangles(mesh.vertices, mesh.faces) == triangles(ref_v, ref_f)
    assert closed(mesh.vertices, mesh.faces)
    assert mesh.vertices[:, 0].min() < -0.39  # the slab's far end was reached


def test_a_surface_cut_by_the_box_is_capped() -> None:
    fn = sphere(0.6)  # larger than the padded box: the box boundary must close it
    mesh, _ = extract(fn, 64)
    ref_v, ref_f = dense(fn, 64)
    assert triangles(mesh.vertices, mesh.faces) == triangles(ref_v, ref_f)
    assert closed(mesh.vertices, mesh.faces)
    cap = 0.55 + 0.01 * Grid(64).cell_size  # the cap lies 1% of a cell outside the box
    assert np.abs(mesh.vertices).max() == pytest.approx(cap, abs=1e-6)
    # distinct vertices never share a position, so merging by position keeps the mesh closed
    assert len(np.unique(mesh.vertices, axis=0)) == len(mesh.vertices)
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=True).is_watertight


def test_a_field_inside_everywhere_gives_the_box() -> None:
    mesh, _ = extract(lambda p: torch.full(p.shape[:1], 5.0), 32)
    assert closed(mesh.vertices, mesh.faces)
    side = 1.1 + 0.02 * Grid(32).cell_size
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).volume == pytest.approx(
        side**3, rel=1e-4
    )


def test_no_surface_gives_an_empty_mesh_and_a_warning() -> None:
    mesh, _ = extract(lambda p: torch.full(p.shape[:1], -5.0), 64)
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)
    assert any("empty mesh" in w for w in mesh.warnings)


def test_random_smooth_fields_match_dense_extraction() -> None:
    torch.manual_seed(1)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 32),
        torch.nn.Tanh(),
        torch.nn.Linear(32, 1),
    )
    fn: TorchFn = lambda p: 3 * net(6 * p).squeeze(-1)  # noqa: E731 - many small blobs and tunnels
    with torch.no_grad():
        mesh, _ = extract(fn, 64)
        ref_v, ref_f = dense(fn, 64)
    assert len(ref_f) > 1000
    assert triangles(mesh.vertices, mesh.faces) == triangles(ref_v, ref_f)
    assert closed(mesh.vertices, mesh.faces)


def test_mise_evaluates_a_small_fraction_of_the_dense_grid() -> None:
    mesh, values = extract(sphere(0.35), 128)
    assert mesh.stats["evaluations"] == values.count
    assert mesh.stats["evaluations"] < 129**3 / 10


def test_re_extraction_at_another_threshold_matches_a_fresh_one_and_reuses_values() -> None:
    fn = sphere(0.3, sharpness=8.0)  # tau 0.5 -> radius 0.3; tau 0.2 -> 0.373; tau 0.8 -> 0.227
    first, values = extract(fn, 64, 0.5)
    for tau in (0.2, 0.8):
        again, values = extract(fn, 64, tau, values)
        fresh, _ = extract(fn, 64, tau)
        assert triangles(again.vertices, again.faces) == triangles(fresh.vertices, fresh.faces)
        assert 0 < again.stats["evaluations"] < fresh.stats["evaluations"]
    back, values = extract(fn, 64, 0.5, values)
    assert back.stats["evaluations"] == 0  # everything needed at 0.5 is known
    assert triangles(back.vertices, back.faces) == triangles(first.vertices, first.faces)


def test_lattice_values_store_fetch_and_cubes() -> None:
    values = LatticeValues(33)
    pts = np.array([[0, 0, 0], [5, 6, 7], [32, 32, 32], [5, 6, 7]], np.int32)
    assert np.isnan(values.get(pts)).all()
    calls = []

    def evaluate(p: np.ndarray) -> np.ndarray:
        calls.append(len(p))
        return p.sum(axis=1).astype(np.float32)

    got, n = values.fetch(pts, evaluate)
    assert n == 3 and calls == [3]  # the repeated point is evaluated once
    np.testing.assert_array_equal(got, [0, 18, 96, 18])
    got, n = values.fetch(pts, evaluate)
    assert n == 0 and calls == [3]
    assert values.count == 3
    # whole cubes read the same values as single points, NaN where unknown or off the lattice
    origins = np.array([[4, 4, 4], [-4, 0, 0], [32, 32, 28]])
    cubes = values.get_cubes(origins, 5)
    for origin, cube in zip(origins, cubes, strict=True):
        local = np.stack(np.meshgrid(*[np.arange(5)] * 3, indexing="ij"), -1).reshape(-1, 3)
        expected = np.full(len(local), np.nan, np.float32)
        on = ((origin + local >= 0) & (origin + local < 33)).all(axis=1)
        expected[on] = values.get(origin + local[on])
        np.testing.assert_array_equal(cube.reshape(-1), expected)
    assert not np.isnan(cubes[0, 1, 2, 3])  # (5, 6, 7) is inside the first cube


def test_pymcubes_conventions_the_sparse_extraction_relies_on() -> None:
    """Triangles come cell by cell in C order, a fixed number per corner code; inside is '> level'."""
    from backend.engine.marching import _cell_codes, _triangle_counts

    rng = np.random.default_rng(0)
    vol = rng.normal(size=(9, 7, 8)).astype(np.float32)
    verts, faces = mcubes.marching_cubes(vol, 0.0)
    counts = _triangle_counts()[_cell_codes(vol > 0.0)]
    assert counts.sum() == len(faces)
    cells = np.repeat(np.argwhere(np.ones(counts.shape, bool)), counts.reshape(-1), axis=0)
    np.testing.assert_array_equal(cells, np.floor(verts[faces].mean(axis=1)).astype(int))
    tie = np.full((2, 2, 2), -1.0)
    tie[0, 0, 0] = 0.0
    assert len(mcubes.marching_cubes(tie, 0.0)[1]) == 0  # a value equal to the level is outside


@pytest.mark.parametrize("bad", [0, 16, 48, 96, 1024, 128.0, True, "128"])
def test_resolution_must_be_32_times_a_power_of_two_up_to_512(bad: object) -> None:
    with pytest.raises(InputError, match="resolution"):
        check_resolution(bad)


def test_valid_resolutions() -> None:
    assert [check_resolution(r) for r in (32, 64, 128, 256, 512)] == [32, 64, 128, 256, 512]
    assert Grid(512).depth == 4 and Grid(32).depth == 0


def test_memory_stays_bounded_at_512() -> None:
    """A 512^3 extraction keeps its values sparse: far less memory than one dense 513^3 grid.

    tracemalloc sees every numpy allocation (the value store, MISE's and marching cubes'
    temporaries, the mesh); the torch tensors of a chunk are a few MB on top.
    """
    import tracemalloc

    dense_bytes = 513**3 * 4  # float32 values of a dense grid alone: 515 MB
    tracemalloc.start()
    try:
        mesh, values = extract(sphere(0.3), 512)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert closed(mesh.vertices, mesh.faces) and len(mesh.faces) > 500_000
    assert values.nbytes < dense_bytes / 8
    assert peak < dense_bytes / 2, f"peak {peak / 2**20:.0f} MB"
