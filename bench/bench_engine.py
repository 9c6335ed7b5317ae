"""Speed and memory of the reconstruction engine, each against a baseline measured in the same run.

1. End to end: 300 points -> mesh at 128^3, warm, median of several runs (per-stage split).
2. Field evaluation throughput against this CPU's plain matmul throughput for the same FLOPs,
   for the folded decoder and the generic module, and per chunk size.
3. MISE against a dense 129^3 evaluation of the same field: network evaluations, time, and
   the distance between the two meshes.
4. Re-extraction at a new threshold (cached field): median time at 128^3.
5. Peak memory (RSS) of a 512^3 reconstruction, against the size of a dense 513^3 grid.

The model is the file given with --weights, else the shipped point-cloud model when
backend/weights/pointcloud.safetensors exists, else a randomly initialised model of the shipped
size (decoder width 128, 5 blocks, c_dim 128). A random network's surface is nothing like an
object's, so the MISE and re-extraction figures also use a "surrogate" field: the same network is
evaluated (same cost per point) but the logits come from an analytic chair, the shape in examples/.

    python bench/bench_engine.py --weights backend/weights/pointcloud.safetensors   # ~2 min, 2 cores
    python bench/bench_engine.py --quick    # fewer repetitions, no 512^3 run
    python bench/bench_engine.py --smoke    # a tiny random model: checks that every part runs
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.allocator import ensure_fast_allocator  # noqa: E402

ensure_fast_allocator(sys.argv)  # large allocations are slow without it (see backend/allocator.py)

import torch  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from backend.checkpoint import ModelMeta, save_weights  # noqa: E402
from backend.config import ModelConfig  # noqa: E402
from backend.engine.extract import extract_mesh, logit  # noqa: E402
from backend.engine.field import Field, NetworkField  # noqa: E402
from backend.engine.grid import Grid  # noqa: E402
from backend.engine.inputs import read_observation  # noqa: E402
from backend.engine.lattice import LatticeValues  # noqa: E402
from backend.engine.marching import march_dense  # noqa: E402
from backend.engine.observation import UserFrame  # noqa: E402
from backend.engine.reconstructor import Reconstructor  # noqa: E402
from backend.engine.types import MeshResult, Observation, ReconstructOptions  # noqa: E402
from backend.models import build_model  # noqa: E402

SHIPPED = REPO / "backend" / "weights" / "pointcloud.safetensors"
EXAMPLE = REPO / "examples" / "chair_points.ply"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def decoder_flops(cfg: ModelConfig) -> float:
    """Multiply-adds x 2 per query point of the decoder (linear layers only)."""
    h, blocks = cfg.hidden, cfg.n_blocks
    return 2.0 * (3 * h + blocks * 2 * h * h + h)


def matmul_gflops(hidden: int, rows: int = 8192, seconds: float = 1.0) -> float:
    a, w = torch.randn(rows, hidden), torch.randn(hidden, hidden)
    for _ in range(3):
        a @ w
    n, t = 0, time.perf_counter()
    while time.perf_counter() - t < seconds:
        a @ w
        n += 1
    return n * 2 * rows * hidden * hidden / (time.perf_counter() - t) / 1e9


def chair_logits(unit_points: torch.Tensor, frame: UserFrame, sharpness: float = 60.0) -> torch.Tensor:
    """Logits of the example chair (positive inside), at points of the normalised frame."""
    sys.path.insert(0, str(REPO / "examples"))
    from make_examples import CHAIR, OFFSET

    p = unit_points.double() * frame.scale + torch.from_numpy(frame.center)  # metres
    sdf = None
    for lo, hi in CHAIR:
        lo_t, hi_t = torch.tensor(lo) + torch.from_numpy(OFFSET), torch.tensor(hi) + torch.from_numpy(OFFSET)
        c, half = (lo_t + hi_t) / 2, (hi_t - lo_t) / 2
        q = (p - c).abs() - half
        d = q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)
        sdf = d if sdf is None else torch.minimum(sdf, d)
    assert sdf is not None
    return (-sharpness * sdf / frame.scale).float()


class SurrogateField(NetworkField):
    """The network's cost per point, an analytic chair's surface."""

    def __init__(self, network: NetworkField, frame: UserFrame) -> None:
        super().__init__(network.model, network.c, network.z, obs=network.obs)
        self.frame = frame

    def _infer(self, p: torch.Tensor) -> torch.Tensor:
        return super()._infer(p) * 0.0 + chair_logits(p, self.frame)

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        return super().logits(p) * 0.0 + chair_logits(p, self.frame)


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    return 0.5 * float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def model_for_bench(folder: Path, weights: Path | None, smoke: bool) -> tuple[str, str, bool]:
    """(model file, what it is, whether it is trained)."""
    if weights is not None:
        return str(weights), f"{weights}", True
    if SHIPPED.is_file() and not smoke:
        return str(SHIPPED), "the shipped point-cloud model", True
    torch.manual_seed(0)
    # the shipped size: decoder 128 wide, 5 blocks, c_dim 128; a tiny one for a smoke run
    cfg = ModelConfig(hidden=32, n_blocks=2, c_dim=32, encoder_hidden=32) if smoke else ModelConfig()
    path = folder / "random_pointcloud.safetensors"
    save_weights(path, build_model(cfg), ModelMeta("random_pointcloud", "pointcloud", 0.2, vars(cfg)))
    size = "a tiny (smoke run)" if smoke else "the shipped size (no trained weights found)"
    return str(path), f"a randomly initialised model of {size}", False


def observation_300() -> Observation:
    """300 of the example chair's points with noise 0.005 of its size, as the model was trained."""
    points = read_observation(EXAMPLE).points
    assert points is not None
    rng = np.random.default_rng(0)
    pick = points[rng.choice(len(points), 300, replace=False)]
    extent = float((points.max(0) - points.min(0)).max())
    return Observation(points=(pick + rng.normal(scale=0.005 * extent, size=pick.shape)).astype(np.float32))


