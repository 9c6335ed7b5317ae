"""The networks: every kind builds and trains a step, the original's sizes, and bad inputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

from backend.config import ModelConfig
from backend.models import OccupancyNetwork, build_model
from backend.models.onet import ModelInputError

TINY = {"hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16, "encoder_width": 4, "image_size": 32}
KINDS: dict[str, dict[str, Any]] = {
    "pointcloud": {"kind": "pointcloud"},
    "voxels": {"kind": "voxels"},
    "image": {"kind": "image"},
    "unconditional": {"kind": "unconditional", "decoder": "simple", "c_dim": 0, "z_dim": 8},
}


def tiny(kind: str, **overrides: Any) -> OccupancyNetwork:
    torch.manual_seed(0)
    return build_model(ModelConfig(**{**TINY, **KINDS[kind], **overrides}))


def observation(kind: str, batch: int = 2) -> torch.Tensor | None:
    return {
        "pointcloud": lambda: torch.rand(batch, 40, 3) - 0.5,
        "voxels": lambda: (torch.rand(batch, 32, 32, 32) > 0.8).float(),
        "image": lambda: torch.rand(batch, 3, 32, 32),
        "unconditional": lambda: None,
    }[kind]()


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_kind_encodes_decodes_and_takes_a_training_step(kind: str) -> None:
    model = tiny(kind)
    p, occ = torch.rand(2, 64, 3) - 0.5, (torch.rand(2, 64) > 0.5).float()
    loss, parts = model.loss(p, occ, observation(kind))
    loss.backward()
    assert torch.isfinite(loss) and parts["bce"] > 0
    assert all(q.grad is not None for q in model.decoder.parameters())
    model.eval()
    with torch.no_grad():
        c = model.encode(observation(kind), batch_size=2)
        logits = model.decode(p, model.sample_z(2), c)
    assert c.shape == (2, model.c_dim) and logits.shape == (2, 64)


def _linear(i: int, o: int, bias: bool = True) -> int:
    return i * o + (o if bias else 0)


def _cbn_decoder(c: int, h: int = 256, blocks: int = 5) -> int:
    """The original's DecoderCBatchNorm: fc_p, blocks of 2 CBN + 2 layers, a final CBN, fc_out."""
    cbn = 2 * _linear(c, h)  # gamma and beta; the batch norm itself is not affine
    return _linear(3, h) + blocks * (2 * cbn + 2 * _linear(h, h)) + cbn + _linear(h, 1)


def _resnet_pointnet(c: int, h: int) -> int:
    block = _linear(2 * h, h) + _linear(h, h) + _linear(2 * h, h, bias=False)
    return _linear(3, 2 * h) + 5 * block + _linear(h, c)


def _voxel_encoder(c: int) -> int:
    channels = [1, 32, 64, 128, 256, 512]
    convs = sum(a * b * 27 + b for a, b in zip(channels, channels[1:], strict=False))
    return convs + _linear(512 * 8, c)


def _resnet18(c: int) -> int:
    """torchvision's ResNet-18 without its 1000-class layer (11,176,512), plus Linear(512, c)."""
    return 11_176_512 + _linear(512, c)


def _simple_decoder(z: int, h: int = 128) -> int:
    return _linear(3, h) + _linear(z, h) + 5 * 2 * _linear(h, h) + _linear(h, 1)


def _latent_encoder(z: int, h: int = 128) -> int:
    return _linear(3, h) + _linear(1, h) + _linear(h, h) + 2 * _linear(2 * h, h) + 2 * _linear(h, z)


# The published configurations (configs/*/onet.yaml of the original), with their module sizes.
ORIGINAL: dict[str, tuple[dict[str, Any], dict[str, int]]] = {
    "pointcloud": (
        {"kind": "pointcloud", "hidden": 256, "c_dim": 512, "encoder_hidden": 512},
        {"decoder": _cbn_decoder(512), "encoder": _resnet_pointnet(512, 512)},
    ),
    "voxels": (
        {"kind": "voxels", "hidden": 256, "c_dim": 256, "encoder_width": 32},
        {"decoder": _cbn_decoder(256), "encoder": _voxel_encoder(256)},
    ),
    "image": (
        {"kind": "image", "hidden": 256, "c_dim": 256, "encoder_width": 64, "image_size": 224},
        {"decoder": _cbn_decoder(256), "encoder": _resnet18(256)},
    ),
    "unconditional": (
        {"kind": "unconditional", "decoder": "simple", "hidden": 128, "c_dim": 0, "z_dim": 128},
        {"decoder": _simple_decoder(128), "latent": _latent_encoder(128)},
    ),
}


