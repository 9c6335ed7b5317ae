"""The original's dataset layout: procedural shapes written in it, read back, trained on for a few
steps and evaluated per class in the paper's units."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from backend.config import ConfigError, config_from_dict
from backend.data.onet_layout import OnetPool, write_procedural
from backend.engine.binvox import read_binvox
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import InputError
from backend.evaluation import EvalSettings, evaluate
from backend.training import train

REPO = Path(__file__).resolve().parents[2]
OBJECTS = {"train": 2, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def onet_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes of 4 objects; 100,000 labelled points each, a small cloud and two small views."""
    root = tmp_path_factory.mktemp("ShapeNet")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        write_procedural(root, classes=2, objects=OBJECTS, surface_points=3000, views=2, image_px=32)
    finally:
        torch.set_num_threads(threads)
    return root


def test_the_writer_writes_the_originals_files(onet_root: Path) -> None:
    assert json.loads((onet_root / "metadata.yaml").read_text())["90000001"]["name"] == "procedural 1"
    assert (onet_root / "90000000" / "train.lst").read_text() == "train0000\ntrain0001"
    obj = onet_root / "90000000" / "train0000"
    with np.load(obj / "points.npz") as f:
        points, bits = f["points"], f["occupancies"]
        assert points.dtype == np.float16 and points.shape == (100_000, 3)
        assert bits.dtype == np.uint8 and bits.shape == (12_500,)
        assert np.abs(points).max() <= 0.55
        assert 0.01 < np.unpackbits(bits).mean() < 0.9
        assert set(f.files) == {"points", "occupancies", "loc", "scale"}
    with np.load(obj / "pointcloud.npz") as f:
        cloud, normals = f["points"], f["normals"]
        assert cloud.shape == normals.shape == (3000, 3) and cloud.dtype == np.float16
    assert read_binvox(obj / "model.binvox").voxels.shape == (32, 32, 32)
    views = obj / "img_choy2016"
    assert sorted(p.name for p in views.iterdir()) == ["000.jpg", "001.jpg", "cameras.npz"]
    with Image.open(views / "000.jpg") as img:
        assert img.format == "JPEG" and img.size == (32, 32)
    with np.load(views / "cameras.npz") as cams:
        world, camera = cams["world_mat_1"], cams["camera_mat_1"]
    assert world.shape == (3, 4) and camera.shape == (3, 3)
    # the camera looks at the object: its centre projects to the image's centre, its surface in front
    x = world @ np.append(np.zeros(3), 1.0)
    assert x[2] > 0 and np.allclose((camera @ x)[:2] / x[2], [16, 16])
    cam = np.c_[cloud.astype(np.float64), np.ones(len(cloud))] @ world.T
    assert (cam[:, 2] > 0).all()


def test_a_config_on_the_layout_takes_the_originals_settings(onet_root: Path) -> None:
    cfg = config_from_dict({"data": {"source": str(onet_root)}})
    d = cfg.data
    assert (d.query_points, d.near_surface_ratio, d.n_points, d.noise, d.views) == (2048, 0.0, 300, 0.005, 24)
    voxels = config_from_dict({"model": {"kind": "voxels"}, "data": {"source": str(onet_root)}})
    assert voxels.data.query_points == 1024
    own = config_from_dict({"data": {"source": str(onet_root), "query_points": 512, "classes": ["90000001"]}})
    assert own.data.query_points == 512 and own.data.classes == ["90000001"]
    image = config_from_dict({"model": {"kind": "image"}, "data": {"source": str(onet_root)}})
    assert image.data.views == 24
    with pytest.raises(ConfigError, match="near_surface_ratio must be 0"):
        config_from_dict({"data": {"source": str(onet_root), "near_surface_ratio": 0.5}})


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "image", "unconditional"])
def test_batches_are_drawn_as_the_original_draws_them(onet_root: Path, kind: str) -> None:
    model = {"kind": kind, "image_size": 32}
    if kind == "unconditional":
        model.update(decoder="simple", c_dim=0, z_dim=8)
    cfg = config_from_dict({"model": model, "data": {"source": str(onet_root), "image_size": 32}})
    pool = OnetPool(onet_root, "train")
    assert len(pool) == 4 and pool.names[0] == "90000000/train0000"
    batch = pool.batch(kind, torch.tensor([0, 3, 3]), cfg.data, torch.Generator().manual_seed(0))
    m = 1024 if kind == "voxels" else 2048
    assert batch.points.shape == (3, m, 3) and batch.occ.shape == (3, m)
    # each query point is a stored one, jittered by ~1e-4, with the stored label
    with np.load(onet_root / "90000001" / "train0001" / "points.npz") as f:
        stored, occ = f["points"].astype(np.float32), np.unpackbits(f["occupancies"]).astype(np.float32)
    d = np.linalg.norm(batch.points[2].numpy()[:, None] - stored[None, :5000], axis=-1)
    near = d.min(1) < 1e-3
    assert near.sum() > m * 0.02  # 5% of the stored points: some of the draws land among them
    assert (batch.occ[2].numpy()[near] == occ[d.argmin(1)[near]]).all()
    assert 0 < float((batch.points - batch.points.half().float()).abs().max()) < 1e-3
    if kind == "pointcloud":
        assert batch.inputs is not None and batch.inputs.shape == (3, 300, 3)
    elif kind == "voxels":
        grid = read_binvox(onet_root / "90000000" / "train0000" / "model.binvox").voxels
        assert batch.inputs is not None and torch.equal(batch.inputs[0].bool(), torch.from_numpy(grid))
    elif kind == "image":
        assert batch.inputs is not None and batch.inputs.shape == (3, 3, 32, 32)
    else:
        assert batch.inputs is None


