"""Evaluation: the metrics on known geometry, the frames of the ground truth, and the command."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from backend.__main__ import main
from backend.config import DataConfig
from backend.data.cameras import Cameras
from backend.data.dataset import ShapePool
from backend.data.generate import build_split
from backend.engine.extract import extract_mesh
from backend.engine.field import FunctionField
from backend.engine.grid import Grid
from backend.engine.lattice import LatticeValues
from backend.engine.observation import UserFrame
from backend.engine.types import ReconstructOptions
from backend.evaluation import (
    EMPTY,
    SILHOUETTE,
    _ground_truth_surface,
    is_closed,
    mesh_metrics,
    sample_voxel_surface,
    signed_volume,
    surface_metrics,
    surface_tree,
    volume_iou,
    voxel_occupancy,
)
from tests.backend.conftest import write_model


def plane(n: int = 4000, z: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    xy = np.random.default_rng(0).uniform(-0.5, 0.5, (n, 2))
    return np.c_[xy, np.full(n, z)], np.tile([0.0, 0.0, 1.0], (n, 1))


def test_surface_metrics_on_known_point_sets() -> None:
    points, normals = plane()
    same = surface_metrics(points, -normals, points, normals)  # orientation does not count
    assert same == pytest.approx(
        {"accuracy": 0, "completeness": 0, "chamfer_l1": 0, "normal_consistency": 1, "fscore": 1}
    )
    shifted = surface_metrics(points + [0, 0, 0.02], normals, points, normals)
    assert shifted["chamfer_l1"] == pytest.approx(0.02, abs=1e-3)
    assert shifted["fscore"] == 0.0
    near = surface_metrics(points + [0, 0, 0.005], normals, points, normals)
    assert near["fscore"] == 1.0
    assert surface_metrics(np.zeros((0, 3)), np.zeros((0, 3)), points, normals) == EMPTY


def test_volume_iou_and_an_empty_mesh_score_as_the_original() -> None:
    a, b = np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)
    assert volume_iou(a, b) == pytest.approx(1 / 3)
    assert volume_iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    points, normals = plane()
    no_faces = np.zeros((0, 3), int)
    tree, rng = surface_tree(points), np.random.default_rng(0)
    empty = mesh_metrics(
        np.zeros((0, 3)), no_faces, points, a.repeat(1000), points, normals, tree, 100, 0.01, rng
    )
    assert empty == {"iou": 0.0, **EMPTY}


def test_voxel_baseline_occupancy_and_surface() -> None:
    grid = np.zeros((4, 4, 4), bool)
    grid[1, 2, 3] = True  # the voxel [-0.25, 0] x [0, 0.25] x [0.25, 0.5]
    inside = voxel_occupancy(grid, np.array([[-0.1, 0.1, 0.4], [0.1, 0.1, 0.4], [-0.1, 0.1, 0.6]]))
    assert inside.tolist() == [True, False, False]
    points, normals = sample_voxel_surface(grid, 600, np.random.default_rng(0))
    lo, hi = np.array([-0.25, 0.0, 0.25]), np.array([0.0, 0.25, 0.5])
    assert ((points >= lo - 1e-9) & (points <= hi + 1e-9)).all()
    on_face = np.isclose(points, lo) | np.isclose(points, hi)
    assert on_face.any(1).all() and np.abs(normals).sum(1).tolist() == [1.0] * 600
    assert len(np.unique(normals, axis=0)) == 6


def test_closed_mesh_check_and_volume() -> None:
    sphere = trimesh.creation.icosphere(2)
    faces = np.asarray(sphere.faces)
    assert is_closed(faces)
    assert not is_closed(faces[1:])  # a hole
    flipped = faces.copy()
    flipped[0] = flipped[0, ::-1]
    assert not is_closed(flipped)  # inconsistent orientation
    assert not is_closed(np.zeros((0, 3), int))
    cube = trimesh.creation.box((1, 1, 1))
    assert signed_volume(cube.vertices, cube.faces) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> ShapePool:
    cfg = DataConfig(surface_points=20000, views=1, image_size=16)
    return ShapePool(build_split(cfg, "test", 1, tmp_path_factory.mktemp("data"), workers=1))


@pytest.mark.parametrize("kind", ["pointcloud", "image"])
def test_an_exact_mesh_scores_near_perfect_in_the_prediction_frame(pool: ShapePool, kind: str) -> None:
    """The extracted surface of the exact shape, in the frame the model of ``kind`` predicts in."""
    assert pool.shapes is not None
    idx = torch.tensor([0])
    views = torch.zeros(1, dtype=torch.long) if kind == "image" else None
    frame = pool.frame(idx, views)
    shape = pool.shapes.select(idx)
    field = FunctionField(lambda p: -200.0 * shape.sdf(p[None], frame)[0])  # logits: positive inside
    mesh = extract_mesh(
        field, LatticeValues(129), Grid(128), UserFrame.identity(), 0.5, ReconstructOptions(resolution=128)
    )
    pts, occ = pool.uniform_labelled(idx, 20000, 0.1, torch.Generator().manual_seed(0), views)
    gt_points, gt_normals = _ground_truth_surface(pool, 0, kind)
    canonical = Cameras.canonical()
    outline = (canonical, canonical.silhouettes(gt_points, 16)) if kind == "image" else None
    args = (gt_points, gt_normals, surface_tree(gt_points), 20000, 0.01, np.random.default_rng(0), outline)
    metrics = mesh_metrics(mesh.vertices, mesh.faces, pts[0].numpy(), occ[0].numpy() > 0.5, *args)
    assert (SILHOUETTE in metrics) == (kind == "image")
    if kind == "image":
        assert metrics[SILHOUETTE] > 0.97
    # 20k samples a side leave ~0.005 between two samplings of the same surface
    assert metrics["iou"] > 0.98 and metrics["chamfer_l1"] < 0.008
    assert metrics["normal_consistency"] > 0.95 and metrics["fscore"] > 0.9
    if kind == "image":  # the same mesh scored in the wrong frame is far off: the frames matter
        unit_points, unit_normals = _ground_truth_surface(pool, 0, "pointcloud")
        wrong = surface_metrics(*mesh_metrics_inputs(mesh, 20000), unit_points, unit_normals)
        assert wrong["chamfer_l1"] > 5 * metrics["chamfer_l1"]


def test_the_silhouette_is_what_the_input_camera_sees(pool: ShapePool) -> None:
    """Surface samples splatted through the camera cover exactly the rendered object's pixels,
    up to the pixels its outline grazes: the silhouette metric and the renderer share one camera."""
    gt_points, _ = _ground_truth_surface(pool, 0, "image")
    image = pool.images[0, 0].numpy().astype(int)  # (16, 16, 3), on a plain light background
    drawn = np.abs(image - image[0, 0]).max(-1) > 3  # where a pixel's centre ray hits the object
    splat = Cameras.canonical().silhouettes(gt_points, 16)[0]
    assert drawn.sum() > 20 and (splat | drawn).sum() == splat.sum()  # every drawn pixel is in it
    padded = np.pad(drawn, 1)
    grown = np.zeros_like(drawn)
    for dr in range(3):
        for dc in range(3):
            grown |= padded[dr : dr + 16, dc : dc + 16]
    assert not (splat & ~grown).any()  # and the rest touch the drawn outline
    assert (
        not Cameras.canonical().silhouettes(gt_points + [0, 0, 5.0], 16).any()
    )  # behind the camera: nothing


def mesh_metrics_inputs(mesh: object, n: int) -> tuple[np.ndarray, np.ndarray]:
    from backend.evaluation import sample_mesh

    return sample_mesh(mesh.vertices, mesh.faces, n, np.random.default_rng(1))  # type: ignore[attr-defined]


@pytest.mark.parametrize("model", ["points", "voxels", "image", "prior"])
def test_the_evaluate_command_prints_tables_and_writes_json(
    model: str, engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.json"
    argv = ["evaluate", str(engine_weights / f"{model}.safetensors"), "--n", "2", "--resolution", "32"]
    argv += ["--iou-points", "2000", "--surface-points", "2000", "--data-dir", str(tmp_path / "data")]
    argv += ["--json", str(out), "--tau", "0.45"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["tau"] == 0.45 and result["settings"]["n"] == 2
    if model == "prior":
        assert len(result["samples"]) == 2 and 0 <= result["closed_fraction"] <= 1
        assert "samples are non-empty closed meshes" in text
        return
    assert len(result["shapes"]) == 2 and set(result["mean"]) >= {
        "iou",
        "chamfer_l1",
        "normal_consistency",
        "fscore",
    }
    assert "test-0" in text and "test-1" in text and "IoU" in text
    assert ("silhouette_iou" in result["mean"]) == ("silhouette_iou" in text) == (model == "image")
    if model == "voxels":
        baseline = result["input_voxels_mean"]
        assert 0.3 < baseline["iou"] < 1 and baseline["chamfer_l1"] < 0.05
        assert "input voxels" in text
    else:
        assert "input_voxels_mean" not in result


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data folder for the module: the held-out split is generated once."""
    return tmp_path_factory.mktemp("eval-data")


