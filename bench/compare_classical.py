"""A point-cloud model side by side with Screened Poisson and Ball Pivoting, on the same inputs.

Each held-out shape is observed once (``backend evaluate``'s observations: --points, --noise,
--views for a partial scan), and the model (through the engine, as the CLI runs it) and the
classical methods (``bench/classical.py``, Open3D) reconstruct it from exactly those points. All
meshes are scored by ``backend.evaluation.score`` (IoU by ray parity, Chamfer-L1, normal
consistency, F-score at 1%), as means over all shapes and, for a set of several families (the
unfamiliar set's ``shell-042.ply`` ...), over each family. Ball Pivoting leaves open meshes, whose
IoU by ray parity is only indicative.

    python bench/compare_classical.py pointcloud --n 100 --points 3000
    python bench/compare_classical.py pointcloud --points 10000 --views 3
    python bench/compare_classical.py pointcloud --source .data/unfamiliar/prepared --points 30000

Needs the bench extra (`pip install -e .[bench]`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from backend.allocator import ensure_fast_allocator  # noqa: E402

ensure_fast_allocator(sys.argv)

from classical import METHODS, available, family  # noqa: E402

from backend.commands.evaluate import add_arguments, settings_from_args  # noqa: E402
from backend.engine.reconstructor import Reconstructor  # noqa: E402
from backend.evaluation import METRICS, EvalSettings, score, test_cases  # noqa: E402

SHOWN = ("iou", "chamfer_l1", "normal_consistency", "fscore")


def compare(
    engine: Reconstructor, model: str, settings: EvalSettings, methods: list[str], progress: bool = True
) -> dict:
    """Per method: mean metrics and mean seconds per shape, plus the per-shape rows."""
    _, meta = engine.load(model)
    options = settings.reconstruct_options()
    rows: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    names: list[str] = []
    for case in test_cases(meta.kind, meta, settings, progress):
        points = case.observation.points
        assert points is not None
        for method in methods:
            t0 = time.perf_counter()
            if method == "model":
                mesh = engine.reconstruct(model, case.observation, options)
                vertices, faces = mesh.vertices, mesh.faces
            else:
                vertices, faces = METHODS[method](points)
            seconds = time.perf_counter() - t0
            rows[method].append({**score(case, vertices, faces, settings), "seconds": seconds})
        names.append(case.name)
    keys = (*METRICS, "seconds")
    families = [family(name) for name in names]
    by_family = {
        f: {
            m: {k: float(np.mean([r[k] for r, g in zip(rs, families, strict=True) if g == f])) for k in keys}
            for m, rs in rows.items()
        }
        for f in dict.fromkeys(families)
    }
    return {
        "model": model,
        "settings": {k: str(v) for k, v in vars(settings).items()},
        "mean": {m: {k: float(np.mean([r[k] for r in rs])) for k in keys} for m, rs in rows.items() if rs},
        "by_family": by_family if len(by_family) > 1 else {},
        "shapes": rows,
        "names": names,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)  # the same observations and scoring options as `backend evaluate`
    p.add_argument("--methods", default="model,poisson,ball_pivoting", help="comma-separated")
    p.set_defaults(n=100, points=3000, noise=0.005)
    args = p.parse_args()
    methods = args.methods.split(",")
    unknown = [m for m in methods if m != "model" and m not in METHODS]
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; known: model, {', '.join(METHODS)}")
    if any(m in METHODS for m in methods) and not available():
        p.error("Open3D is not installed: pip install -e .[bench] (it also needs libusb-1.0)")
    settings = settings_from_args(args)
    settings.check()
    engine = Reconstructor(args.device, half=args.half, threads=args.threads)
    result = compare(engine, args.weights, settings, methods)
    print(f"{args.n} shapes, {args.points} points, noise {args.noise}, views {args.views}, {args.source}")
    print(f"{'method':>14}  " + "  ".join(f"{k:>18}" for k in (*SHOWN, "seconds")))
    for method, mean in result["mean"].items():
        print(f"{method:>14}  " + "  ".join(f"{mean[k]:>18.4f}" for k in (*SHOWN, "seconds")))
    for name, means in result["by_family"].items():  # a set of several families, each on its own
        print(f"{name}:")
        for method, mean in means.items():
            print(f"{method:>14}  " + "  ".join(f"{mean[k]:>18.4f}" for k in (*SHOWN, "seconds")))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
