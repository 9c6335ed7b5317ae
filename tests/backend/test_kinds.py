"""The kinds of observation: one registry that every part of the backend asks, agreeing with the
wire's list of kinds and with the add-on's readers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.checkpoint import ModelMeta
from backend.config import ModelConfig
from backend.data.cameras import Cameras
from backend.engine.types import InputError, Observation, ReconstructOptions
from backend.kinds import OBSERVED, REGISTRY, kind, observed_kind
from backend.models import build_model
from backend.models.views import ViewSet
from backend.wire.constants import KIND_ARRAYS, MODEL_KINDS
from occupancy_addon.readers import BY_KIND

TINY = {"hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16, "encoder_width": 4, "image_size": 32}
PICTURE = np.pad(np.zeros((4, 4, 3), np.uint8), ((2, 2), (2, 2), (0, 0)), constant_values=255)  # on white
EXAMPLE = {
    "points": np.random.default_rng(0).normal(size=(50, 3)),
    "voxels": np.ones((4, 4, 4), bool),
    "image": PICTURE,
    "views": np.stack([PICTURE, PICTURE]),  # two cameras that both see the object in the middle
}
COMPANIONS = {
    "views": {
        "cameras": Cameras.look_at(
            torch.tensor([[3.0, 0.0, 0.0], [0.0, -3.0, 1.0]]), torch.zeros(2, 3), torch.full((2,), 40.0)
        ).to_array()
    }
}


def test_every_kind_on_the_wire_has_one_module_and_the_add_on_reads_the_observed_ones() -> None:
    assert tuple(REGISTRY) == MODEL_KINDS
    assert set(BY_KIND) == {name for name, k in REGISTRY.items() if k.array is not None}
    with pytest.raises(KeyError, match="known: pointcloud, voxels, image, views, unconditional"):
        kind("mesh")


@pytest.mark.parametrize("array", list(OBSERVED))
def test_an_observation_names_its_kind(array: str) -> None:
    assert observed_kind(Observation(**{array: EXAMPLE[array]})) is OBSERVED[array]


def test_an_observation_with_two_arrays_or_stray_bounds_is_refused() -> None:
    with pytest.raises(InputError, match="exactly one of points, voxels, image or views, got points, image"):
        observed_kind(Observation(points=EXAMPLE["points"], image=EXAMPLE["image"]))
    with pytest.raises(InputError, match="bounds only apply to a voxel grid"):
        observed_kind(Observation(points=EXAMPLE["points"], bounds=np.zeros((2, 3))))


@pytest.mark.parametrize(
    ("name", "local"),
    [
        (n, local)
        for n, k in REGISTRY.items()
        if k.array is not None
        for local in (False, True)
        if local or n != "views"  # a views model always reads its views at each point
    ],
)
def test_the_network_takes_what_its_kind_prepares(name: str, local: bool) -> None:
    """A user's observation, prepared by the kind, encodes and decodes in a model of that kind."""
    spec = kind(name)
    cfg = ModelConfig(**TINY, kind=name, local_features=local, grid_res=8)  # type: ignore[arg-type]
    model = build_model(cfg).eval()
    assert model.input_shape == spec.input_shape(spec.input_size(cfg))
    meta = ModelMeta("m", name, 0.5, vars(cfg))  # type: ignore[arg-type]
    given = {spec.array: EXAMPLE[spec.array], **COMPANIONS.get(name, {})}
    prepared = spec.prepare(Observation(**given), meta, ReconstructOptions())
    with torch.no_grad():
        c, obs = model.encode_local(prepared.inputs)
        logits = model.decode(torch.zeros(1, 5, 3), None, c, obs)
    assert logits.shape == (1, 5)


@pytest.mark.parametrize("name", [n for n, k in REGISTRY.items() if k.array is not None])
def test_the_identity_symmetry_leaves_an_observation_as_it_is(name: str) -> None:
    spec = kind(name)
    perm, sign = spec.symmetries(64, torch.Generator().manual_seed(0))
    assert (perm.sort(dim=1).values == torch.arange(3)).all() and set(sign.unique().tolist()) <= {-1.0, 1.0}
    if spec.viewed:  # the camera's view axis stays put
        assert (perm[:, 2] == 2).all() and (sign[:, 2] == 1).all()
    cameras = torch.from_numpy(COMPANIONS["views"]["cameras"])[None].repeat(2, 1, 1)
    inputs = {
        "pointcloud": torch.rand(2, 7, 3),
        "voxels": torch.rand(2, 4, 4, 4),
        "image": torch.rand(2, 3, 6, 6),
        "views": ViewSet(torch.rand(2, 2, 3, 6, 6), cameras, torch.tensor([1, 2])),
    }
    x = inputs[name]
    same = spec.augment(x, torch.arange(3).repeat(2, 1), torch.ones(2, 3))
    if isinstance(x, ViewSet):
        assert isinstance(same, ViewSet) and torch.equal(same.images, x.images)
        torch.testing.assert_close(same.cameras, x.cameras)
    else:
        assert isinstance(same, torch.Tensor) and torch.equal(same, x)


def test_the_server_reads_requests_without_loading_torch(repo_root: Path) -> None:
    """Each kind's wire arrays live in the torch-free wire package, so the backend process can start
    and answer (e.g. that torch is missing) before torch loads."""
    code = "import sys, backend.serving.server, backend.serving.requests; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=repo_root, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
    assert {k: (v.array, *v.extra_arrays) for k, v in REGISTRY.items() if v.array} == {
        k: v for k, v in KIND_ARRAYS.items() if v
    }
