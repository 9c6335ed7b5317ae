"""Cost of the serve process: start-up to ready, extract over the pipe, echo, cancel latency.

Every number is compared with a baseline measured in the same run:
- an ``extract`` over the pipe against the extraction time the backend itself reports for that
  request (the difference is what the pipe, the framing and the two processes add), and against
  the same extract called in-process on an engine in this process;
- the extract's overhead against an ``echo`` carrying the same mesh arrays (both ways);
- start-up to ready against a fresh interpreter importing torch.

    python bench/bench_serve.py                       # a tiny random model in a temporary folder
    python bench/bench_serve.py --weights backend/weights/pointcloud.safetensors
    python bench/bench_serve.py --weights-dir backend/weights --model pointcloud
    python bench/bench_serve.py --quick               # fewer repetitions
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend import wire  # noqa: E402
from backend.wire import BackendProcess  # noqa: E402
from occupancy_addon.backend_process import backend_command, backend_environment  # noqa: E402


def tiny_weights(folder: Path) -> str:
    """A randomly initialised point-cloud model (the bench measures transport, not quality)."""
    import torch

    from backend.checkpoint import ModelMeta, save_weights
    from backend.config import ModelConfig
    from backend.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(kind="pointcloud", hidden=32, n_blocks=2, c_dim=32, encoder_hidden=32)
    save_weights(
        folder / "bench_points.safetensors",
        build_model(cfg),
        ModelMeta("bench_points", "pointcloud", 0.5, vars(cfg)),
    )
    return "bench_points"


def sphere_points(n: int = 300) -> np.ndarray:
    p = np.random.default_rng(0).normal(size=(n, 3))
    return (0.4 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def median_ms(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def spawn(weights: Path, env: dict[str, str]) -> tuple[BackendProcess, float]:
    argv = backend_command(Path(sys.executable), ["serve", "--weights-dir", str(weights), "--device", "cpu"])
    start = time.perf_counter()
    client = BackendProcess(argv, cwd=REPO, env=env)
    client.wait_ready(120)
    return client, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", type=Path, help="a point-cloud model file (.safetensors)")
    parser.add_argument("--weights-dir", type=Path, help="model folder (default: a tiny random model)")
    parser.add_argument("--model", help="model name in --weights-dir")
    parser.add_argument("--faces", type=int, default=50_000, help="aim for meshes of about this many faces")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (checks that it runs)")
    args = parser.parse_args()
    if args.weights is not None and args.weights_dir is not None:
        parser.error("give --weights or --weights-dir, not both")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"no such model file: {args.weights}")
    if args.quick:
        args.repeats = min(args.repeats, 5)
    startup_runs, cancel_runs = (1, 1) if args.quick else (3, 3)
    env = backend_environment(REPO, os.environ)  # the backend sets its allocator up itself

    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights_dir or Path(tmp)
        if args.weights is not None:  # the server lists a folder: give it one holding just this file
            (weights / args.weights.name).symlink_to(args.weights.resolve())
            model = args.weights.stem
        else:
            model = args.model or (tiny_weights(weights) if args.weights_dir is None else None)

        # -- start-up -------------------------------------------------------------------------------------
        bare = []  # time until a fresh interpreter has imported torch (its exit is not counted)
        for _ in range(startup_runs):
            start = time.perf_counter()
            probe = subprocess.Popen(
                [sys.executable, "-c", "import torch; print('imported', flush=True)"],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert probe.stdout is not None and probe.stdout.readline().strip() == "imported"
            bare.append(time.perf_counter() - start)
            probe.wait()
        startups = []
        for _ in range(startup_runs):
            client, seconds = spawn(weights, env)
            startups.append(seconds)
            client.close()
        up, torch_only = statistics.median(startups), statistics.median(bare)
        print(
            f"start-up to ready      {up:6.2f} s   "
            f"(a fresh python importing torch: {torch_only:.2f} s, ratio {up / torch_only:.2f}); "
            f"target <= 3 s: {'met' if up <= 3.0 else 'NOT met'}"
        )

        # -- a field whose mesh has about --faces faces ---------------------------------------------------
        client, _ = spawn(weights, env)
        ready_models = client.wait_ready().fields["models"]
        model = model or next((m["name"] for m in ready_models if m["kind"] == "pointcloud"), None)
        if model is None:
            parser.error(f"no point-cloud model in {weights}")
        obs = sphere_points()
        result = None
        for resolution in (64, 128, 256):
            options = {"resolution": resolution}
            result = client.reconstruct(model=model, points=obs, options=options).wait(600)
            if len(result.arrays["faces"]) >= 0.8 * args.faces:
                break
        assert result is not None
        field_id, tau = result.fields["field_id"], result.fields["tau"]
        taus = [tau * 0.9, tau * 1.1]
        n_faces = len(client.extract(field_id, taus[0]).wait(60).arrays["faces"])
        mib = (len(result.arrays["vertices"]) * 12 + len(result.arrays["faces"]) * 12) / 2**20
        print(f"mesh                   {n_faces} faces at resolution {resolution} ({mib:.2f} MiB of arrays)")

        # -- extract: in-process vs over the pipe ---------------------------------------------------------
        from backend.engine.reconstructor import Reconstructor
        from backend.engine.types import Observation, ReconstructOptions

        engine = Reconstructor(device="cpu", weights_dir=str(weights))
        local = engine.reconstruct(model, Observation(points=obs), ReconstructOptions(resolution=resolution))
        assert local.field_id is not None
        local_id: str = local.field_id
        # Interleaved pairs, so that load from other processes hits both sides alike.
        local_ms, pipe_ms, served_ms = [], [], []
        for i in range(args.repeats):
            tau_i = taus[i % 2]
            local_ms.append(median_ms(lambda t=tau_i: engine.extract(local_id, t), 1))
            start = time.perf_counter()
            reply = client.extract(field_id, tau_i).wait(60)
            pipe_ms.append(1000 * (time.perf_counter() - start))
            served_ms.append(1000 * reply.fields["timings"]["total"])  # the extraction itself, in the backend
        engine.release()
        in_process, over_pipe = statistics.median(local_ms), statistics.median(pipe_ms)
        overhead = statistics.median(p - q for p, q in zip(pipe_ms, local_ms, strict=True))
        on_top = statistics.median(p - q for p, q in zip(pipe_ms, served_ms, strict=True))
        echo_arrays = {"vertices": result.arrays["vertices"], "faces": result.arrays["faces"]}
        echo = median_ms(lambda: client.echo(None, echo_arrays).wait(60), args.repeats)
        empty_echo = median_ms(lambda: client.echo(None).wait(60), args.repeats)
        print(f"extract in-process     {in_process:7.2f} ms")
        print(
            f"extract over the pipe  {over_pipe:7.2f} ms   on top of the extraction itself "
            f"(as the backend timed it, median {statistics.median(served_ms):.2f} ms): {on_top:+.2f} ms; "
            f"target <= 15 ms: {'met' if on_top <= 15 else 'NOT met'}"
        )
        print(
            f"                                  against the in-process extract: {overhead:+.2f} ms "
            f"(median of pairs; ratio {over_pipe / in_process:.2f})"
        )
        print(f"echo, same arrays      {echo:7.2f} ms   (payload both ways; empty echo {empty_echo:.2f} ms)")

        # -- cancel latency during MISE -------------------------------------------------------------------
        latencies = []
        for _ in range(cancel_runs):
            pending = client.reconstruct(model=model, points=obs, options={"resolution": 512})
            while pending.progress is None or pending.progress[0] != "evaluate":
                time.sleep(0.005)
            time.sleep(0.2)
            start = time.perf_counter()
            pending.cancel()
            try:
                pending.wait(60)
            except wire.BackendError as e:
                assert e.code == wire.CANCELLED, e
            latencies.append(time.perf_counter() - start)
        print(
            f"cancel during MISE     {1000 * statistics.median(latencies):7.1f} ms  "
            f"(median of {cancel_runs}; target about 200 ms; "
            f"empty echo {empty_echo:.2f} ms)"
        )
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
