"""What one camera view shows: points outside the silhouette, in front of the visible surface, or hidden."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.config import DataConfig
from backend.data.dataset import ShapePool
from backend.data.generate import build_split
from backend.data.visibility import HIDDEN, IN_FRONT, OUTSIDE_SILHOUETTE, classify
from backend.wire.constants import CAMERA_DISTANCE

REPO = Path(__file__).resolve().parents[2]
TINY = DataConfig(surface_points=400, image_size=64, views=1, query_points=64, n_points=50)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_split(TINY, "val", 3, tmp_path_factory.mktemp("data"), workers=1)


def _ray_inside(
    pool: ShapePool, idx: torch.Tensor, views: torch.Tensor, points: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """Occupancy (B, M, T) at fractions t of the way from the camera to each point."""
    camera = torch.tensor([0.0, 0.0, CAMERA_DISTANCE])
    b, m = points.shape[:2]
    samples = camera + t[None, None, :, None] * (points - camera)[:, :, None, :]
    assert pool.shapes is not None
    shapes = pool.shapes.select(idx)
    occ = shapes.occupancy(samples.reshape(b, -1, 3), pool.frame(idx, views, shapes))
    return occ.reshape(b, m, len(t)) > 0.5


def test_points_are_classed_as_their_rays_show(split: Path) -> None:
    pool = ShapePool(split)
    assert pool.shapes is not None
    idx, views = torch.arange(3), torch.zeros(3, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    points, occ = pool.uniform_labelled(idx, 3000, 0.1, gen, views)
    where = classify(pool.shapes.select(idx), pool.frame(idx, views), points)
    # all three classes occur, and every inside point is hidden
    assert {OUTSIDE_SILHOUETTE, IN_FRONT, HIDDEN} == set(where.unique().tolist())
    assert (where[occ > 0.5] == HIDDEN).all()
    # checked on a finer sampling of each ray: empty up to the point for all seen points ...
    before = _ray_inside(pool, idx, views, points, torch.linspace(0.3, 0.97, 400)).any(-1)
    seen = where != HIDDEN
    assert before[seen].float().mean() < 0.01  # a march of 128 steps may step over a thin part
    # ... empty beyond it too outside the silhouette, and hit beyond it in front of the surface
    beyond = _ray_inside(pool, idx, views, points, torch.linspace(1.0, 2.5, 400)).any(-1)
    assert beyond[where == OUTSIDE_SILHOUETTE].float().mean() < 0.01
    assert beyond[where == IN_FRONT].float().mean() > 0.99
    # and most hidden points outside the shape have the shape in front of them
    assert before[(where == HIDDEN) & (occ < 0.5)].float().mean() > 0.95


def _script(data_dir: Path, model: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(REPO / "scripts/image_visibility.py"), str(REPO / "backend/weights" / model)]
    cmd += ["--size", "2", "--n", "2", "--points", "2000", "--data-dir", str(data_dir), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_the_analysis_script_reports_where_an_image_model_errs(tmp_path: Path) -> None:
    out = tmp_path / "visibility.json"
    done = _script(tmp_path, "image.safetensors", "--json", str(out))  # makes a 2-shape split
    assert done.returncode == 0, done.stderr
    r = json.loads(out.read_text())
    assert "iou_if_right_where_hidden" in done.stdout
    shares = r["share_outside_silhouette"] + r["share_in_front"] + r["share_hidden"]
    assert shares == pytest.approx(1.0)
    # being right on more points never lowers an IoU
    assert r["iou"] <= r["iou_if_right_where_seen"] <= 1.0
    assert r["iou"] <= r["iou_if_right_where_hidden"] <= 1.0
    assert 0.0 < r["iou_all_hidden_inside"] < 1.0
    assert all(0.0 <= r[k] <= 1.0 for k in r if k.startswith("accuracy"))


def test_the_analysis_script_refuses_other_models(tmp_path: Path) -> None:
    done = _script(tmp_path / "never-made", "voxels.safetensors")
    assert not (tmp_path / "never-made").exists()  # refused before any data is made
    assert done.returncode != 0
    assert "is a voxels model: this analysis is for image models" in done.stderr
