"""Fitting the surface to the scan: vertices move onto dense points, and only there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trimesh

from backend.engine.extract import extract_mesh
from backend.engine.field import FunctionField
from backend.engine.fit import MIN_POINTS, RADIUS, Scan, fit_to_points, ring_mean, vertex_normals
from backend.engine.grid import Grid
from backend.engine.lattice import LatticeValues
from backend.engine.observation import UserFrame
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import Observation, ReconstructOptions


def sphere_mesh(radius: float) -> tuple[np.ndarray, np.ndarray]:
    mesh = trimesh.creation.icosphere(4, radius=radius)
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)


def sphere_points(radius: float, n: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    d = rng.normal(size=(n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    return (radius * d + rng.normal(0, noise, (n, 3))).astype(np.float32)


def test_normals_point_out_and_the_ring_mean_keeps_constants() -> None:
    vertices, faces = sphere_mesh(0.3)
    normals = vertex_normals(vertices.astype(np.float64), faces)
    radial = vertices / np.linalg.norm(vertices, axis=1, keepdims=True)
    assert (normals * radial).sum(1).min() > 0.99
    np.testing.assert_allclose(ring_mean(np.full(len(vertices), 2.5), faces), 2.5)
    spike = np.zeros(len(vertices))
    spike[0] = 1.0
    spread = ring_mean(spike, faces)
    assert 0 < spread[0] < 1 and np.count_nonzero(spread) == 1 + 5  # icosphere vertex 0 has 5 neighbours


def test_a_dense_scan_pulls_the_surface_onto_itself() -> None:
    vertices, faces = sphere_mesh(0.30)
    points = sphere_points(0.31, 30_000, noise=0.003)
    fitted = fit_to_points(vertices, faces, Scan(points))
    before = np.abs(np.linalg.norm(vertices, axis=1) - 0.31)
    after = np.abs(np.linalg.norm(fitted, axis=1) - 0.31)
    assert before.mean() > 0.0099 and after.mean() < 0.0015  # noise 0.003 averaged out
    assert fitted.dtype == vertices.dtype and fitted.shape == vertices.shape


def test_where_the_scan_has_no_points_the_network_decides() -> None:
    vertices, faces = sphere_mesh(0.30)
    points = sphere_points(0.31, 30_000)
    points = points[points[:, 2] > 0.1]  # a scan from above: the underside is missing
    fitted = fit_to_points(vertices, faces, Scan(points))
    far_below = vertices[:, 2] < 0.1 - RADIUS - 0.05  # beyond the evidence and the smoothing
    np.testing.assert_array_equal(fitted[far_below], vertices[far_below])
    above = vertices[:, 2] > 0.15
    assert np.abs(np.linalg.norm(fitted[above], axis=1) - 0.31).max() < 0.002
    # a sparse cloud (fewer than MIN_POINTS near any vertex) leaves the mesh as it is
    sparse = sphere_points(0.31, 60)
    assert np.array_equal(fit_to_points(vertices, faces, Scan(sparse)), vertices)
    assert np.array_equal(fit_to_points(vertices, faces, Scan(points[: MIN_POINTS - 1])), vertices)


def test_a_thin_wall_keeps_its_thickness() -> None:
    """Points on the far side of a wall 0.015 thick barely count for a vertex on the near side."""
    box = trimesh.creation.box((0.6, 0.6, 0.015))
    box = box.subdivide().subdivide().subdivide().subdivide()
    vertices, faces = np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int64)
    rng = np.random.default_rng(0)
    xy = rng.uniform(-0.3, 0.3, (40_000, 2))
    points = np.concatenate(
        [np.c_[xy[:20_000], np.full(20_000, 0.0075)], np.c_[xy[20_000:], np.full(20_000, -0.0075)]]
    ).astype(np.float32)
    fitted = fit_to_points(vertices, faces, Scan(points))
    inner = (np.abs(vertices[:, :2]) < 0.25).all(axis=1)
    assert np.abs(np.abs(fitted[inner, 2]) - 0.0075).max() < 0.001


def test_extraction_fits_point_clouds_only_when_asked() -> None:
    points = sphere_points(0.31, 20_000)

    def extract(fit: bool, cloud: np.ndarray | None) -> np.ndarray:
        field = FunctionField(lambda p: 200.0 * (0.3 - p.norm(dim=-1)))  # a sphere of radius 0.3
        options = ReconstructOptions(tau=0.5, resolution=64, fit_points=fit)
        result = extract_mesh(
            field,
            LatticeValues(65),
            Grid(64),
            UserFrame.identity(),
            0.5,
            options,
            points=None if cloud is None else Scan(cloud),
        )
        assert ("fit" in result.timings) == (fit and cloud is not None)
        return np.linalg.norm(result.vertices, axis=1)

    assert abs(np.median(extract(True, points)) - 0.31) < 0.001
    assert abs(np.median(extract(False, points)) - 0.30) < 0.002
    assert abs(np.median(extract(True, None)) - 0.30) < 0.002


def test_re_extraction_fits_to_the_same_points(engine_weights: Path) -> None:
    engine = Reconstructor("cpu", weights_dir=engine_weights)
    observation = Observation(points=sphere_points(0.4, 20_000, noise=0.002) * 3 + 5)  # a user's frame
    first = engine.reconstruct("points", observation, ReconstructOptions(resolution=64))
    plain = engine.reconstruct("points", observation, ReconstructOptions(resolution=64, fit_points=False))
    assert first.field_id is not None and np.array_equal(first.faces, plain.faces)
    assert "fit" in first.timings and "fit" not in plain.timings
    again = engine.extract(first.field_id, first.tau)
    np.testing.assert_array_equal(again.vertices, first.vertices)
    entry = engine.cache.get(first.field_id)
    assert entry.points is not None and entry.nbytes > entry.points.nbytes > 0
    assert len(entry.points) == 300  # what this model reads (it subsamples to its training size)


@pytest.mark.parametrize("argv", [[], ["--no-fit"]])
def test_the_command_line_takes_no_fit(argv: list[str]) -> None:
    import argparse

    from backend.commands.reconstruct import add_model_arguments, options_from

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert options_from(parser.parse_args(argv)).fit_points == (not argv)
