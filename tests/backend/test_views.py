"""Training views as users take them, framed as the engine frames a picture, cameras kept exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from backend.data.cameras import Cameras
from backend.data.views import RENDER_SIZE, frame_view, reference_views
from backend.engine.framing import TRAINING_OFFSET


def box(p: torch.Tensor) -> torch.Tensor:
    """A 0.8 x 0.3 x 0.5 box's signed distance (a bound inside)."""
    q = p.abs() - torch.tensor([0.4, 0.15, 0.25])
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


def box_surface(n: int, rng: np.random.Generator) -> np.ndarray:
    p = rng.uniform(-1, 1, (n, 3)) * [0.4, 0.15, 0.25]
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = np.sign(rng.uniform(-1, 1, n)) * np.array([0.4, 0.15, 0.25])[axis]
    return p.astype(np.float32)


def test_framed_views_keep_their_cameras_exact() -> None:
    rng = np.random.default_rng(0)
    surface = box_surface(4000, rng)
    images, cameras = reference_views(box, surface, 6, 64, rng)
    assert images.shape == (6, 64, 64, 3) and images.dtype == np.uint8 and cameras.shape == (6, 15)
    uv, depth = Cameras.from_array(cameras).project(torch.from_numpy(surface).expand(6, -1, -1))
    assert bool((depth > 0).all())
    col = ((uv[..., 0] + 1) / 2 * 64).long().clamp(0, 63).numpy()
    row = ((1 - uv[..., 1]) / 2 * 64).long().clamp(0, 63).numpy()
    for v in range(6):
        on_object = images[v][row[v], col[v]].astype(int).sum(-1) < 3 * 250  # not the white backdrop
        assert on_object.mean() > 0.97, v
        extent = (uv[v].max(0).values - uv[v].min(0).values).max() / 2
        assert 0.4 < float(extent) < 0.85  # framed as the training renders: fill within TRAINING_FILL


def test_an_object_the_colour_of_its_backdrop_is_framed_by_its_true_mask() -> None:
    camera = Cameras.canonical()
    rgba = np.full((RENDER_SIZE, RENDER_SIZE, 4), 255, np.uint8)  # white object on white: nothing to see
    mask = np.zeros((RENDER_SIZE, RENDER_SIZE), bool)
    mask[40:80, 50:70] = True
    image, crop = frame_view(rgba, mask, camera, 64)
    assert image.shape == (64, 64, 3)
    # the mask box's top and bottom edges (rows 40 and 80 of 128: v = 0.375 and -0.25), on the
    # camera's rays at depth 2: the crop frames the 40-pixel box at the least training fill
    edges = torch.tensor([[0.0, 0.375], [0.0, -0.25]]) / camera.focal[0] * 2.0
    points = torch.cat([edges, torch.zeros(2, 1)], 1)[None]  # z = 0: 2 in front of the camera
    cropped, _ = crop.project(points)
    side = round(40 / 0.45)  # the crop's side in pixels (framing.TRAINING_FILL's low end)
    assert abs(float(cropped[0, 0, 1] - cropped[0, 1, 1]) / 2 - 40 / side) < 1e-3
    # the box lies 4 pixels above the picture's centre; the crop keeps within TRAINING_OFFSET of both
    assert 0.0 < float(cropped[0, :, 1].mean()) <= 2 * TRAINING_OFFSET + 2 / side


def test_training_shows_the_views_model_its_shape_in_the_engines_frame(tmp_path: Path) -> None:
    """The object's frame comes from its outlines and cameras: training uses the very frame the
    engine will compute from the same pictures, and takes the query points into it."""
    from backend.config import DataConfig
    from backend.data.dataset import ShapePool
    from backend.data.generate import build_split
    from backend.engine.views import prepare_views
    from backend.models.views import ViewSet

    cfg = DataConfig(surface_points=3000, views=3, cameras="random", image_size=32, query_points=64)
    pool = ShapePool(build_split(cfg, "val", 1, tmp_path, workers=1))
    gen = torch.Generator().manual_seed(0)
    batch = pool.batch("views", torch.tensor([0, 0, 0]), cfg, gen)
    views = batch.inputs
    assert isinstance(views, ViewSet) and views.frame is not None
    for b in range(3):
        n = int(views.count[b])
        pictures = (views.images[b, :n].permute(0, 2, 3, 1) * 255).round().byte().numpy()
        unit_cameras = views.cameras[b, :n].clone()  # back in the unit frame, as the pool stores them
        unit_cameras[:, 9:12] = unit_cameras[:, 9:12] * views.frame[b, 3] + views.frame[b, :3]
        engine = prepare_views(pictures, unit_cameras.numpy(), 32).frame
        np.testing.assert_allclose(engine.center, views.frame[b, :3].numpy(), atol=1e-4)
        assert abs(engine.scale - float(views.frame[b, 3])) < 1e-4
    # the labels stay those of the unit frame's points: taken back, the points are inside as labelled
    assert pool.shapes is not None
    back = batch.points * views.frame[:, None, 3:] + views.frame[:, None, :3]
    inside = pool.shapes.select(torch.tensor([0, 0, 0])).occupancy(back)
    assert torch.equal(inside, batch.occ)


def test_view_features_pool_the_views_each_object_has() -> None:
    """The pooled features equal a plain loop over each object's own views: the mean and max of
    what each view's map holds where the point projects, and the share of views that see it.
    Objects with fewer views than the batch's most ignore the padding views entirely."""
    from backend.models.views import ViewEvidence, ViewFeatures

    torch.manual_seed(0)
    b, v, c, m = 3, 3, 5, 40
    fmap = torch.randn(b, v, c, 8, 8)
    eye = torch.randn(b * v, 3)
    eye = 2.5 * eye / eye.norm(dim=1, keepdim=True)
    cameras = Cameras.look_at(eye, torch.zeros(b * v, 3), torch.full((b * v,), 40.0))
    rows = torch.from_numpy(cameras.to_array()).reshape(b, v, -1)
    p = torch.rand(b, m, 3) - 0.5
    pool = ViewFeatures(c)
    for count in ([3, 3, 3], [1, 3, 2]):
        valid = torch.arange(v)[None] < torch.tensor(count)[:, None]
        got = pool(p, ViewEvidence(fmap, rows, valid))
        assert got.shape == (b, m, 2 * c + 1)
        for i, n in enumerate(count):
            feats, seen = [], []
            for j in range(n):
                camera = Cameras.from_rows(rows[i, j : j + 1])
                uv, depth = camera.project(p[i : i + 1])
                grid = torch.stack([uv[..., 0], -uv[..., 1]], -1)[:, :, None]
                sampled = torch.nn.functional.grid_sample(
                    fmap[i, j : j + 1], grid, padding_mode="border", align_corners=False
                )
                feats.append(sampled[0, :, :, 0].T)  # (M, C)
                seen.append(((uv[0].abs() <= 1).all(-1) & (depth[0] > 0)).float())
            stacked = torch.stack(feats)
            want = torch.cat([stacked.mean(0), stacked.amax(0), torch.stack(seen).mean(0)[:, None]], -1)
            torch.testing.assert_close(got[i], want)