def section(title: str) -> None:
    print(f"\n== {title}")


def bench_end_to_end(engine: Reconstructor, model: str, repeats: int) -> MeshResult:
    section("end to end: 300 points -> mesh at 128^3 (warm)")
    obs = observation_300()
    options = ReconstructOptions(resolution=128, keep_field=False)
    engine.reconstruct(model, obs, options)  # warm-up: model load, first allocations
    results = []
    for _ in range(repeats):
        results.append(engine.reconstruct(model, obs, options))
    total = statistics.median(r.timings["total"] for r in results)
    r = results[-1]
    split = ", ".join(
        f"{k} {statistics.median(x.timings[k] for x in results):.3f}" for k in r.timings if k != "total"
    )
    print(
        f"median {total:.3f} s over {repeats} runs ({split}); "
        f"{len(r.faces)} faces, {r.stats['evaluations']:.0f} evaluations"
    )
    print(f"target <= 1.0 s: {'met' if total <= 1.0 else 'NOT met'} (ratio to target {total / 1.0:.2f})")
    return r


def bench_throughput(net: NetworkField, cfg: ModelConfig, quick: bool) -> None:
    section("field evaluation throughput vs plain matmul (same FLOPs)")
    gflops_mm = matmul_gflops(cfg.hidden, seconds=0.3 if quick else 1.0)
    flops = decoder_flops(cfg)
    print(f"plain matmul (8192 x {cfg.hidden}) @ ({cfg.hidden} x {cfg.hidden}): {gflops_mm:.1f} GFLOP/s")
    points = (np.random.default_rng(0).random((32768 if quick else 131072, 3)) - 0.5).astype(np.float32)
    plain = NetworkField(net.model, net.c, net.z, fold=False, obs=net.obs)
    for name, field in (("folded decoder", net), ("generic module", plain)):
        for chunk in (8192,) if quick else (4096, 8192, 16384, 65536):
            field.chunk = chunk
            field.evaluate(points[:chunk])
            t = median_time(lambda f=field: f.evaluate(points), 3)
            rate = len(points) / t
            print(
                f"{name:>15}, chunk {chunk:>6}: {rate / 1e3:6.0f}k points/s = "
                f"{rate * flops / 1e9:5.1f} GFLOP/s "
                f"= {rate * flops / 1e9 / gflops_mm:.2f} x matmul"
            )
    net.chunk = plain.chunk = 8192


def bench_mise_vs_dense(field: Field, frame: UserFrame, tau: float, label: str) -> None:
    section(f"MISE vs dense 129^3 on {label}")
    grid = Grid(128)
    values = LatticeValues(129)
    t = time.perf_counter()
    mise = extract_mesh(field, values, grid, frame, tau, ReconstructOptions(resolution=128))
    t_mise = time.perf_counter() - t
    axis = np.arange(129)
    lattice = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    t = time.perf_counter()
    dense_vals = field.evaluate(grid.to_unit(lattice)).reshape(129, 129, 129)
    verts, faces = march_dense(dense_vals, logit(tau))
    dense_v = frame.to_user(grid.to_unit(verts))
    t_dense = time.perf_counter() - t
    evals = mise.stats["evaluations"]
    dist = chamfer(mise.vertices / frame.scale, dense_v / frame.scale) if len(faces) else float("nan")
    print(
        f"evaluations: MISE {evals:.0f} vs dense {129**3} -> "
        f"{129**3 / max(evals, 1):.1f}x fewer (target >= 10x)"
    )
    print(
        f"time: MISE {t_mise:.2f} s vs dense {t_dense:.2f} s -> {t_dense / t_mise:.1f}x faster (target >= 5x)"
    )
    print(
        f"meshes: {len(mise.faces)} vs {len(faces)} faces, "
        f"Chamfer-L1 {dist:.2e} in unit-cube units (target <= 1e-3)"
    )


