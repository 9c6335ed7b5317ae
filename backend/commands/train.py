"""``python -m backend train CONFIG``: train or resume a model."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="TOML config (see backend/configs/)")
    p.add_argument("--name", help="model name stored in the weights (default: the config's file name)")
    p.add_argument("--minutes", type=float, help="stop after this much wall time (resume later)")
    p.add_argument("--threads", type=int, help="torch threads (overrides the config's train.threads)")
    p.add_argument("--data-dir", type=Path, default=Path(".data"), help="where generated data is cached")


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..training import train

    cfg = load_config(args.config)
    if args.threads is not None:
        cfg.train.threads = args.threads
    best = train(cfg, args.name or args.config.stem, args.minutes, args.data_dir)
    print(f"best model: {best}")
    return 0
