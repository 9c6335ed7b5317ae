"""The views' outlines: their visual hull, and the field blended with it (backend/engine/outlines.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from backend.data.cameras import Cameras
from backend.engine.extract import check_options
from backend.engine.field import FunctionField
from backend.engine.framing import crop, frame, object_mask
from backend.engine.outlines import OUTLINE_WEIGHT_PER_VIEW, OutlinedField, Outlines
from backend.engine.types import InputError, ReconstructOptions
from backend.engine.views import prepare_views
from backend.wire.views import MAX_VIEWS
from tests.backend.test_engine_views import WORLD_CENTRE, WORLD_SCALE, world_views
from tests.backend.test_views import box


def test_a_crop_of_the_weights_matches_the_framed_picture() -> None:
    """``crop`` cuts what ``frame`` cut, wherever the object lies, even past the picture's edges."""
    rng = np.random.default_rng(3)
    for h, w, top, left in ((60, 90, 5, 70), (120, 40, 90, 2), (50, 50, 20, 20)):
        rgb = np.full((h, w, 3), 0.3, np.float32)
        rgb[top : top + 12, left : left + 9] = rng.uniform(0.6, 1.0, 3)
        weights = object_mask(rgb)
        square, framing = frame(rgb, weights)
        cut = rgb * weights[..., None] + (1.0 - weights[..., None])
        np.testing.assert_array_equal(crop(cut, framing, 1.0), square)
        mask = crop(weights, framing, 0.0)
        assert mask.shape == square.shape[:2] and mask.sum() == weights.sum()  # the whole object, once


def test_the_hull_holds_the_object_and_not_what_a_view_shows_as_background() -> None:
    pictures, cameras, surface, outline = world_views(3, seed=5)
    prepared = prepare_views(pictures, cameras, 64)
    assert prepared.outlines is not None and prepared.outlines.masks.shape == (3, 128, 128)
    frame_ = prepared.frame
    rng = np.random.default_rng(0)
    to_unit = lambda unit_box: frame_.to_unit(unit_box * (WORLD_SCALE / 0.8) + WORLD_CENTRE)  # noqa: E731
    inside = rng.uniform(-0.9, 0.9, (2000, 3)) * [0.4, 0.15, 0.25]  # well inside the box
    logits = prepared.outlines.hull_logits(torch.tensor(to_unit(inside)))
    assert float((logits > 0).float().mean()) > 0.99
    # points that some view shows over its backdrop, a pixel away from the outline or more
    world = Cameras.from_array(cameras)
    near = rng.uniform(-0.8, 0.8, (4000, 3))
    near = near[box(torch.tensor(near, dtype=torch.float32)).numpy() > 0.05]
    points = near * (WORLD_SCALE / 0.8) + WORLD_CENTRE
    uv, depth = world.project(torch.tensor(points, dtype=torch.float32).expand(3, -1, -1))
    size = outline.shape[-1]
    col = ((uv[..., 0] + 1) / 2 * size).long()
    row = ((1 - uv[..., 1]) / 2 * size).long()
    shown = torch.zeros(len(near), dtype=torch.bool)  # some view shows backdrop all around it
    for v in range(3):
        padded = np.pad(outline[v], 1)
        around = np.zeros(len(near), bool)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                r = (row[v] + 1 + dr).clamp(0, size + 1).numpy()
                c = (col[v] + 1 + dc).clamp(0, size + 1).numpy()
                around |= padded[r, c] > 0
        shown |= torch.from_numpy(~around) & (depth[v] > 0)
    assert int(shown.sum()) > 200
    outside = prepared.outlines.hull_logits(torch.tensor(to_unit(near[shown.numpy()])))
    assert float((outside < 0).float().mean()) > 0.99
    assert prepare_views(pictures, cameras, 64, outlines=False).outlines is None


def test_the_blend_lets_the_outline_decide_where_the_model_is_in_doubt() -> None:
    """Four views from one camera looking down -z at a picture whose left half is the object: the
    hull is the half-space x < 0 in front of it, with the largest share a hull gets (four views).
    At tau 0.4 a doubtful model (p 0.3 inside, 0.45 outside) follows the outline; a sure one
    (p 0.9 outside, 0.05 inside) keeps its word. One view's hull has a quarter of that share."""
    camera = Cameras.canonical(MAX_VIEWS)
    mask = torch.zeros(MAX_VIEWS, 128, 128)
    mask[:, :, :64] = 1.0
    outlines = Outlines(mask, camera.to_rows())
    left, right = torch.tensor([[-0.3, 0.0, 0.0]]), torch.tensor([[0.3, 0.0, 0.0]])
    tau = torch.logit(torch.tensor(0.4))

    def blended(p_left: float, p_right: float, p: torch.Tensor) -> float:
        inner = FunctionField(lambda q: torch.where(q[:, 0] < 0, p_left, p_right).logit())
        return float(OutlinedField(inner, outlines).evaluate(p.numpy())[0])

    assert blended(0.3, 0.45, left) > tau and blended(0.3, 0.45, right) < tau
    assert blended(0.05, 0.9, left) < tau and blended(0.05, 0.9, right) > tau
    # the probabilities mix linearly: a sure model gives 1 - the hull's share outside the hull
    outside = torch.sigmoid(torch.tensor(blended(0.05, 1.0 - 1e-7, right)))
    assert abs(float(outside) - (1.0 - MAX_VIEWS * OUTLINE_WEIGHT_PER_VIEW)) < 1e-3
    one = OutlinedField(FunctionField(lambda q: q[:, 0]), Outlines(mask[:1], camera.to_rows()[:1]))
    assert one.weight == OUTLINE_WEIGHT_PER_VIEW
    # the differentiable path (normals, refinement) agrees and has a gradient
    field = OutlinedField(FunctionField(lambda q: 2.0 - 10 * q[:, 0].abs()), outlines)
    p = torch.tensor([[-0.1, 0.05, 0.0], [0.1, 0.0, 0.0]], requires_grad=True)
    out = field.logits(p)
    out.sum().backward()
    assert p.grad is not None and bool(torch.isfinite(p.grad).all())
    np.testing.assert_allclose(out.detach().numpy(), field.evaluate(p.detach().numpy()), atol=1e-5)


def test_the_outlines_option_must_be_a_boolean() -> None:
    with pytest.raises(InputError, match="outlines must be true or false"):
        check_options(ReconstructOptions(outlines="yes"))  # type: ignore[arg-type]
