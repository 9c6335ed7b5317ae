"""Cameras for reference pictures, and the renderer that draws through them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backend.data.cameras import (
    ELEVATION_RANGE,
    FILL_RANGE,
    FOV_RANGE,
    OUTSIDE_ELEVATION,
    OUTSIDE_FILL,
    OUTSIDE_FOV,
    SET_FILL,
    Cameras,
    random_cameras,
    set_cameras,
)
from backend.data.render import render_views
from backend.models.local import project
from backend.wire.views import crop_rows


def test_the_canonical_camera_is_the_image_models_camera() -> None:
    p = torch.rand(1, 200, 3) - 0.5
    uv, depth = Cameras.canonical().project(p)
    grid = project(p)  # grid_sample's coordinates: x right, y down
    torch.testing.assert_close(torch.stack([uv[..., 0], -uv[..., 1]], -1), grid)
    assert bool((depth > 0).all())


def _cameras(n: int = 3) -> Cameras:
    eye = torch.tensor([[3.0, 0.5, 1.0], [-1.0, -2.0, 0.5], [0.2, 0.1, 4.0]])[:n]
    return Cameras.look_at(eye, torch.zeros(n, 3), torch.tensor([30.0, 45.0, 60.0])[:n])


def test_rays_and_projection_agree() -> None:
    cameras = _cameras()
    size = 8
    dirs = cameras.rays(size)
    distances = torch.linspace(0.5, 7.0, size * size)[:, None]  # any distance along each ray
    along = cameras.centre[:, None] + dirs * distances
    uv, depth = cameras.project(along)
    t = (torch.arange(size) + 0.5) / size * 2 - 1
    v, u = torch.meshgrid(-t, t, indexing="ij")  # row-major from the top-left pixel
    expected = torch.stack([u, v], -1).reshape(1, -1, 2).expand_as(uv)
    torch.testing.assert_close(uv, expected, atol=1e-5, rtol=0)
    assert bool((depth > 0).all())


def test_projection_keeps_float32_under_autocast() -> None:
    """``--half`` runs a views model's features under bfloat16 autocast; the points' picture
    coordinates must not be rounded with them (a rough surface, measured)."""
    cameras = _cameras()
    p = torch.rand(cameras.centre.shape[0], 500, 3) - 0.5
    exact = cameras.project(p)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = cameras.project(p)
    assert half[0].dtype == torch.float32
    torch.testing.assert_close(half, exact, atol=0, rtol=0)


def test_look_at_centres_the_target_with_the_world_up_upwards() -> None:
    cameras = _cameras()
    uv, depth = cameras.project(torch.zeros(3, 1, 3))
    torch.testing.assert_close(uv, torch.zeros(3, 1, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(depth[:, 0], cameras.centre.norm(dim=-1))
    above, _ = cameras.project(torch.tensor([0.0, 0.0, 0.3]).expand(3, 1, 3))
    assert bool((above[:, 0, 1] > 0).all())  # +z looks up in the picture (even from straight above: +y)
    quarter = torch.full((3,), 90.0)
    rolled = Cameras.look_at(cameras.centre, torch.zeros(3, 3), torch.full((3,), 40.0), quarter)
    side, _ = rolled.project(torch.tensor([0.0, 0.0, 0.3]).expand(3, 1, 3))
    torch.testing.assert_close(side[:, 0, 1], torch.zeros(3), atol=1e-5, rtol=0)  # turned a quarter:
    assert bool((side[:2, 0, 0].abs() > 0.05).all())  # up now points sideways (the third looks down on it)
    rotation = cameras.rotation
    identity = torch.eye(3).expand(3, 3, 3)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), identity, atol=1e-6, rtol=0)


def test_a_crop_is_the_same_camera_with_another_lens() -> None:
    cameras = _cameras()
    p = torch.rand(3, 50, 3) - 0.5
    uv, _ = cameras.project(p)
    centre, half = torch.tensor([[0.1, -0.2], [0.0, 0.0], [-0.3, 0.25]]), torch.tensor([0.5, 0.8, 0.3])
    cropped, _ = cameras.crop(centre, half).project(p)
    torch.testing.assert_close(cropped, (uv - centre[:, None]) / half[:, None, None])


def _pixels(cameras: Cameras, p: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Where points land in (width, height) pictures, in pixels from the top-left corner."""
    uv, _ = cameras.project(p)
    half = max(width, height) / 2
    return torch.stack([width / 2 + uv[..., 0] * half, height / 2 - uv[..., 1] * half], -1)


@pytest.mark.parametrize("box", [(0, 0, 600, 398), (-3, -50, 640, 640), (17, 5, 101, 333)])
def test_a_picture_cut_or_padded_keeps_every_point_on_its_pixel(box: tuple[int, int, int, int]) -> None:
    """The add-on's trim of a shrunk picture, a pad around it, an off-centre crop: each point
    lands on the same pixel of the picture, moved by the box's corner."""
    cameras, p = _cameras(), torch.rand(3, 50, 3) - 0.5
    rows = crop_rows(cameras.to_array(), (605, 401), box)
    moved = _pixels(Cameras.from_array(rows), p, box[2], box[3])
    expected = _pixels(cameras, p, 605, 401) - torch.tensor(box[:2], dtype=torch.float32)
    torch.testing.assert_close(moved, expected, atol=1e-3, rtol=0)


def test_cameras_round_trip_through_arrays() -> None:
    cameras = _cameras().crop(torch.tensor([[0.1, 0.2]] * 3), torch.full((3,), 0.7))
    array = cameras.to_array()
    assert array.shape == (3, 15) and array.dtype == np.float32
    again = Cameras.from_array(array)
    for name in ("rotation", "centre", "focal", "principal"):
        torch.testing.assert_close(getattr(again, name), getattr(cameras, name))


