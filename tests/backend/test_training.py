"""The training loop on a tiny model: it writes its files and resumes exactly where it stopped."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from backend.checkpoint import ModelMeta, load_checkpoint, save_weights
from backend.config import Config, config_from_dict
from backend.data.cameras import Cameras
from backend.models import build_model
from backend.models.views import ViewSet
from backend.training import TAUS, ResumeError, _start_from, average_weights, train
from tests.backend.tiny_runs import tiny_config

PUBLISH = Path(__file__).resolve().parents[2] / "scripts" / "publish_model.py"


def test_training_writes_its_files_and_resumes_exactly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    straight = train(tiny_config(tmp_path / "straight", 6), "tiny", data_dir=data)
    train(tiny_config(tmp_path / "resumed", 4), "tiny", data_dir=data)
    first = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert first["step"] == 4
    resumed = train(tiny_config(tmp_path / "resumed", 6), "tiny", data_dir=data)

    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == [
        "best.safetensors",
        "state.pt",
        "train.log",
    ]
    assert "resumed at step 4" in (tmp_path / "resumed" / "train.log").read_text()
    assert "resumed" not in (tmp_path / "straight" / "train.log").read_text()  # each run logs to its own
    a = torch.load(tmp_path / "straight" / "state.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "state.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=0, msg=key)
    model, meta = load_checkpoint(resumed)
    assert meta.tau in TAUS and meta.training["steps"] in (2, 4, 6)
    assert load_checkpoint(straight)[1].metrics == meta.metrics
    assert not model.training


def test_a_corrupt_state_file_is_refused_clearly_and_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    state = out / "state.pt"
    state.write_bytes(b"not a torch file")
    cfg = tiny_config(out, 2)
    with pytest.raises(ResumeError, match="cannot resume from .*state.pt"):
        train(cfg, "tiny", data_dir=tmp_path / "data")
    assert state.read_bytes() == b"not a torch file"


def test_a_new_run_can_start_from_a_model_file(tmp_path: Path) -> None:
    """Fine-tuning: the first step starts from the given weights (fp16 as stored), not from scratch."""
    data = tmp_path / "data"
    first = train(tiny_config(tmp_path / "first", 2), "tiny", data_dir=data)
    tuned = tmp_path / "tuned"
    train(tiny_config(tuned, 2), "tiny", minutes=1e-9, data_dir=data, init=first)  # stops before step 1
    assert "started from the weights of" in (tuned / "train.log").read_text()
    loaded = torch.load(tuned / "state.pt", weights_only=True)["model"]
    for key, value in load_checkpoint(first)[0].state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0, msg=key)
    # the resumed run (no --init now) still records what it started from
    _, meta = load_checkpoint(train(tiny_config(tuned, 2), "tiny", data_dir=data))
    _, first_meta = load_checkpoint(first)
    assert meta.training["started_from"] == {
        "file": "best.safetensors",
        "name": "tiny",
        "run": (tmp_path / "first").as_posix(),
        "steps": 2,
        "wall_time_min": first_meta.training["wall_time_min"],
        "n_train": 3,
        "val_iou": first_meta.metrics["val_iou"],
        "started_from": None,
        "distilled_from": None,
    }
    # a third stage (on cube-symmetric augmented batches) names both earlier ones
    third = tmp_path / "third"
    third_cfg = tiny_config(third, 2)
    third_cfg.data.augment = True
    _, third_meta = load_checkpoint(train(third_cfg, "tiny", data_dir=data, init=tuned / "best.safetensors"))
    assert third_meta.training["started_from"]["steps"] == 2
    assert third_meta.training["started_from"]["started_from"] == meta.training["started_from"]
    # ... and the published cards say so, with the steps of all stages
    weights = tmp_path / "weights"
    # with one table per test setting: procedural at 3000 points, and another test set
    tables = []
    for i, settings in enumerate(({"points": 3000}, {"points": 300, "source": "my/unfamiliar"})):
        tables.append(tmp_path / f"eval{i}.json")
        tables[-1].write_text(json.dumps({"settings": settings, "mean": {"iou": 0.5 + i / 10}}))
    for run, name in ((tuned, "tiny"), (third, "tiny3")):
        evals = [arg for path in tables for arg in ("--eval", str(path))] if name == "tiny" else []
        evals += ["--automatic-points", "0", "500"] if name == "tiny3" else []
        subprocess.run(
            [sys.executable, str(PUBLISH), str(run), "--name", name, "--weights-dir", str(weights), *evals],
            check=True,
            capture_output=True,
        )
    card = (weights / "tiny.md").read_text()
    assert "## Test set (`python -m backend evaluate`): points 3000\n" in card
    assert "## Test set (`python -m backend evaluate`): my/unfamiliar, points 300\n" in card
    assert "| iou | 0.6000 |" in card
    assert [t["mean"]["iou"] for t in load_checkpoint(weights / "tiny.safetensors")[1].metrics["tests"]] == [
        0.5,
        0.6,
    ]
    first_run = (tmp_path / "first").as_posix()
    assert f"Started from the weights of `tiny` ({first_run}) (2 steps on 3 shapes" in card
    assert "; 4 steps and " in card
    assert load_checkpoint(weights / "tiny.safetensors")[1].training["started_from"]["steps"] == 2
    card = (weights / "tiny3.md").read_text()
    # the stages share a name; their run folders tell them apart
    assert f"Started from the weights of `tiny` ({tuned.as_posix()}) (2 steps" in card
    assert f"which started from `tiny` ({first_run}) (2 steps on 3 shapes" in card
    assert "; 6 steps and " in card
    assert "- Automatic takes it for clouds of 0 to 499 points, ahead of the kind's general model." in card
    assert load_checkpoint(weights / "tiny3.safetensors")[1].automatic_points == [0, 500]
    assert load_checkpoint(weights / "tiny.safetensors")[1].automatic_points is None
    refused = subprocess.run(
        [sys.executable, str(PUBLISH), str(third), "--name", "x", "--weights-dir", str(weights)]
        + ["--automatic-points", "500", "0"],
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "--automatic-points needs 0 <= LOW < HIGH" in refused.stderr
    assert not (weights / "x.safetensors").exists()


def test_starting_from_a_different_network_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = train(tiny_config(tmp_path / "first", 2), "tiny", data_dir=data)
    other = tiny_config(tmp_path / "other", 2)
    other.model.hidden = 32
    with pytest.raises(ResumeError, match="cannot start from .*differs"):
        train(other, "tiny", data_dir=data, init=first)
    assert not (tmp_path / "other" / "state.pt").exists()


def test_a_run_can_start_from_a_model_that_reads_fewer_pixel_stages(tmp_path: Path) -> None:
    """The new inputs' weights start at zero: the grown network predicts exactly what the old one
    did. The other way round (fewer stages), or any other difference, is refused."""
    model_cfg = {"kind": "image", "hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_width": 4}
    model_cfg |= {"image_size": 32, "local_features": True}

    def config(**changes: int) -> Config:
        return config_from_dict({"model": model_cfg | changes, "data": {"image_size": 32}})

    first = tmp_path / "first.safetensors"
    old = build_model(config().model)
    old.eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in old.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    meta = ModelMeta("tiny", "image", 0.5, config().to_dict()["model"])
    save_weights(first, old, meta, half=False)
    grown = config(pixel_stages=3)
    new = build_model(grown.model)
    provenance = _start_from(new, first, grown)
    assert provenance["name"] == "tiny"
    new.eval()
    image, p = torch.rand(2, 3, 32, 32), torch.rand(2, 100, 3) - 0.5
    with torch.no_grad():
        c_old, obs_old = old.encode_local(image)
        c_new, obs_new = new.encode_local(image)
        assert obs_new.shape[1] > obs_old.shape[1]
        torch.testing.assert_close(new.decode(p, None, c_new, obs_new), old.decode(p, None, c_old, obs_old))
    shrunk = tmp_path / "grown.safetensors"
    save_weights(shrunk, new, ModelMeta("tiny", "image", 0.5, grown.to_dict()["model"]), half=False)
    back = config()
    with pytest.raises(ResumeError, match="differs"):
        _start_from(build_model(back.model), shrunk, back)
    wider = config(pixel_stages=3, hidden=32)
    with pytest.raises(ResumeError, match="differs"):
        _start_from(build_model(wider.model), first, wider)


def test_a_views_model_can_start_from_the_image_model(tmp_path: Path) -> None:
    """Seen through the image model's own camera, one view gives exactly the image model's
    prediction: the same ResNet, and the views' mean where the one picture's features were."""
    model_cfg = {"hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_width": 4, "image_size": 32}
    model_cfg |= {"local_features": True, "pixel_stages": 2}
    image_cfg = config_from_dict({"model": {**model_cfg, "kind": "image"}, "data": {"image_size": 32}})
    views_data = {"image_size": 32, "cameras": "random", "views": 2}
    views_cfg = config_from_dict({"model": {**model_cfg, "kind": "views"}, "data": views_data})
    old = build_model(image_cfg.model).eval()
    first = tmp_path / "image.safetensors"
    save_weights(first, old, ModelMeta("pictures", "image", 0.5, image_cfg.to_dict()["model"]), half=False)
    new = build_model(views_cfg.model)
    assert _start_from(new, first, views_cfg)["name"] == "pictures"
    new.eval()
    image, p = torch.rand(2, 3, 32, 32), torch.rand(2, 100, 3) - 0.5
    cameras = torch.from_numpy(Cameras.canonical(2).to_array())[:, None]  # one view each
    views = ViewSet(image[:, None], cameras, torch.tensor([1, 1]))
    with torch.no_grad():
        c_old, obs_old = old.encode_local(image)
        c_new, obs_new = new.encode_local(views)
        torch.testing.assert_close(new.decode(p, None, c_new, obs_new), old.decode(p, None, c_old, obs_old))
    other = config_from_dict({"model": {**model_cfg, "kind": "views", "hidden": 32}, "data": views_data})
    with pytest.raises(ResumeError, match="differs"):
        _start_from(build_model(other.model), first, other)


def test_averaging_runs_gives_the_mean_weights_with_a_fresh_tau(tmp_path: Path) -> None:
    data = tmp_path / "data"
    runs = [train(tiny_config(tmp_path / f"run{i}", 2 * (i + 1)), "tiny", data_dir=data) for i in range(2)]
    out = tmp_path / "avg" / "best.safetensors"
    cfg = tiny_config(tmp_path / "x", 2)
    v = average_weights(runs, cfg, out, data)
    model, meta = load_checkpoint(out)
    states = [load_checkpoint(r)[0].state_dict() for r in runs]
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (states[0][key] + states[1][key]) / 2, msg=key)
    assert meta.tau == v.tau and meta.tau in TAUS and meta.metrics["val_iou"] == round(v.iou, 4)
    assert [a["steps"] for a in meta.training["averaged"]] == [2, 4]

    before = runs[0].read_bytes()
    other = replace(cfg, model=replace(cfg.model, hidden=32))
    with pytest.raises(ResumeError, match="cannot average .*differs"):
        average_weights(runs, other, tmp_path / "never.safetensors", data)
    with pytest.raises(ValueError, match="at least two"):
        average_weights(runs[:1], cfg, tmp_path / "never.safetensors", data)
    assert not (tmp_path / "never.safetensors").exists() and runs[0].read_bytes() == before