@pytest.mark.parametrize(("points", "noise", "views"), [(5000, 0.0, 0), (2000, 0.0, 1), (300, 0.01, 0)])
def test_observations_follow_points_noise_and_views(
    engine_weights: Path, eval_data: Path, points: int, noise: float, views: int
) -> None:
    from backend.engine.reconstructor import Reconstructor
    from backend.evaluation import EvalSettings, test_cases

    settings = EvalSettings(n=1, surface_points=20000, iou_points=1000, data_dir=eval_data)
    settings.points, settings.noise, settings.views = points, noise, views
    _, meta = Reconstructor("cpu", weights_dir=engine_weights).load("points")
    (case,) = test_cases("pointcloud", meta, settings, progress=False)
    observed = case.observation.points
    assert observed is not None and observed.shape == (points, 3)
    distance = case.tree.query(observed)[0]
    if noise == 0:
        assert np.median(distance) < 0.006  # on the surface, within the spacing of its 20k samples
    else:
        assert 0.005 < np.median(distance) < 0.02
    if views:  # one viewpoint sees one side: far from all of the surface
        seen = np.zeros(len(case.surface), bool)
        seen[case.tree.query(observed)[1]] = True
        assert seen.mean() < 0.6


def test_hollow_evaluates_on_held_out_shapes_made_thin_walled_and_open(
    engine_weights: Path, eval_data: Path
) -> None:
    from backend.engine.reconstructor import Reconstructor
    from backend.evaluation import EvalSettings, test_cases

    _, meta = Reconstructor("cpu", weights_dir=engine_weights).load("points")
    cases = {}
    for hollow in (0.0, 1.0):
        settings = EvalSettings(n=1, surface_points=20000, iou_points=4000, data_dir=eval_data, hollow=hollow)
        (cases[hollow],) = test_cases("pointcloud", meta, settings, progress=False)
    solid, opened = cases[0.0], cases[1.0]
    # the held-out shape made into walls: every inside point lies near the surface
    assert not np.array_equal(opened.surface, solid.surface)
    inside = opened.iou_points[opened.iou_gt]
    assert np.quantile(opened.tree.query(inside)[0], 0.99) < 0.05


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--views", "40"], "views must be 0 (the whole surface) to 16"),
        (["--hollow", "1.5"], "hollow must lie in [0, 1], got 1.5"),
        (
            ["--cameras", "left"],
            "cameras must be one of random, outside, front-side, front-side-top, got 'left'",
        ),
        (["--points", "0"], "points must be 1 to 20,000,000"),
        (["--resolution", "48"], "resolution must be one of 32, 64, 128, 256, 512, got 48"),
        (["--n", "0"], "n must be a positive integer, got 0"),
        (["--tau", "1.5"], "tau must lie strictly between 0 and 1"),
        (["--json", "no/such/folder/out.json"], "folder for --json does not exist"),
        (["--source", "no-such-folder"], "is neither 'procedural' nor a folder made by prepare-meshes"),
    ],
)
def test_the_evaluate_command_names_bad_input_and_writes_nothing(
    engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    argv = [
        "evaluate",
        str(engine_weights / "points.safetensors"),
        "--data-dir",
        str(tmp_path / "data"),
        *args,
    ]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_broken_model_file_is_reported_by_a_real_process(tmp_path: Path, repo_root: Path) -> None:
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00" * 64)
    proc = subprocess.run(
        [sys.executable, "-m", "backend", "evaluate", str(broken), "--data-dir", str(tmp_path / "data")],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and "is not a safetensors model file" in proc.stderr
    assert "Traceback" not in proc.stderr and sorted(tmp_path.iterdir()) == [broken]


def test_a_views_model_is_evaluated_on_its_first_views(tmp_path: Path, eval_data: Path) -> None:
    """Held-out shapes shot as users shoot them, the first --views of them given, with cameras
    that see the shape where its pictures show it."""
    from backend.data.cameras import Cameras
    from backend.engine.framing import object_mask
    from backend.engine.reconstructor import Reconstructor
    from backend.evaluation import EvalSettings, test_cases, volume_iou

    write_model(tmp_path, "views", 6, kind="views", local_features=True)
    settings = EvalSettings(n=1, surface_points=20000, iou_points=1000, data_dir=eval_data)
    settings.views = 2
    _, meta = Reconstructor("cpu", weights_dir=tmp_path).load("views")
    (case,) = test_cases("views", meta, settings, progress=False)
    pictures, cameras = case.observation.views, case.observation.cameras
    assert pictures is not None and cameras is not None
    size = int(meta.config["image_size"])
    assert pictures.shape == (2, size, size, 3) and cameras.shape == (2, 15)
    uv, depth = Cameras.from_array(cameras).project(
        torch.from_numpy(case.surface[::10]).float().expand(2, -1, -1)
    )
    col = ((uv[..., 0] + 1) / 2 * size).long().clamp(0, size - 1)
    row = ((1 - uv[..., 1]) / 2 * size).long().clamp(0, size - 1)
    for v in range(2):
        assert (pictures[v][row[v], col[v]].astype(int).sum(-1) < 3 * 250).mean() > 0.95  # on the object
    # the silhouettes are the object's outlines in the pictures, as the engine finds them
    assert case.silhouettes is not None
    masks = case.silhouettes[1]
    found = np.stack([object_mask(p.astype(np.float32) / 255) > 0.5 for p in pictures])
    assert masks.shape == (2, size, size) and volume_iou(masks, found) > 0.9
    out = tmp_path / "views.json"
    argv = ["evaluate", str(tmp_path / "views.safetensors"), "--n", "1", "--resolution", "32", "--views", "2"]
    argv += ["--iou-points", "2000", "--surface-points", "2000", "--data-dir", str(eval_data)]
    assert main([*argv, "--json", str(out), "--tau", "0.45", "--quiet"]) == 0
    result = json.loads(out.read_text())
    assert result["settings"]["views"] == 2 and math.isfinite(result["mean"]["iou"])
    assert 0 <= result["mean"]["silhouette_iou"] <= 1
    # shot outside the training ranges (test_cameras.py checks the ranges): 4 views with outlines
    settings.views, settings.cameras = 0, "outside"
    (case,) = test_cases("views", meta, settings, progress=False)
    assert case.observation.cameras is not None and case.observation.cameras.shape == (4, 15)
    assert case.silhouettes is not None and case.silhouettes[1].shape == (4, size, size)
    assert case.silhouettes[1].any(axis=(1, 2)).all()
    # a named set: front, side and top, each seen from where the set says
    settings.views, settings.cameras = 0, "front-side-top"
    (case,) = test_cases("views", meta, settings, progress=False)
    assert case.observation.cameras is not None and case.observation.cameras.shape == (3, 15)
    looking = -case.observation.cameras[:, 6:9]  # the cameras' forward axes (rotation's third row)
    np.testing.assert_allclose(looking, [[0, 1, 0], [-1, 0, 0], [0, 0, -1]], atol=1e-4)
