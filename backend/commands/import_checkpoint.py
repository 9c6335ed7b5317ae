"""``python -m backend import-checkpoint FILE.pt --kind KIND -o OUT.safetensors``: the original
Occupancy Networks' published checkpoints as this project's model files (``backend.onet_checkpoints``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..wire.constants import MODEL_KINDS  # the original has a model of each kind


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint",
        type=Path,
        help="the original's .pt file: onet_pcl2mesh, onet_voxel2mesh, onet_img2mesh(_3), onet_uncond_*",
    )
    p.add_argument("--kind", required=True, choices=MODEL_KINDS, help="which of the original's models it is")
    p.add_argument("-o", "--output", type=Path, required=True, help="the model file to write (.safetensors)")


def run(args: argparse.Namespace) -> int:
    from ..onet_checkpoints import OriginalCheckpointError, import_checkpoint

    try:
        model, meta = import_checkpoint(args.checkpoint, args.kind, args.output)
    except OriginalCheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_params = sum(p.numel() for p in model.parameters())
    layout = " (legacy decoder)" if meta.training.get("decoder_layout") == "legacy" else ""
    print(
        f"wrote {args.output}: the original's {meta.kind} model{layout}, "
        f"{n_params / 1e6:.2f} M parameters, tau {meta.tau:g}"
    )
    return 0
