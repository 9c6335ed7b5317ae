"""Average model files of one network and cross-validate tau for the average.

    python scripts/average_weights.py runs/image-multiscale/best.safetensors \
        runs/image-more-shapes/best.safetensors --config backend/configs/image-more-shapes.toml \
        --out runs/image-averaged/best.safetensors

The config names the network (it must match every file) and the validation split that picks tau.
The output can be published like a training run's best model (``scripts/publish_model.py``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.config import load_config  # noqa: E402
from backend.training import average_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", type=Path, nargs="+", help="model files (.safetensors) of one network")
    parser.add_argument("--config", type=Path, required=True, help="training config of the network")
    parser.add_argument("--out", type=Path, required=True, help="model file to write")
    parser.add_argument("--data-dir", type=Path, default=Path(".data"), help="cache of generated splits")
    args = parser.parse_args()
    v = average_weights(args.files, load_config(args.config), args.out, args.data_dir)
    print(f"wrote {args.out}: validation IoU {v.iou:.4f} at tau {v.tau:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
