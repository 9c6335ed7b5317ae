"""Speed and memory of dense point clouds: the warm engine against Open3D's Screened Poisson.

For clouds of 3,000, 100,000 and 1,000,000 points (128^3) and 100,000 points at 256^3, drawn
from one procedural test shape's surface with noise 0.002, it times a warm ``Reconstructor``
(model loaded, one reconstruction done, as in the add-on's backend process) and Open3D's
Screened Poisson at depth 8 with estimated, oriented normals (``bench/classical.py``) on the
same points, in the same run, and reports the ratio. Each case runs in its own process, so its
peak resident memory (VmHWM, reset after the warm-up) is its own.

    python bench/bench_dense.py                    # the shipped point-cloud model
    python bench/bench_dense.py --weights runs/pointcloud-dense/best.safetensors
    python bench/bench_dense.py --no-poisson       # the model only (no Open3D needed)
    python bench/bench_dense.py --half             # also with --half (bfloat16 on a CPU with AMX)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

CASES = ((3_000, 128, 0.4), (100_000, 128, 1.5), (1_000_000, 128, 6.0), (100_000, 256, 4.0))
CLOUD = REPO / ".data" / "bench" / "dense-cloud-1000000.npy"


def make_cloud(n: int = 1_000_000) -> np.ndarray:
    """n points on a procedural test shape's surface (unit frame) with noise 0.002, cached."""
    if CLOUD.exists():
        return np.load(CLOUD)
    import torch

    from backend.config import DataConfig
    from backend.data.generate import SPLITS, make_shape

    shape = make_shape(0, SPLITS["test"], 0, DataConfig(surface_points=n, views=0))
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    points = shape["surface"].astype(np.float32) + rng.normal(0, 0.002, (n, 3)).astype(np.float32)
    CLOUD.parent.mkdir(parents=True, exist_ok=True)
    np.save(CLOUD, points)
    return points


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_case(weights: str, n: int, resolution: int, repeats: int, poisson: bool, half: bool) -> dict:
    """One case, in this process: warm up, then time the model (in float32, then with ``--half``
    if asked) and Poisson on n points."""
    from backend.allocator import ensure_fast_allocator

    ensure_fast_allocator(sys.argv)
    from backend.engine.reconstructor import Reconstructor
    from backend.engine.types import Observation, ReconstructOptions

    cloud = make_cloud()
    points = cloud[np.random.default_rng(1).choice(len(cloud), n, replace=False)] if n < len(cloud) else cloud
    options = ReconstructOptions(resolution=resolution, keep_field=False)
    out: dict = {"points": n, "resolution": resolution}
    for label, precision in (("model", False), *((("half", True),) if half else ())):
        engine = Reconstructor("cpu", half=precision)
        engine.reconstruct(weights, Observation(points=cloud[:3000]), options)  # warm: model, tables
        _reset_peak()
        times, faces, timings = [], 0, {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            mesh = engine.reconstruct(weights, Observation(points=points), options)
            times.append(time.perf_counter() - t0)
            faces, timings = len(mesh.faces), mesh.timings
        out[f"{label}_s"] = statistics.median(times)
        out[f"{label}_peak_mb"] = _peak_mb()
        out[f"{label}_faces"] = faces
        out[f"{label}_stages_s"] = {k: round(v, 3) for k, v in timings.items()}
        del engine
    if poisson:
        from classical import poisson as poisson_mesh

        t0 = time.perf_counter()
        poisson_mesh(points)
        out["poisson_s"] = time.perf_counter() - t0
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default="pointcloud", help="a shipped model's name or a .safetensors file")
    p.add_argument("--no-poisson", action="store_true", help="skip Open3D")
    p.add_argument("--half", action="store_true", help="also time --half (a CPU with AMX: bfloat16)")
    p.add_argument("--repeats", type=int, default=3, help="runs per case below 1M points (median)")
    p.add_argument("--json", type=Path)
    p.add_argument("--case", nargs=2, type=int, help=argparse.SUPPRESS)  # internal: one case
    args = p.parse_args()
    if args.case is not None:
        n, res = args.case
        repeats = 1 if n >= 1_000_000 else args.repeats
        print(json.dumps(run_case(args.weights, n, res, repeats, not args.no_poisson, args.half)))
        return 0
    make_cloud()
    rows = []
    header = ("points", "res", "model s", "half s", "target", "Poisson s", "ratio", "peak MB")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (10, 4, 8, 7, 7, 10, 6, 8), strict=True)))
    for n, res, target in CASES:
        cmd = [sys.executable, __file__, "--weights", args.weights, "--case", str(n), str(res)]
        cmd += ["--repeats", str(args.repeats)] + (["--no-poisson"] if args.no_poisson else [])
        cmd += ["--half"] if args.half else []
        row = json.loads(
            subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1]
        )
        row["target_s"] = target
        rows.append(row)
        poisson_s, half_s = row.get("poisson_s", float("nan")), row.get("half_s", float("nan"))
        print(
            f"{n:>10,} {res:>4} {row['model_s']:>8.2f} {half_s:>7.2f} {target:>7.1f} {poisson_s:>10.2f} "
            f"{row['model_s'] / poisson_s:>6.2f} {row['model_peak_mb']:>8.0f}",
            flush=True,
        )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
