"""Local features: exact reads of the voxel grid and the point U-Net's grid, projection that agrees with
the renderer, and an engine field that matches the model (folded path and gradients included)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from backend.config import ConfigError, ModelConfig
from backend.data.render import render
from backend.engine.field import NetworkField
from backend.models import OccupancyNetwork
from backend.models.encoders import GRID_HALF, PointGridUNet
from backend.models.local import GridFeatures, VoxelFeatures, project
from backend.models.onet import ModelInputError


def random_grid(seed: int) -> torch.Tensor:
    return (torch.rand(1, 32, 32, 32, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_full_resolution_feature_is_the_voxel_at_its_centre() -> None:
    vox = random_grid(0)
    ix = torch.randint(0, 32, (200, 3), generator=torch.Generator().manual_seed(1))
    centres = (ix.float() + 0.5) / 32 - 0.5  # grid[x, y, z] spans [-0.5, 0.5]^3
    feats = VoxelFeatures()(centres[None], vox)[0]
    assert torch.equal(feats[:, 0], vox[0, ix[:, 0], ix[:, 1], ix[:, 2]] - 0.5)


def test_outside_the_grid_reads_as_empty_at_every_scale() -> None:
    vox = torch.ones(1, 32, 32, 32)
    far = torch.tensor([[[0.9, 0.0, 0.0], [0.0, -0.8, 0.0], [0.0, 0.0, 0.7]]])
    assert torch.equal(VoxelFeatures()(far, vox), torch.full((1, 3, 3), -0.5))


@pytest.mark.parametrize("centre", [(0.25, 0.15, 0.0), (-0.2, 0.3, 0.3), (0.1, -0.3, -0.4)])
def test_projection_agrees_with_the_renderer(centre: tuple[float, float, float]) -> None:
    """A small sphere off the axis: its projected centre is on it, the mirrored spots are not."""
    c = torch.tensor(centre)
    image = render(lambda p: (p - c).norm(dim=-1) - 0.08, 1, 64, np.random.default_rng(0))[0]
    pixels = torch.from_numpy(image.astype(np.int32))
    hit = (pixels - pixels[0, 0]).abs().sum(-1) > 30  # differs from the background (a corner)

    def pixel(u: float, v: float) -> bool:
        return bool(hit[int((v + 1) / 2 * 64), int((u + 1) / 2 * 64)])

    u, v = project(c[None, None])[0, 0].tolist()
    assert pixel(u, v)
    assert not pixel(-u, v) and not pixel(u, -v)


@pytest.mark.parametrize(
    ("kind", "extra"),
    [("pointcloud", {}), ("voxels", {}), ("image", {}), ("image", {"pixel_stages": 3})],
)
def test_engine_field_matches_the_model_and_has_gradients(
    kind: str, extra: dict[str, int], tiny_model: Callable[..., OccupancyNetwork]
) -> None:
    model = tiny_model(0, kind=kind, local_features=True, **extra)
    g = torch.Generator().manual_seed(2)
    obs_in = {
        "pointcloud": torch.rand(1, 50, 3, generator=g) - 0.5,
        "voxels": random_grid(2),
        "image": torch.rand(1, 3, 32, 32, generator=g),
    }[kind]
    with torch.no_grad():
        c, obs = model.encode_local(obs_in)
    p = torch.rand(300, 3, generator=g) - 0.5
    with torch.no_grad():
        expected = model.decode(p[None], None, c, obs)[0]
    field = NetworkField(model, c, obs=obs)
    assert field.folded
    scale = float(expected.abs().max())  # random tiny models give large logits
    torch.testing.assert_close(
        torch.from_numpy(field.evaluate(p.numpy())), expected, rtol=1e-4, atol=1e-5 * scale
    )
    q = p.clone().requires_grad_(True)
    field.logits(q).sum().backward()
    assert q.grad is not None and bool(q.grad.abs().sum() > 0)


def test_a_local_model_refuses_to_decode_without_its_observation(
    tiny_model: Callable[..., OccupancyNetwork],
) -> None:
    model = tiny_model(0, kind="voxels", local_features=True)
    c, _ = model.encode_local(random_grid(0))
    with pytest.raises(ModelInputError, match="pass obs"):
        model.decode(torch.zeros(1, 4, 3), None, c)
    with pytest.raises(ModelInputError, match="pass obs"):
        NetworkField(model, c)  # the engine's field refuses too, before folding the decoder


def test_grid_features_read_each_cell_at_its_centre() -> None:
    grid = torch.randn(1, 5, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    ix = torch.randint(0, 8, (100, 3), generator=torch.Generator().manual_seed(1))
    centres = ((ix.float() + 0.5) / 8 * 2 - 1) * GRID_HALF  # grid[:, :, x, y, z]
    feats = GridFeatures(5)(centres[None], grid)[0]
    torch.testing.assert_close(feats, grid[0, :, ix[:, 0], ix[:, 1], ix[:, 2]].T)


def test_points_are_averaged_into_their_cells() -> None:
    """Two points share a cell, a third has its own; every other cell stays empty."""
    unet = PointGridUNet(c_dim=8, width=4, res=8)
    cell = 2 * GRID_HALF / 8
    points = torch.tensor([[[0.1, 0.1, 0.1], [0.12, 0.13, 0.11], [-0.5, 0.4, -0.05]]])
    grid = unet.scatter(points)[0]
    own = [tuple(int(v) for v in ((q + GRID_HALF) / cell).floor()) for q in points[0]]
    assert own[0] == own[1] and own[0] != own[2]
    with torch.no_grad():
        both = (grid[:, own[0][0], own[0][1], own[0][2]], grid[:, own[2][0], own[2][1], own[2][2]])
        cells = (points[0] + GRID_HALF) / cell
        feats = unet.point_mlp(torch.cat([points[0] * 2, (cells - cells.floor() - 0.5) * 2], -1))
    torch.testing.assert_close(both[0], feats[:2].mean(0))
    torch.testing.assert_close(both[1], feats[2])
    assert int((grid.abs().sum(0) > 0).sum()) == 2


def test_the_point_grid_model_ignores_the_order_of_the_points(
    tiny_model: Callable[..., OccupancyNetwork],
) -> None:
    model = tiny_model(0, kind="pointcloud", local_features=True)
    g = torch.Generator().manual_seed(3)
    points = torch.rand(1, 60, 3, generator=g) - 0.5
    p = torch.rand(1, 200, 3, generator=g) - 0.5
    with torch.no_grad():
        c, obs = model.encode_local(points)
        c2, obs2 = model.encode_local(points[:, torch.randperm(60, generator=g)])
        torch.testing.assert_close(model.decode(p, None, c, obs), model.decode(p, None, c2, obs2))


def test_local_features_need_an_observation() -> None:
    with pytest.raises(ConfigError, match="local_features"):
        ModelConfig(kind="unconditional", decoder="simple", c_dim=0, z_dim=8, local_features=True).validate()


def test_the_point_grid_must_halve_three_times() -> None:
    with pytest.raises(ConfigError, match="grid_res"):
        ModelConfig(grid_res=20).validate()


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_pixel_stages_add_the_coarser_stages_to_the_feature_map(
    stages: int, tiny_model: Callable[..., OccupancyNetwork]
) -> None:
    """The map is the first stage, RGB, then each further stage upsampled to the first's cells."""
    model = tiny_model(0, kind="image", local_features=True, pixel_stages=stages)
    width = 4  # the tiny models' encoder_width
    image = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, fmap = model.encode_local(image)
        outputs = model.encoder._stages(image)
    assert fmap.shape == (1, width + 3 + sum(width * 2**i for i in range(1, stages)), 8, 8)
    assert model.decoder.fc_p.weight.shape[1] == 3 + fmap.shape[1]
    torch.testing.assert_close(fmap[:, :width], outputs[0])
    lo = width + 3
    for i in range(1, stages):
        hi = lo + width * 2**i
        # bilinear upsampling by a power of two keeps each channel's mean over the image
        torch.testing.assert_close(fmap[:, lo:hi].mean((2, 3)), outputs[i].mean((2, 3)))
        lo = hi
