"""The folded inference decoders against the modules they replace."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from backend.engine.field import NetworkField
from backend.engine.fold import fold_decoder

KINDS: list[dict[str, Any]] = [
    {"kind": "pointcloud"},
    {"kind": "voxels"},
    {"kind": "image"},
    {"kind": "unconditional", "decoder": "simple", "c_dim": 0, "z_dim": 8},
    {"kind": "pointcloud", "z_dim": 4},  # a latent added after the first layer of the CBN decoder
]
INPUTS = {
    "pointcloud": lambda: torch.randn(1, 50, 3) * 0.3,
    "voxels": lambda: (torch.rand(1, 32, 32, 32) > 0.7).float(),
    "image": lambda: torch.rand(1, 3, 32, 32),
    "unconditional": lambda: None,
}


def code(model: Any, kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    torch.manual_seed(5)
    with torch.no_grad():
        return model.encode(INPUTS[kind](), 1), model.sample_z(1)


@pytest.mark.parametrize("config", KINDS, ids=lambda c: f"{c['kind']}-z{c.get('z_dim', 0)}")
def test_folded_decoder_equals_the_module(config: dict[str, Any], tiny_model: Callable[..., Any]) -> None:
    model = tiny_model(7, **config)
    c, z = code(model, config["kind"])
    folded = fold_decoder(model.decoder, z, c)
    assert folded is not None
    p = torch.rand(4000, 3) * 1.1 - 0.55
    with torch.no_grad():
        expected = model.decode(p[None], z, c)[0]
    with torch.inference_mode():
        fast = folded(p)
    scale = expected.abs().max().item()
    assert (fast - expected).abs().max().item() <= 1e-5 * max(scale, 1.0)
    # the differentiable path gives the module's gradients with respect to the points
    q = p[:500].clone().requires_grad_(True)
    (g_module,) = torch.autograd.grad(model.decode(q[None], z, c)[0].sum(), q)
    q2 = p[:500].clone().requires_grad_(True)
    (g_folded,) = torch.autograd.grad(folded.grad(q2).sum(), q2)
    torch.testing.assert_close(
        g_folded, g_module, rtol=1e-4, atol=1e-5 * max(g_module.abs().max().item(), 1.0)
    )


def test_unfoldable_decoders_fall_back_to_the_module(tiny_model: Callable[..., Any]) -> None:
    model = tiny_model(7, kind="pointcloud")
    c, z = code(model, "pointcloud")
    model.decoder.train()
    assert fold_decoder(model.decoder, z, c) is None  # batch statistics would change per chunk
    model.decoder.eval()
    assert fold_decoder(torch.nn.Linear(3, 1), None, c) is None


def test_network_field_is_the_same_with_and_without_folding(tiny_model: Callable[..., Any]) -> None:
    model = tiny_model(8, kind="voxels")
    c, _ = code(model, "voxels")
    points = (np.random.default_rng(0).random((3000, 3)) - 0.5).astype(np.float32)
    fast, plain = NetworkField(model, c), NetworkField(model, c, fold=False)
    assert fast.folded and not plain.folded
    np.testing.assert_allclose(fast.evaluate(points), plain.evaluate(points), rtol=1e-5, atol=1e-5)
    assert fast.evaluations == 3000
