"""``python -m backend sample -o OUT --seed N``: a new shape from the unconditional model."""

from __future__ import annotations

import argparse
from typing import Any

from ..engine.types import MeshResult
from .reconstruct import ProgressBar, add_engine_arguments, default_model, options_from, run_engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_engine_arguments(p)


def run(args: argparse.Namespace) -> int:
    def call(engine: Any, progress: ProgressBar) -> MeshResult:
        model = args.model or default_model(engine, "unconditional")
        return engine.sample(model, args.seed, options_from(args), progress=progress)

    return run_engine(args, call)
