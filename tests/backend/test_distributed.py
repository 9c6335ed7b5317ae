"""Training on several processes (torchrun, DistributedDataParallel), and the one-process path.

One process must train exactly as it always has: a few steps of a tiny run are compared with
the weights this code produced before distributed training existed
(``data/train_3_steps.safetensors``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from backend.config import Config, config_from_dict
from backend.models import build_model
from backend.training import train

REFERENCE = Path(__file__).parent / "data" / "train_3_steps.safetensors"


def reference_config(out_dir: Path, max_steps: int = 3) -> Config:
    """A tiny point-cloud run; a large rate so that three steps move every weight visibly."""
    return config_from_dict(
        {
            "model": {"kind": "pointcloud", "hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16},
            "data": {
                "n_train": 3,
                "n_val": 2,
                "surface_points": 300,
                "query_points": 64,
                "n_points": 40,
                "views": 0,
            },
            "train": {
                "out_dir": str(out_dir),
                "batch_size": 2,
                "max_steps": max_steps,
                "eval_every": 2,
                "checkpoint_every": 1,
                "val_points": 500,
                "lr": 0.2,
                "lr_final": 0.2,
            },
        }
    )


def test_one_process_trains_as_before(tmp_path: Path) -> None:
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
        train(cfg, "tiny", data_dir=tmp_path / "data")
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