@pytest.mark.parametrize("kind", list(ORIGINAL))
def test_the_original_published_configurations_are_instantiable(kind: str) -> None:
    config, sizes = ORIGINAL[kind]
    model = build_model(ModelConfig(**config)).eval()
    for module, expected in sizes.items():
        got = sum(p.numel() for p in getattr(model, module).parameters())
        assert got == expected, f"{module}: {got} parameters, the original has {expected}"
    assert _cbn_decoder(512) == 3_548_417 and _cbn_decoder(256) == 2_106_625  # the reference's ~3.5M, ~2.1M
    size = model.input_shape[-1] if kind == "image" else 32
    inputs = {
        "pointcloud": torch.rand(1, 300, 3) - 0.5,
        "voxels": torch.zeros(1, 32, 32, 32),
        "image": torch.rand(1, 3, size, size),
        "unconditional": None,
    }[kind]
    with torch.no_grad():
        logits = model.decode(torch.rand(1, 10, 3) - 0.5, model.sample_z(1), model.encode(inputs))
    assert logits.shape == (1, 10) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_predictions_do_not_depend_on_how_many_points_are_queried(
    kind: str, tiny_model: Callable[..., OccupancyNetwork]
) -> None:
    model = tiny_model(3, **KINDS[kind])  # random weights and batch-norm statistics
    p = torch.rand(1, 1000, 3) * 1.1 - 0.55
    with torch.no_grad():
        c, z = (
            model.encode(observation(kind, 1), batch_size=1),
            model.sample_z(1, torch.Generator().manual_seed(0)),
        )
        whole = model.decode(p, z, c)
        for chunk in (1, 7, 333):
            parts = torch.cat([model.decode(p[:, i : i + chunk], z, c) for i in range(0, 1000, chunk)], 1)
            torch.testing.assert_close(parts, whole, rtol=1e-4, atol=1e-4)  # float32 rounding only
        if (
            kind != "unconditional"
        ):  # the check means something: in training mode batch norm couples the points
            model.train()
            assert not torch.allclose(model.decode(p[:, :7], z, c), whole[:, :7], atol=1e-4)


BAD_INPUTS: list[tuple[str, Callable[[], object], str]] = [
    ("pointcloud", lambda: torch.rand(1, 10, 2), r"shape \(B, N, 3\), got \(1, 10, 2\)"),
    ("pointcloud", lambda: torch.rand(10, 3), r"shape \(B, N, 3\), got \(10, 3\)"),
    ("pointcloud", lambda: torch.rand(1, 0, 3), "empty"),
    ("pointcloud", lambda: torch.rand(0, 10, 3), "empty"),
    ("pointcloud", lambda: torch.ones(1, 10, 3, dtype=torch.int64), "floating-point.*int64"),
    ("pointcloud", lambda: torch.full((1, 10, 3), float("nan")), "NaN or infinite"),
    ("pointcloud", lambda: torch.tensor([[[0.0, float("inf"), 0.0]]]), "NaN or infinite"),
    ("pointcloud", lambda: None, "must be a torch tensor.*NoneType"),
    ("pointcloud", lambda: [[0.0, 0.0, 0.0]], "must be a torch tensor.*list"),
    ("voxels", lambda: torch.rand(1, 16, 16, 16), r"\(B, 32, 32, 32\), got \(1, 16, 16, 16\)"),
    ("voxels", lambda: torch.rand(1, 1, 32, 32, 32), r"got \(1, 1, 32, 32, 32\)"),
    ("voxels", lambda: torch.ones(1, 32, 32, 32, dtype=torch.bool), "floating-point.*bool"),
    ("image", lambda: torch.rand(1, 32, 32, 3), r"\(B, 3, 32, 32\), got \(1, 32, 32, 3\)"),
    ("image", lambda: torch.rand(1, 3, 64, 64), r"\(B, 3, 32, 32\), got \(1, 3, 64, 64\)"),
    ("unconditional", lambda: torch.rand(1, 10, 3), "takes no observation"),
]


@pytest.mark.parametrize(("kind", "make", "message"), BAD_INPUTS)
def test_bad_observations_raise_a_clear_error(kind: str, make: Callable[[], object], message: str) -> None:
    model = tiny(kind).eval()
    with pytest.raises(ModelInputError, match=message):
        model.encode(make())  # type: ignore[arg-type]


def test_bad_query_points_and_targets_raise_a_clear_error() -> None:
    model = tiny("pointcloud").eval()
    c = model.encode(observation("pointcloud"))
    with pytest.raises(ModelInputError, match=r"query points must have shape \(B, M, 3\), got \(5, 3\)"):
        model.decode(torch.rand(5, 3), None, c)
    with pytest.raises(ModelInputError, match="NaN or infinite values in query points"):
        model.decode(torch.full((2, 5, 3), float("nan")), None, c)
    with pytest.raises(ModelInputError, match=r"code c must have shape \(3, 16\)"):
        model.decode(torch.rand(3, 5, 3), None, c)
    model.train()
    p = torch.rand(2, 5, 3)
    with pytest.raises(ModelInputError, match=r"occupancy must have shape \(2, 5\)"):
        model.loss(p, torch.ones(2, 4), observation("pointcloud"))
    with pytest.raises(ModelInputError, match=r"targets must lie in \[0, 1\]"):
        model.loss(p, torch.full((2, 5), 2.0), observation("pointcloud"))
    with pytest.raises(ModelInputError, match="at least 2 query points"):
        model.loss(torch.rand(1, 1, 3), torch.ones(1, 1), observation("pointcloud", 1))


def test_no_query_points_give_no_logits_and_double_precision_inputs_are_converted() -> None:
    model = tiny("pointcloud").eval()
    with torch.no_grad():
        c = model.encode(observation("pointcloud").double())
        assert c.dtype == torch.float32
        assert model.decode(torch.zeros(2, 0, 3), None, c).shape == (2, 0)
