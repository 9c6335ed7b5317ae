"""``python -m backend train CONFIG``: train or resume a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="TOML config (see backend/configs/)")
    p.add_argument("--name", help="model name stored in the weights (default: the config's file name)")
    p.add_argument("--minutes", type=float, help="stop after this much wall time (resume later)")
    p.add_argument("--threads", type=int, help="torch threads (overrides the config's train.threads)")
    p.add_argument("--data-dir", type=Path, default=Path(".data"), help="where generated data is cached")
    p.add_argument(
        "--init",
        type=Path,
        help="start a new run from this model file's weights (fine-tuning, e.g. a shipped model on "
        "your own meshes); its model config must match the config's",
    )


def run(args: argparse.Namespace) -> int:
    from ..config import ConfigError, load_config
    from ..data.meshes import MeshDataError
    from ..data.sources import check_source
    from ..limits import MAX_THREADS

    try:
        cfg = load_config(args.config)
        if args.threads is not None:
            if not 1 <= args.threads <= MAX_THREADS:
                raise ConfigError(f"--threads must be 1 to {MAX_THREADS}, got {args.threads}")
            cfg.train.threads = args.threads
        if args.minutes is not None and not args.minutes > 0:
            raise ConfigError(f"--minutes must be positive, got {args.minutes}")
        check_source(cfg.data.source)  # fail before anything is written
    except (ConfigError, MeshDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from ..data.dataset import DataError
    from ..distributed import from_environment
    from ..training import ResumeError, train

    try:
        best = train(cfg, args.name or args.config.stem, args.minutes, args.data_dir, args.init)
    except (ResumeError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if from_environment().main:  # under torchrun, one line for the run, not one per process
        print(f"best model: {best}")
    return 0