def bench_re_extraction(engine: Reconstructor, field_id: str, tau: float, repeats: int, label: str) -> None:
    taus = [tau * 0.8, tau * 1.25]
    engine.extract(field_id, taus[0])  # the first call evaluates what the new level sets need
    engine.extract(field_id, taus[1])
    times, evals = [], []
    for i in range(repeats):
        r = engine.extract(field_id, taus[i % 2])
        times.append(r.timings["total"])
        evals.append(r.stats["evaluations"])
    ms = statistics.median(times) * 1e3
    faces = len(r.faces)
    verdict = "met" if ms <= 60 else "NOT met"
    print(
        f"{label}: median {ms:.1f} ms over {repeats} (tau {taus[0]:.3f} <-> {taus[1]:.3f}, {faces} faces, "
        f"{max(evals):.0f} new evaluations); target <= 60 ms: {verdict}"
    )


def peak_rss_512(model: str) -> None:
    section("memory at 512^3 (separate process)")
    code = f"""
import sys, time
sys.path.insert(0, {str(REPO / "bench")!r})
from bench_engine import (
    Grid, LatticeValues, ReconstructOptions, Reconstructor, SurrogateField, extract_mesh, observation_300,
)
engine = Reconstructor(device="cpu", cache_bytes=2**31)
obs = observation_300()
r = engine.reconstruct({model!r}, obs, ReconstructOptions(resolution=32))
entry = engine.cache.get(r.field_id)
def high_water():  # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
base = high_water()
field = SurrogateField(entry.field, entry.frame)
values = LatticeValues(513)
t = time.perf_counter()
mesh = extract_mesh(field, values, Grid(512), entry.frame, 0.5, ReconstructOptions(resolution=512))
t = time.perf_counter() - t
peak = high_water()
print(f"{{t:.1f}} {{len(mesh.faces)}} {{mesh.stats['evaluations']:.0f}} {{values.nbytes}} {{base}} {{peak}}")
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        print("failed:", done.stderr[-2000:])
        return
    t, faces, evals, store, base, peak = done.stdout.split()[-6:]
    dense = 513**3 * 4 / 2**20
    print(f"surrogate chair at 512^3: {float(t):.1f} s, {faces} faces, {evals} evaluations")
    print(
        f"peak RSS {int(peak) / 1024:.0f} MB (after loading: {int(base) / 1024:.0f} MB; value store "
        f"{int(store) / 2**20:.0f} MB) vs a dense 513^3 float32 grid alone: {dense:.0f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, help="a point-cloud model file (.safetensors) to measure")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, skip the 512^3 run")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny random model, minimal repetitions: only checks that it runs",
    )
    args = parser.parse_args()
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"no such model file: {args.weights}")
    args.quick |= args.smoke
    repeats = 1 if args.smoke else 3 if args.quick else 7
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        model, which, trained = model_for_bench(Path(tmp), args.weights, args.smoke)
        print(f"model: {which}")
        engine = Reconstructor(device="cpu", weights_dir=tmp, cache_bytes=2**30)
        net_model, meta = engine.load(model)
        cfg = meta.model_config()
        if meta.kind != "pointcloud":
            parser.error(f"{model} is a {meta.kind} model; the benchmark needs a point-cloud model")
        bench_end_to_end(engine, model, repeats)

        kept = engine.reconstruct(model, observation_300(), ReconstructOptions(resolution=128))
        assert kept.field_id is not None
        entry = engine.cache.get(kept.field_id)
        net = entry.field
        assert isinstance(net, NetworkField)
        bench_throughput(net, cfg, args.quick)

        surrogate = SurrogateField(net, entry.frame)
        section("end to end on the surrogate chair: encode 300 points, MISE + marching cubes at 128^3")
        runs = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            engine.reconstruct(model, observation_300(), ReconstructOptions(resolution=32, keep_field=False))
            encode = time.perf_counter() - t  # an upper bound: includes a 32^3 extraction
            mesh = extract_mesh(
                surrogate, LatticeValues(129), Grid(128), entry.frame, 0.5, ReconstructOptions()
            )
            runs.append(encode + mesh.timings["total"])
        total = statistics.median(runs[1:])
        verdict = "met" if total <= 1.0 else "NOT met"
        print(
            f"median {total:.3f} s ({len(mesh.faces)} faces, {mesh.stats['evaluations']:.0f} evaluations); "
            f"target <= 1.0 s: {verdict}"
        )
        if trained:
            bench_mise_vs_dense(net, entry.frame, meta.tau, "the trained model (chair, 300 points)")
        bench_mise_vs_dense(
            surrogate, entry.frame, 0.5, "the surrogate chair (network cost, analytic surface)"
        )

        section("re-extraction at a new threshold, 128^3")
        label = "trained model" if trained else "random network"
        if len(kept.faces):
            bench_re_extraction(engine, kept.field_id, kept.tau, repeats * 3, label)
        else:
            print(f"{label}: no surface at tau {kept.tau}; skipped")
        values = LatticeValues(129)
        extract_mesh(surrogate, values, Grid(128), entry.frame, 0.5, ReconstructOptions())
        from backend.engine.cache import CachedField

        sid = engine.cache.add(
            CachedField(surrogate, values, Grid(128), entry.frame, ReconstructOptions(), "surrogate")
        )
        assert sid is not None
        bench_re_extraction(engine, sid, 0.5, repeats * 3, "surrogate chair")
        del net_model
        if not args.quick:
            peak_rss_512(model)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"\nbench process peak RSS {usage.ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
