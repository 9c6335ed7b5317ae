"""Distillation: a narrower decoder learns a trained model's occupancy on that model's frozen features."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.checkpoint import load_checkpoint
from backend.data.sources import open_split
from backend.distill import Distillation, load_teacher, share_features
from backend.models import build_model
from backend.training import ResumeError, train
from tests.backend.tiny_runs import tiny_config

PUBLISH = Path(__file__).resolve().parents[2] / "scripts" / "publish_model.py"


def _student_config(out: Path, teacher: Path, steps: int):
    cfg = tiny_config(out, steps)
    cfg.model.hidden, cfg.model.n_blocks = 8, 1
    cfg.train.teacher = str(teacher)
    return cfg


def test_a_student_run_keeps_the_teachers_features_and_names_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    teacher = train(tiny_config(tmp_path / "teacher", 2), "tiny", data_dir=data)
    student = train(_student_config(tmp_path / "student", teacher, 4), "student", data_dir=data)

    model, meta = load_checkpoint(student)
    taught, teacher_meta = load_checkpoint(teacher)
    assert sum(p.numel() for p in model.decoder.parameters()) < sum(
        p.numel() for p in taught.decoder.parameters()
    )
    shared = {k: v for k, v in taught.state_dict().items() if k.startswith("encoder.")}
    assert shared
    for key, value in shared.items():  # frozen: not one bit moved in 4 steps
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert meta.training["distilled_from"]["run"] == (tmp_path / "teacher").as_posix()
    assert meta.training["distilled_from"]["val_iou"] == teacher_meta.metrics["val_iou"]
    assert "distilling" in (tmp_path / "student" / "train.log").read_text()


def test_the_student_learns_the_teachers_probabilities(tmp_path: Path) -> None:
    """On one batch, Adam on the distillation loss brings the student's probabilities to the
    teacher's; the loss's minimum is the teacher's own entropy, so the gap is what is measured."""
    data = tmp_path / "data"
    teacher_path = train(tiny_config(tmp_path / "teacher", 2), "tiny", data_dir=data)
    cfg = _student_config(tmp_path / "student", teacher_path, 1)
    teacher, _ = load_teacher(teacher_path, cfg.model)
    torch.manual_seed(0)
    student = build_model(cfg.model)
    share_features(student, teacher)
    pool = open_split(cfg.data, "train", cfg.data.n_train, data / "procedural")
    batch = pool.batch("pointcloud", torch.tensor([0, 1]), cfg.data, torch.Generator().manual_seed(0))
    loss = Distillation(student, teacher)

    def gap() -> float:
        student.eval()
        with torch.no_grad():
            c, obs = student.encode_local(batch.inputs)
            want = torch.sigmoid(teacher.decode(batch.points, None, c, obs))
            got = torch.sigmoid(student.decode(batch.points, None, c, obs))
        return float((want - got).abs().mean())

    before = gap()
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(150):
        student.train()
        value, parts = loss(batch.points, batch.occ, batch.inputs)
        opt.zero_grad()
        value.backward()
        opt.step()
    assert gap() < 0.25 * before
    assert not any(p.requires_grad for p in student.encoder.parameters())
    assert parts["distill"] > 0 and parts["bce"] > 0


def test_a_teacher_of_another_network_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    data = tmp_path / "data"
    teacher = train(tiny_config(tmp_path / "teacher", 2), "tiny", data_dir=data)
    cfg = _student_config(tmp_path / "student", teacher, 2)
    cfg.model.c_dim = 8  # the encoder differs: its features cannot be shared
    with pytest.raises(ResumeError, match="differs from the student's in more than the decoder"):
        train(cfg, "student", data_dir=data)
    assert not (tmp_path / "student").exists()
    cfg.train.teacher = str(tmp_path / "missing.safetensors")
    with pytest.raises(ResumeError, match="cannot distil from .*missing"):
        train(cfg, "student", data_dir=data)


def test_a_student_fine_tuned_further_names_its_teacher_on_its_card(tmp_path: Path) -> None:
    data = tmp_path / "data"
    teacher = train(tiny_config(tmp_path / "teacher", 2), "tiny", data_dir=data)
    student = train(_student_config(tmp_path / "student", teacher, 2), "student", data_dir=data)
    tuned_cfg = _student_config(tmp_path / "tuned", teacher, 2)
    tuned_cfg.train.teacher = ""  # a second stage on the ground truth, all of it trainable
    train(tuned_cfg, "tuned", data_dir=data, init=student)
    weights = tmp_path / "weights"
    for run, name in (("student", "student"), ("tuned", "tuned")):
        subprocess.run(
            [
                sys.executable,
                str(PUBLISH),
                str(tmp_path / run),
                "--name",
                name,
                "--weights-dir",
                str(weights),
            ],
            check=True,
            capture_output=True,
        )
    teacher_run = (tmp_path / "teacher").as_posix()
    card = (weights / "student.md").read_text()
    assert f"- Distilled from `tiny` ({teacher_run}) (2 steps on 3 shapes" in card
    assert "; 4 steps and " in card
    card = (weights / "tuned.md").read_text()
    student_run = (tmp_path / "student").as_posix()
    assert f"- Started from the weights of `student` ({student_run}) (2 steps" in card
    assert f"which was distilled from `tiny` ({teacher_run}) (2 steps on 3 shapes" in card
    assert "; 6 steps and " in card
