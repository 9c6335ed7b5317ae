"""Training speed of the shipped point-cloud config, against baselines measured in the same run.

1. Throughput: query points per second through a full training step (batch, forward,
   backward, Adam), and the data pipeline's share of the step (drawing the batch:
   observed points, query points, their exact occupancy).
2. The step's FLOPs (counted by torch's FlopCounterMode, forward and backward) against a
   plain matmul of the same FLOPs, once as one square matmul and once as the step's
   typical shape, (batch x query points, hidden) @ (hidden, hidden).

The data is a small procedural pool generated into a temporary folder with the config's
data settings (the pool size does not change the cost of a batch).

    python bench/bench_training.py                 # about a minute on 2 CPU cores
    python bench/bench_training.py --steps 5 --shapes 8   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.allocator import ensure_fast_allocator  # noqa: E402

ensure_fast_allocator(sys.argv)  # large allocations are slow without it (see backend/allocator.py)

import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from backend.config import load_config  # noqa: E402
from backend.data.dataset import ShapePool  # noqa: E402
from backend.data.generate import build_split  # noqa: E402
from backend.models import build_model  # noqa: E402

CONFIG = REPO / "backend" / "configs" / "pointcloud.toml"


def matmul_seconds(rows: int, inner: int, cols: int, flops: float, repeats: int = 5) -> float:
    """Median time to do ``flops`` of (rows x inner) @ (inner x cols) matmuls."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    per_call = 2.0 * rows * inner * cols
    calls = max(1, round(flops / per_call))
    for _ in range(2):
        a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(calls):
            a @ b
        times.append((time.perf_counter() - t) * flops / (calls * per_call))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--shapes", type=int, default=32, help="shapes in the generated pool")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config)
    b, m = cfg.train.batch_size, cfg.data.query_points
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    mc = cfg.model
    print(
        f"config {args.config.name}: {mc.kind}, decoder {mc.hidden} wide x {mc.n_blocks} blocks, "
        f"c_dim {mc.c_dim}; batch {b} shapes x {m} query points, {cfg.data.n_points} observed points"
    )

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pool = ShapePool(build_split(cfg.data, "train", args.shapes, Path(tmp)))
        print(f"generated {len(pool)} shapes in {time.perf_counter() - t:.1f} s")

    torch.manual_seed(0)
    model = build_model(cfg.model).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    gen = torch.Generator().manual_seed(0)
    kind = cfg.model.kind

    def draw() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        idx = torch.randint(len(pool), (b,), generator=gen)
        batch = pool.batch(kind, idx, cfg.data, gen)
        return batch.points, batch.occ, batch.inputs

    def step(points: torch.Tensor, occ: torch.Tensor, inputs: torch.Tensor | None) -> None:
        loss, _ = model.loss(points, occ, inputs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step(*draw())
    with FlopCounterMode(display=False) as counter:
        step(*draw())
    flops = float(counter.get_total_flops())

    data_times, step_times = [], []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        batch = draw()
        t1 = time.perf_counter()
        step(*batch)
        t2 = time.perf_counter()
        data_times.append(t1 - t0)
        step_times.append(t2 - t1)
    t_data, t_step = statistics.median(data_times), statistics.median(step_times)
    total = t_data + t_step
    hidden = cfg.model.hidden
    side = round((flops / 2) ** (1 / 3))
    t_square = matmul_seconds(side, side, side, flops)
    t_shaped = matmul_seconds(b * m, hidden, hidden, flops)

    print("\n== training throughput (median step)")
    print(f"step {1000 * total:.0f} ms = data {1000 * t_data:.1f} ms + model {1000 * t_step:.0f} ms")
    print(f"throughput: {b * m / total:,.0f} query points/s ({b / total:.1f} shapes/s)")
    print(f"data pipeline share of a step: {100 * t_data / total:.1f}%")
    print("\n== against a plain matmul of the same FLOPs")
    print(
        f"FLOPs per step (forward + backward): {flops / 1e9:.2f} GFLOP -> {flops / t_step / 1e9:.1f} GFLOP/s"
    )
    print(
        f"square matmul {side}^3: {1000 * t_square:.0f} ms ({flops / t_square / 1e9:.1f} GFLOP/s); "
        f"model step / matmul = {t_step / t_square:.2f}x"
    )
    print(
        f"matmul ({b * m} x {hidden}) @ ({hidden} x {hidden}): {1000 * t_shaped:.0f} ms "
        f"({flops / t_shaped / 1e9:.1f} GFLOP/s); model step / matmul = {t_step / t_shaped:.2f}x"
    )


if __name__ == "__main__":
    main()
