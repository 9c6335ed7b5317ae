"""Local features: exact reads of the voxel grid, projection that agrees with the renderer, and an
engine field that matches the model (folded path and gradients included)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch

from backend.config import ConfigError, ModelConfig
from backend.data.render import render
from backend.engine.field import NetworkField
from backend.models import OccupancyNetwork
from backend.models.local import DISTANCE_SCALE, PointFeatures, VoxelFeatures, project
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


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "image"])
def test_engine_field_matches_the_model_and_has_gradients(
    kind: str, tiny_model: Callable[..., OccupancyNetwork]
) -> None:
    model = tiny_model(0, kind=kind, local_features=True)
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


def test_point_features_are_distances_to_the_nearest_points() -> None:
    points = torch.tensor([[[0.0, 0.0, 0.0], [0.3, 0.0, 0.0]]])
    p = torch.tensor([[[0.1, 0.0, 0.0], [0.0, 0.4, 0.0]]])
    feats = PointFeatures()(p, points)[0] / DISTANCE_SCALE
    torch.testing.assert_close(feats[:, 0], torch.tensor([0.1, 0.4]))
    torch.testing.assert_close(feats[:, 1], torch.tensor([0.15, 0.45]))


def test_local_features_need_an_observation() -> None:
    with pytest.raises(ConfigError, match="local_features"):
        ModelConfig(kind="unconditional", decoder="simple", c_dim=0, z_dim=8, local_features=True).validate()