def test_train_a_few_steps_and_evaluate_per_class_in_the_papers_units(
    onet_root: Path, tmp_path: Path
) -> None:
    cfg = config_from_dict(
        {
            "model": {"kind": "pointcloud", "hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16},
            "data": {"source": str(onet_root), "query_points": 256},
            "train": {
                "out_dir": str(tmp_path / "run"),
                "batch_size": 2,
                "max_steps": 2,
                "eval_every": 2,
                "val_points": 2000,
                "threads": 1,
            },
        }
    )
    threads = torch.get_num_threads()
    try:
        best = train(cfg, "tiny", data_dir=tmp_path / "unused")
    finally:
        torch.set_num_threads(threads)
    assert "4 training shapes" in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "unused").exists()  # nothing is generated or cached for this source
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, "-m", "backend", "evaluate", str(best), "--source", str(onet_root)]
        + ["--resolution", "32", "--iou-points", "5000", "--surface-points", "5000", "--threads", "1"]
        + ["--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    classes = report["classes"]
    assert list(classes) == ["90000000", "90000001"]
    assert [s["name"] for s in report["shapes"]] == ["90000000/test0000", "90000001/test0000"]
    assert classes["90000001"]["name"] == "procedural 1" and classes["90000001"]["shapes"] == 1
    mean = report["mean_of_classes"]
    assert mean["iou"] == pytest.approx(np.mean([c["iou"] for c in classes.values()]))
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["class", "shapes"])
    assert "Chamfer-L1 x10" in lines[header] and "as in the paper" in lines[header - 1]
    row = lines[header + 2].split()  # class 90000001
    assert row[:3] == ["90000001", "procedural", "1"]
    assert float(row[5]) == pytest.approx(10 * classes["90000001"]["chamfer_l1"], abs=1e-3)
    assert lines[header + 3].split()[:2] == ["mean", "2"]
    assert float(lines[header + 3].split()[3]) == pytest.approx(10 * mean["chamfer_l1"], abs=1e-3)


@pytest.mark.parametrize("model", ["voxels", "image"])
def test_voxel_and_image_models_are_evaluated_on_the_layout(
    onet_root: Path, engine_weights: Path, model: str
) -> None:
    engine = Reconstructor("cpu", weights_dir=engine_weights, threads=1)
    settings = EvalSettings(
        n=2, resolution=32, iou_points=2000, surface_points=2000, source=str(onet_root), classes=["90000001"]
    )
    report = evaluate(engine, model, settings, progress=False)
    assert [s.name for s in report.shapes] == ["90000001/test0000"]
    assert list(report.class_means()) == ["90000001"]
    if model == "voxels":  # the input grid itself is scored as the baseline
        assert report.shapes[0].baseline is not None and report.shapes[0].baseline["iou"] > 0.3


def test_bad_sources_and_classes_are_clear_errors(
    onet_root: Path, engine_weights: Path, tmp_path: Path
) -> None:
    engine = Reconstructor("cpu", weights_dir=engine_weights, threads=1)
    unknown = EvalSettings(n=1, source=str(onet_root), classes=["04379243"])
    message = f"class(es) 04379243 not in {onet_root} (it has 90000000, 90000001)"
    with pytest.raises(InputError, match=re.escape(message)):
        evaluate(engine, "voxels", unknown, progress=False)
    broken = tmp_path / "broken"
    (broken / "02691156" / "plane").mkdir(parents=True)
    (broken / "02691156" / "test.lst").write_text("plane")
    done = subprocess.run(
        [sys.executable, "-m", "backend", "evaluate", "voxels", "--source", str(broken)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot read ")  # after the progress bar
    assert "plane/points.npz" in done.stderr and "Traceback" not in done.stderr
