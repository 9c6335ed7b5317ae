"""Files per minute of ``reconstruct-many`` against a plain loop over ``reconstruct``, in one run.

The folder holds copies of the example chair's points (each rotated, scaled and moved at random,
so no two files are the same) and the example's voxel grids: two kinds, two models. The baseline
starts ``python -m backend reconstruct`` once per file, one after the other, as a shell loop
would; ``reconstruct-many`` is timed with 1 worker and with one worker per core. Every time is
wall-clock from the command's start to its end (process start-up and model loading included).

    python bench/bench_folders.py                       # 8 files at 128^3, the shipped models
    python bench/bench_folders.py --files 16 --resolution 64 --device cuda
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.batch import usable_cores  # noqa: E402
from backend.engine.inputs import read_observation  # noqa: E402

EXAMPLES = REPO / "examples"


def make_inputs(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` files: every fourth a voxel grid, the others moved copies of the chair's points."""
    points = read_observation(EXAMPLES / "chair_points.ply").points
    assert points is not None
    rng = np.random.default_rng(seed)
    for i in range(count):
        if i % 4 == 3:
            shutil.copy(EXAMPLES / "chair_voxels.npy", folder / f"grid_{i:03d}.npy")
            continue
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))  # a random rotation (or reflection)
        moved = (points @ q.T) * rng.uniform(0.5, 2.0) + rng.normal(size=3)
        np.savetxt(folder / f"scan_{i:03d}.xyz", moved, fmt="%.6f")


def timed(command: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    python = [sys.executable, "-m", "backend"]
    options = ["--resolution", str(args.resolution), "--device", args.device]
    cores = usable_cores()
    rows: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-folders-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        make_inputs(inputs, args.files)
        files = sorted(inputs.iterdir())

        loop_out = Path(tmp) / "loop"
        loop_out.mkdir()
        started = time.perf_counter()
        for source in files:
            timed([*python, "reconstruct", str(source), "-o", str(loop_out / f"{source.stem}.ply"), *options])
        rows.append(("loop over reconstruct", time.perf_counter() - started))

        worker_counts = [1] if args.device.startswith("cuda") else sorted({1, cores})
        for workers in worker_counts:
            out = Path(tmp) / f"many-{workers}"
            many = [*python, "reconstruct-many", str(inputs), "-o", str(out), "--workers", str(workers)]
            rows.append((f"reconstruct-many, {workers} worker(s)", timed([*many, *options])))

    print(f"{args.files} files at {args.resolution}^3 on {args.device}, {cores} core(s)")
    base = rows[0][1]
    print(f"{'command':<32} {'seconds':>8} {'files/min':>10} {'speed-up':>9}")
    for name, seconds in rows:
        print(f"{name:<32} {seconds:8.1f} {60 * args.files / seconds:10.1f} {base / seconds:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
