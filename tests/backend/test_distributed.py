"""Training on several processes (torchrun, DistributedDataParallel), and the one-process path.

One process must train exactly as it always has: a few steps of a tiny run are compared with
the weights this code produced before distributed training existed
(``data/train_3_steps.safetensors``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from backend.checkpoint import load_checkpoint
from backend.config import Config
from backend.data.generate import build_split
from backend.models import build_model
from backend.training import train
from tests.backend.tiny_runs import tiny_config

HERE = Path(__file__).parent
REFERENCE = HERE / "data" / "train_3_steps.safetensors"
WORKER = HERE / "ddp_worker.py"


def reference_config(out_dir: Path, max_steps: int = 3) -> Config:
    """The tiny run with a large rate, so that three steps move every weight visibly."""
    return tiny_config(out_dir, max_steps, lr=0.2)


@pytest.fixture(scope="module")
def procedural_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference run's splits, generated once."""
    data = tmp_path_factory.mktemp("procedural")
    d = reference_config(data).data
    for split, n in (("train", d.n_train), ("val", d.n_val)):
        build_split(d, split, n, data / "procedural", workers=1)
    return data


def test_one_process_trains_as_before(tmp_path: Path, procedural_data: Path) -> None:
    """The same seed gives the weights it gave before distributed training was added.

    Weight matrices are compared to 1e-5: a different batch, step or rate moves them by ~1e-3,
    while other thread counts or CPUs' kernels round them differently by < 1e-6. Biases and
    batch-norm statistics are left out: a bias just before batch norm has no gradient, so Adam
    turns the rounding noise of its zero gradient into steps of the full rate. (On one thread, on
    the machine that made the reference, every tensor is bit-identical.)
    """
    cfg = reference_config(tmp_path / "run")
    cfg.train.threads = 1
    threads = torch.get_num_threads()
    try:
        train(cfg, "tiny", data_dir=procedural_data)
    finally:
        torch.set_num_threads(threads)
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)["model"]
    reference = load_file(REFERENCE)
    assert state.keys() == reference.keys()
    matrices = [k for k, v in reference.items() if v.ndim >= 2]
    for key in matrices:
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=1e-5, msg=key)
    # ... and the steps moved them far more than that
    torch.manual_seed(0)
    start = build_model(cfg.model).state_dict()
    moved = [k for k in matrices if (start[k] - reference[k]).abs().max() > 1e-3]
    assert len(moved) == len(matrices)


def test_two_processes_train_one_model_and_rank_0_alone_writes(tmp_path: Path, procedural_data: Path) -> None:
    """torchrun with 2 CPU processes (gloo): their weights agree after every step, resuming
    continues exactly, and only rank 0 writes the run's files."""
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        + [str(WORKER), str(procedural_data), str(tmp_path)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    weights = {
        (label, rank): torch.load(tmp_path / f"{label}-{rank}.pt", weights_only=True)
        for label in ("straight", "resumed")
        for rank in (0, 1)
    }
    for key, value in weights["straight", 0].items():
        for other in (("straight", 1), ("resumed", 0), ("resumed", 1)):
            torch.testing.assert_close(weights[other][key], value, rtol=0, atol=0, msg=f"{key} {other}")

    assert list((tmp_path / "rank1").iterdir()) == []
    for label in ("straight", "resumed"):
        run = tmp_path / "rank0" / label
        assert sorted(p.name for p in run.iterdir()) == ["best.safetensors", "state.pt", "train.log"]
    state = torch.load(tmp_path / "rank0" / "straight" / "state.pt", weights_only=True)
    assert state["step"] == 4
    assert len(state["rank_gens"]) == 2
    assert not torch.equal(*state["rank_gens"])  # each rank drew batches of its own
    log = (tmp_path / "rank0" / "straight" / "train.log").read_text()
    assert "2 processes, 2 shapes per batch each (4 in all)" in log
    assert log.count("step 2 val IoU") == 1
    assert "resumed at step 2" in (tmp_path / "rank0" / "resumed" / "train.log").read_text()
    _, meta = load_checkpoint(tmp_path / "rank0" / "straight" / "best.safetensors")
    assert meta.training["processes"] == 2