def _in_bands(values: torch.Tensor, bands: tuple[tuple[float, float], ...], slack: float = 1e-3) -> bool:
    inside = torch.zeros_like(values, dtype=torch.bool)
    for low, high in bands:
        inside |= (values >= low - slack) & (values <= high + slack)
    return bool(inside.all())


@pytest.mark.parametrize("outside", [False, True])
def test_random_cameras_follow_the_training_ranges_or_the_bands_beyond_them(outside: bool) -> None:
    rng = np.random.default_rng(3)
    surface = rng.uniform(-0.5, 0.5, (3000, 3)) * [1.0, 0.2, 0.6]  # a flat object: its outline frames it
    cameras = random_cameras(surface, 64, rng, outside=outside)
    uv, depth = cameras.project(torch.tensor(surface, dtype=torch.float32).expand(64, -1, -1))
    assert bool((depth > 0).all())
    fill = (uv.max(1).values - uv.min(1).values).max(-1).values / 2
    fov = torch.rad2deg(2 * torch.atan(1 / cameras.focal))
    seen_from = cameras.centre - torch.tensor(0.5 * (surface.min(0) + surface.max(0)), dtype=torch.float32)
    elevation = torch.rad2deg(torch.asin(seen_from[:, 2] / seen_from.norm(dim=-1)))
    # roll: the angle of the world's up in the picture, from the picture's up
    up = torch.einsum("vij,j->vi", cameras.rotation, torch.tensor([0.0, 0.0, 1.0]))
    roll = torch.rad2deg(torch.atan2(up[:, 0], up[:, 1])).abs()
    if outside:
        assert _in_bands(fill, OUTSIDE_FILL, 0.015) and _in_bands(fov, OUTSIDE_FOV)
        assert _in_bands(elevation, OUTSIDE_ELEVATION) and _in_bands(roll, ((10.0, 25.0),))
        assert float(fov.min()) < 20 and float(fov.max()) > 60  # both bands are used
        return
    assert _in_bands(fill, (FILL_RANGE,), 0.015) and _in_bands(fov, (FOV_RANGE,))
    assert float(fill.min()) < 0.6 and float(fill.max()) > 0.85  # the range is used, not one value
    assert _in_bands(elevation, (ELEVATION_RANGE,)) and _in_bands(roll, ((0.0, 10.0),))


def test_views_are_drawn_through_their_cameras() -> None:
    radius = 0.4

    def sphere(p: torch.Tensor) -> torch.Tensor:
        return p.norm(dim=-1) - radius

    cameras = _cameras()
    size = 96
    found = []
    for seed in range(6):  # materials, backdrops, noise and JPEG vary with the seed
        rgba, mask = render_views(sphere, cameras, size, np.random.default_rng(seed))
        assert rgba.shape == (3, size, size, 4) and rgba.dtype == np.uint8 and mask.shape == (3, size, size)
        # the sphere's outline through each camera: a disc of angular radius asin(r / d)
        distance = cameras.centre.norm(dim=-1)
        disc = cameras.focal * torch.tan(torch.asin(radius / distance))  # in picture units (-1..1)
        expected = math.pi * disc**2 / 4
        np.testing.assert_allclose(mask.mean(axis=(1, 2)), expected.numpy(), rtol=0.05)
        alpha = rgba[..., 3]
        assert np.all(alpha[mask] == 255)
        transparent = (alpha == 0).any(axis=(1, 2))
        for i in range(3):  # a transparent picture is clear exactly off the object
            if transparent[i]:
                assert np.array_equal(alpha[i] == 255, mask[i])
        found.extend(transparent)
    assert any(found) and not all(found)


def test_pictures_lit_outside_the_training_ranges_are_darker_and_noisier() -> None:
    """Dim ambient light and a key light from behind leave the object's visible side darker."""

    def sphere(p: torch.Tensor) -> torch.Tensor:
        return p.norm(dim=-1) - 0.4

    cameras = _cameras()
    shades = {}
    for outside in (False, True):
        values = []
        for seed in range(8):
            rgba, mask = render_views(sphere, cameras, 48, np.random.default_rng(seed), outside=outside)
            values.append(rgba[..., :3][mask].mean())
        shades[outside] = float(np.mean(values))
    assert shades[True] < 0.7 * shades[False]


def test_a_named_set_looks_from_the_front_the_side_and_above() -> None:
    rng = np.random.default_rng(4)
    surface = rng.uniform(-0.5, 0.5, (3000, 3)) * [1.0, 0.4, 0.7]
    cameras = set_cameras(surface, "front-side-top")
    centre = torch.tensor(0.5 * (surface.min(0) + surface.max(0)), dtype=torch.float32)
    seen_from = cameras.centre - centre
    seen_from = seen_from / seen_from.norm(dim=-1, keepdim=True)
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(seen_from, expected, atol=1e-5, rtol=0)
    up = cameras.rotation[:, 1]  # the camera's up axis in the world: +z, and +y seen from above
    torch.testing.assert_close(
        up, torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), atol=1e-5, rtol=0
    )
    uv, _ = cameras.project(torch.tensor(surface, dtype=torch.float32).expand(3, -1, -1))
    fill = (uv.max(1).values - uv.min(1).values).max(-1).values / 2
    torch.testing.assert_close(fill, torch.full((3,), SET_FILL), atol=0.015, rtol=0)
