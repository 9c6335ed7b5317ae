"""Ctrl-C and SIGTERM end a command with one line and no partial file; training keeps its state.

Real processes and real signals. A signal is sent once the process is past its start-up (torch's
library is mapped), so that it reaches the command and not the interpreter's initialisation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from backend.__main__ import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

TINY_TRAINING = """
[model]
kind = "pointcloud"
hidden = 16
n_blocks = 2
c_dim = 16
encoder_hidden = 16

[data]
n_train = 3
n_val = 2
surface_points = 300
query_points = 64
n_points = 40
views = 0

[train]
out_dir = "{out}"
batch_size = 2
max_steps = 100000000
eval_every = 100000000
checkpoint_every = 100000000
val_points = 500
"""


def start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "backend", *args],
        cwd=REPO,
        env=env,
        # as a terminal's foreground job: a shell's background job (a CI runner's, say) ignores
        # SIGINT, and a child that inherits that never sees Ctrl-C
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_until(ready: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    for _ in range(6000):
        if ready():
            return
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the process never got going")


def torch_loaded(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(
    ("sig", "status", "word"), [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_stopped_reconstruction_prints_one_line_and_writes_nothing(
    engine_weights: Path, tmp_path: Path, sig: int, status: int, word: str
) -> None:
    out = tmp_path / "mesh.ply"
    proc = start(
        [
            "reconstruct",
            str(EXAMPLES / "chair_points.ply"),
            "-o",
            str(out),
            "--weights-dir",
            str(engine_weights),
        ]
        + ["--resolution", "256", "--refine", "1000", "--device", "cpu"]
    )
    wait_until(lambda: torch_loaded(proc.pid), proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == status, stderr
    assert stderr.strip() == f"error: {word}", stderr
    assert list(tmp_path.iterdir()) == []  # neither the mesh nor a temporary file


def test_stopped_training_saves_its_state_first(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAINING.format(out=out.as_posix()))
    proc = start(["train", str(config), "--data-dir", str(tmp_path / "data"), "--threads", "1"])
    log = out / "train.log"
    wait_until(lambda: log.is_file() and "step 50 " in log.read_text(), proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("error: terminated; the run's state at step "), stderr
    assert "Traceback" not in stderr and sum(line.startswith("error:") for line in lines) == 1
    state = torch.load(out / "state.pt", weights_only=True)
    assert state["step"] >= 50 and f"at step {state['step']} is saved" in lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["state.pt", "train.log"]  # no temporary file


def test_training_refuses_a_bad_init_file_before_making_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, data = tmp_path / "run", tmp_path / "data"
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAINING.format(out=out.as_posix()))
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    assert main(["train", str(config), "--init", str(bad), "--data-dir", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot start from") and err.count("\n") == 1, err
    assert not out.exists() and not data.exists()
