"""Speed of reference views: a views model on 1 and 3 pictures against the image model on one.

Three views of one procedural test shape are shot as users shoot reference pictures
(``backend/data/views.py``). A warm ``Reconstructor`` (model loaded, one reconstruction done, as
in the add-on's backend process) reconstructs a 128^3 mesh from the first view and from all
three with the views model, and from the first picture alone with the image model, the baseline,
in the same run. Medians of several runs; the targets are 1 s for one view and 1.5 s for three.

    python bench/bench_views.py --views-model runs/views/best.safetensors
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TARGETS_S = {1: 1.0, 3: 1.5}


def shoot(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """n framed pictures of test shape 0 and their cameras (the shape's unit frame)."""
    from backend.config import DataConfig
    from backend.data.generate import SPLITS, make_shape

    cfg = DataConfig(surface_points=10000, views=n, cameras="random")
    shape = make_shape(0, SPLITS["test"], 0, cfg)
    return shape["images"], shape["view_cameras"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views-model", required=True, help="a views model: a shipped name or a file")
    p.add_argument("--image-model", default="image", help="the baseline (default: the shipped image model)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", type=Path)
    args = p.parse_args()

    from backend.allocator import ensure_fast_allocator

    ensure_fast_allocator(sys.argv)
    from backend.engine.reconstructor import Reconstructor
    from backend.engine.types import Observation, ReconstructOptions

    pictures, cameras = shoot()
    engine = Reconstructor("cpu")
    options = ReconstructOptions(resolution=128, keep_field=False)
    cases = {
        "image model, 1 picture": (args.image_model, Observation(image=pictures[0])),
        "views model, 1 view": (args.views_model, Observation(views=pictures[:1], cameras=cameras[:1])),
        "views model, 3 views": (args.views_model, Observation(views=pictures, cameras=cameras)),
    }
    rows = []
    for name, (model, observation) in cases.items():
        engine.reconstruct(model, observation, options)  # warm
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            mesh = engine.reconstruct(model, observation, options)
            times.append(time.perf_counter() - t0)
        rows.append({"case": name, "seconds": statistics.median(times), "faces": len(mesh.faces)})
    base = rows[0]["seconds"]
    for row, views in zip(rows, (None, 1, 3), strict=True):
        target = "" if views is None else f"target {TARGETS_S[views]:.1f} s"
        print(f"{row['case']:<24} {row['seconds']:6.2f} s  x{row['seconds'] / base:4.2f}  {target}")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
