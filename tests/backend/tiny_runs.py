"""A tiny training run's config, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

from backend.config import Config, config_from_dict


def tiny_config(out_dir: Path, max_steps: int, lr: float = 1e-3) -> Config:
    """A tiny point-cloud run on three shapes: seconds per step on a CPU.

    The rate is constant after warm-up, so that the schedule does not depend on max_steps.
    """
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
                "lr": lr,
                "lr_final": lr,
            },
        }
    )
