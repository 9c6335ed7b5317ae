"""Scans of any density: counts, noise, outliers, varying density and partial views, on a sphere
whose true surface is known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from backend.config import ConfigError, DataConfig, config_from_dict
from backend.data.scans import BOX_HALF, candidates, draw_count, random_eyes, simulate_scans, visible

RADIUS = 0.4


def sphere(k: int, b: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, k, 3) uniform samples on a sphere of radius 0.4 and their outward normals."""
    d = torch.randn(b, k, 3, generator=torch.Generator().manual_seed(seed))
    n = d / d.norm(dim=-1, keepdim=True)
    return RADIUS * n, n


def radial_error(points: torch.Tensor) -> torch.Tensor:
    return (points.norm(dim=-1) - RADIUS).abs()


def test_counts_are_log_uniform_between_the_bounds() -> None:
    cfg = DataConfig(n_points=100, n_points_max=30000)
    gen = torch.Generator().manual_seed(0)
    counts = torch.tensor([draw_count(cfg, gen) for _ in range(2000)], dtype=torch.float64)
    assert counts.min() >= 100 and counts.max() <= 30000
    # log-uniform: the median is the geometric mean of the bounds, and a third of the draws fall
    # in each decade-like third of the log range
    assert abs(math.log(counts.median().item()) - math.log(math.sqrt(100 * 30000))) < 0.15
    assert draw_count(DataConfig(n_points=300), gen) == 300


def test_clean_points_lie_on_the_surface_and_are_distinct_beyond_the_store() -> None:
    surface, normals = sphere(2048)
    points = simulate_scans(surface, normals, 20000, DataConfig(noise=0.0), torch.Generator().manual_seed(1))
    assert points.shape == (1, 20000, 3)
    assert radial_error(points).max() < 1e-3  # the tangent jitter stays on the surface
    assert len(torch.unique(points[0], dim=0)) == 20000  # ten times the stored samples, all distinct


def test_noise_is_drawn_per_shape_within_its_range() -> None:
    surface, normals = sphere(4096, b=64)
    cfg = DataConfig(noise=0.0, noise_max=0.01)
    points = simulate_scans(surface, normals, 2000, cfg, torch.Generator().manual_seed(2))
    std = (points.norm(dim=-1) - RADIUS).std(dim=1)
    assert std.max() < 0.0115 and std.min() < 0.003 and std.max() > 0.007


def test_outliers_are_uniform_in_the_box_and_bounded_in_share() -> None:
    surface, normals = sphere(4096, b=32)
    cfg = DataConfig(noise=0.0, outliers=0.02)
    points = simulate_scans(surface, normals, 5000, cfg, torch.Generator().manual_seed(3))
    stray = radial_error(points) > 0.01
    share = stray.float().mean(dim=1)
    assert share.max() <= 0.03 and share.mean() > 0.003
    assert points.abs().max() <= BOX_HALF


def test_density_varies_along_a_random_direction() -> None:
    surface, normals = sphere(8192, b=16)
    cfg = DataConfig(noise=0.0, density_gain=2.0)
    points = simulate_scans(surface, normals, 8000, cfg, torch.Generator().manual_seed(4))
    # the mean of a uniform sample of the sphere is ~0; a tilted density moves it off the centre
    offsets = points.mean(dim=1).norm(dim=-1)
    assert offsets.max() > 0.05


def test_a_single_viewpoint_sees_only_the_side_facing_it() -> None:
    surface, normals = sphere(8192)
    eye = torch.tensor([[[0.0, 0.0, 2.5]]])
    seen = visible(surface, normals, eye, torch.ones(1, 1, dtype=torch.bool))[0]
    assert (surface[0, seen, 2] > 0).all()
    assert 0.3 < seen.float().mean() < (1 - RADIUS / 2.5) / 2 + 0.01  # at most the visible cap


def test_a_surface_behind_another_is_hidden() -> None:
    front, n1 = sphere(4096, seed=5)
    back, n2 = sphere(4096, seed=6)
    surface = torch.cat([0.5 * front + torch.tensor([0, 0, 0.3]), 0.5 * back - torch.tensor([0, 0, 0.3])], 1)
    normals = torch.cat([n1, n2], 1)
    eye = torch.tensor([[[0.0, 0.0, 2.5]]])
    seen = visible(surface, normals, eye, torch.ones(1, 1, dtype=torch.bool))[0]
    assert seen[:4096].float().mean() > 0.3 and not seen[4096:].any()


def test_partial_scans_from_fixed_views_keep_only_seen_points() -> None:
    surface, normals = sphere(8192)
    gen = torch.Generator().manual_seed(7)
    points = simulate_scans(surface, normals, 3000, DataConfig(noise=0.0), gen, fixed_views=1)
    # one viewpoint sees one cap: the points' mean lies well off the centre
    assert points[0].mean(dim=0).norm() > 0.1
    both = simulate_scans(surface, normals, 3000, DataConfig(noise=0.0), gen, fixed_views=4)
    assert both.shape == (1, 3000, 3) and radial_error(both).max() < 1e-3


def test_eyes_are_outside_the_object() -> None:
    eyes = random_eyes(8, 4, torch.Generator().manual_seed(8))
    assert ((eyes.norm(dim=-1) >= 2) & (eyes.norm(dim=-1) <= 3.5)).all()


def test_candidates_cover_the_draw() -> None:
    assert candidates(30000, 100) == 2048
    assert candidates(30000, 5000) == 10000
    assert candidates(30000, 30000) == 30000
    assert candidates(1000, 300) == 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"n_points": 300, "n_points_max": 100}, "n_points_max"),
        ({"outliers": 0.9}, "outliers"),
        ({"partial_scans": 0.5, "scan_views": 0}, "scan_views"),
        ({"noise_max": -1.0}, "noise_max"),
    ],
)
def test_bad_scan_settings_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"data": data})
