"""End-to-end check of the device paths, against the CPU: one table, non-zero exit on any failure.

What runs on the device (CUDA when torch sees a GPU, else the CPU as a fallback that the tests
use, at small resolutions):

- ``python -m backend info``: torch's version and the GPUs it sees.
- ``python -m backend reconstruct`` of the example chair at each resolution, in float32 and with
  ``--half``; each mesh is compared with the CPU engine's (Chamfer distance between the meshes'
  vertices, as a fraction of the object's size, within ``--tolerance``). Where the device has
  no 16-bit float that pays (``backend/engine/precision.py``: a CPU without AMX), ``--half``
  must be refused with exit status 2.
- The serve process (the add-on's path): a reconstruction whose field stays cached, a
  re-extraction from that field at another threshold (compared with the CPU too), and its release.
- Running out of memory (CUDA only): a serve process held to a small share of the GPU's memory
  must answer a reconstruction with the ``out_of_memory`` error and go on serving.
- Throughput: a few training steps (query points per second; the first step's loss must match
  the CPU's) and the network's evaluations per second in a reconstruction.

    python scripts/gpu_check.py                    # CUDA if available: about a minute on a GPU
    python scripts/gpu_check.py --device cpu       # the CPU fallback, 32^3 and 64^3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

from backend.commands.reconstruct import default_model  # noqa: E402
from backend.engine.inputs import read_observation  # noqa: E402
from backend.engine.precision import HALF_UNAVAILABLE, half_dtype  # noqa: E402
from backend.engine.reconstructor import Reconstructor  # noqa: E402
from backend.engine.types import ReconstructOptions  # noqa: E402
from backend.models import build_model  # noqa: E402
from backend.wire import OUT_OF_MEMORY, UNKNOWN_FIELD, BackendError, BackendProcess  # noqa: E402

CHAIR = REPO / "examples" / "chair_points.ply"
TOLERANCE = 1e-3
CAPPED_MB = 64  # the out-of-memory check's share of the GPU: a model fits, a batch of points does not


class CheckFailedError(Exception):
    """A check ran but its result is wrong; the message says how."""


@dataclass
class Row:
    check: str
    status: str  # "ok", "FAIL" or "skip"
    seconds: float
    detail: str


class Table:
    """Runs checks, each a function returning its detail, and keeps one row per check."""

    def __init__(self) -> None:
        self.rows: list[Row] = []

    def run(self, check: str, fn: Callable[[], str]) -> None:
        started = time.perf_counter()
        try:
            detail, status = fn(), "ok"
        except CheckFailedError as e:
            detail, status = str(e), "FAIL"
        except Exception as e:  # a check that crashes is a failed check; the others still run
            detail, status = f"{type(e).__name__}: {e}", "FAIL"
        self.rows.append(Row(check, status, time.perf_counter() - started, detail))

    def skip(self, check: str, reason: str) -> None:
        self.rows.append(Row(check, "skip", 0.0, reason))

    def failed(self) -> bool:
        return any(row.status == "FAIL" for row in self.rows)

    def render(self) -> str:
        width = max(len(row.check) for row in self.rows)
        lines = [f"{'check':<{width}}  {'status':<6}  {'seconds':>7}  detail"]
        for row in self.rows:
            lines.append(f"{row.check:<{width}}  {row.status:<6}  {row.seconds:7.2f}  {row.detail}")
        return "\n".join(lines)


def chamfer(a: np.ndarray, b: np.ndarray, size: float) -> float:
    """Symmetric mean nearest-neighbour distance between two vertex sets, over ``size``.

    Meshes from the same grid put their vertices on the same grid edges, so the vertices of
    matching fields coincide; comparing them needs no surface sampling (whose own noise would
    be larger than the tolerance).
    """
    if len(a) == 0 or len(b) == 0:
        return 0.0 if len(a) == len(b) else float("inf")
    ab = cKDTree(b).query(a)[0].mean()
    ba = cKDTree(a).query(b)[0].mean()
    return float(0.5 * (ab + ba) / size)


def matches(vertices: np.ndarray, reference: np.ndarray, size: float, tolerance: float) -> str:
    distance = chamfer(vertices, reference, size)
    detail = f"{len(vertices):,} vertices, Chamfer to CPU {distance:.1e}"
    if not distance <= tolerance:
        raise CheckFailedError(f"{detail} > {tolerance:g}")
    return detail


def backend_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}


def backend(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=REPO,
        env=backend_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def last_line(text: str) -> str:
    return next((line for line in reversed(text.splitlines()) if line.strip()), "")


class GpuCheck:
    def __init__(self, device: str, resolutions: list[int], weights: Path | None, tolerance: float) -> None:
        self.device = device
        self.cuda = device.startswith("cuda")
        self.half = half_dtype(torch.device(device)) is not None  # --half is offered here
        self.resolutions = resolutions
        self.weights = weights
        self.tolerance = tolerance
        self.weight_args = [] if weights is None else ["--weights-dir", str(weights)]
        self.cpu = Reconstructor("cpu", weights)
        self.model = default_model(self.cpu, "pointcloud")
        points = read_observation(CHAIR).points
        assert points is not None
        self.points = points.astype(np.float32)
        self.size = float((points.max(axis=0) - points.min(axis=0)).max())
        self._references: dict[tuple[int, float | None], np.ndarray] = {}
        self.table = Table()

    def reference(self, resolution: int, tau: float | None = None) -> np.ndarray:
        """The CPU engine's mesh vertices, the ground truth of every comparison."""
        key = (resolution, tau)
        if key not in self._references:
            options = ReconstructOptions(tau=tau, resolution=resolution, keep_field=False)
            observation = read_observation(CHAIR)
            self._references[key] = self.cpu.reconstruct(self.model, observation, options).vertices
        return self._references[key]

    # ------------------------------------------------------------------ checks
    def info(self) -> str:
        done = backend("info")
        if done.returncode != 0:
            raise CheckFailedError(f"exit status {done.returncode}: {last_line(done.stderr)}")
        info = json.loads(last_line(done.stdout))
        if self.cuda and not (info["cuda"] and info["gpus"]):
            raise CheckFailedError(f"torch {info['torch']} sees no GPU")
        return f"torch {info['torch']}, GPUs: {', '.join(info['gpus']) or 'none'}"

    def reconstruct(self, resolution: int, half: bool, folder: Path) -> str:
        out = folder / f"chair_{resolution}{'_half' if half else ''}.ply"
        args = ["reconstruct", str(CHAIR), "-o", str(out), "--model", self.model, *self.weight_args]
        args += ["--resolution", str(resolution), "--device", self.device] + (["--half"] if half else [])
        done = backend(*args)
        if half and not self.half:
            if done.returncode == 2 and HALF_UNAVAILABLE in done.stderr:
                return "refused on this device, exit status 2"
            status = f"exit status {done.returncode}, {last_line(done.stderr)}"
            raise CheckFailedError(f"--half on {self.device} was not refused: {status}")
        if done.returncode != 0:
            raise CheckFailedError(f"exit status {done.returncode}: {last_line(done.stderr)}")
        vertices = read_observation(out).points  # the mesh file's vertices
        assert vertices is not None
        return matches(vertices, self.reference(resolution), self.size, self.tolerance)

    def serve(self, resolution: int) -> None:
        """Reconstruct with a cached field, re-extract from it, release it: three rows."""
        argv = [sys.executable, "-m", "backend", "serve", "--device", self.device, *self.weight_args]
        with BackendProcess(argv, cwd=REPO, env=backend_env(), client_name="gpu_check") as process:
            process.wait_ready(300)
            state: dict[str, str] = {}

            def first() -> str:
                options = {"resolution": resolution}
                reply = process.reconstruct(model=self.model, points=self.points, options=options).wait(300)
                state["field"] = str(reply.fields["field_id"])
                reference = self.reference(resolution)
                return matches(reply.arrays["vertices"], reference, self.size, self.tolerance)

            def again() -> str:
                reply = process.extract(state["field"], 0.3).wait(300)
                detail = matches(
                    reply.arrays["vertices"], self.reference(resolution, 0.3), self.size, self.tolerance
                )
                return f"tau 0.3: {detail}"

            def release() -> str:
                process.release(state["field"]).wait(60)
                try:
                    process.extract(state["field"], 0.5).wait(60)
                except BackendError as e:
                    if e.code != UNKNOWN_FIELD:
                        raise
                else:
                    raise CheckFailedError("the released field still answers")
                process.release(None).wait(60)
                return "the field is gone; everything released"

            self.table.run(f"serve reconstruct {resolution}^3 (field kept)", first)
            self.table.run("serve extract from the cached field", again)
            self.table.run("serve release", release)

    def out_of_memory(self) -> str:
        """A serve process held to CAPPED_MB of the GPU: a reconstruction must fail with the
        protocol's out-of-memory error, and the process must go on serving."""
        code = (
            "import sys, torch\n"
            "device = torch.device(sys.argv[1])\n"
            f"share = {CAPPED_MB * 2**20} / torch.cuda.get_device_properties(device).total_memory\n"
            "torch.cuda.set_per_process_memory_fraction(share, device)\n"
            "from backend.__main__ import main\n"
            "sys.exit(main(['serve', '--device', *sys.argv[1:]]))\n"
        )
        argv = [sys.executable, "-c", code, self.device, *self.weight_args]
        with BackendProcess(argv, cwd=REPO, env=backend_env(), client_name="gpu_check") as process:
            process.wait_ready(300)
            try:
                options = {"resolution": 512}
                process.reconstruct(model=self.model, points=self.points, options=options).wait(300)
            except BackendError as e:
                if e.code != OUT_OF_MEMORY:
                    raise CheckFailedError(f"expected {OUT_OF_MEMORY}, got {e.code}: {e.message}") from None
                message = e.message
            else:
                raise CheckFailedError(f"a 512^3 reconstruction fitted in {CAPPED_MB} MB")
            if process.echo("still there").wait(60).fields["data"] != "still there":
                raise CheckFailedError("the process stopped answering after running out of memory")
        return f"clear error and serving goes on: {message[:70]}"

    def training(self, steps: int) -> str:
        """Query points per second through full training steps; the first loss must be the CPU's."""
        net, meta = self.cpu.load(self.model)
        batch, queries, observed = (32, 2048, 300) if self.cuda else (4, 512, 300)
        gen = torch.Generator().manual_seed(0)
        points = torch.rand(batch, queries, 3, generator=gen) - 0.5
        occupied = (points.norm(dim=-1) < 0.3).float()
        inputs = 0.3 * torch.nn.functional.normalize(torch.randn(batch, observed, 3, generator=gen), dim=-1)
        losses = []
        for device in (torch.device("cpu"), torch.device(self.device)):
            model = build_model(meta.model_config())
            model.load_state_dict(net.state_dict())
            model.to(device).train()
            loss, _ = model.loss(points.to(device), occupied.to(device), inputs.to(device))
            losses.append(loss.item())
        cpu_loss, device_loss = losses
        if not abs(device_loss - cpu_loss) <= 1e-3 * max(abs(cpu_loss), 1.0):
            losses_text = f"{device_loss:.6f} on {self.device}, {cpu_loss:.6f} on the CPU"
            raise CheckFailedError(f"the first step's loss differs: {losses_text}")
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)
        args = (points.to(self.device), occupied.to(self.device), inputs.to(self.device))
        self._sync()
        started = time.perf_counter()
        for _ in range(steps):
            loss, _ = model.loss(*args)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
        self._sync()
        seconds = (time.perf_counter() - started) / steps
        rate = batch * queries / seconds
        return f"{rate:,.0f} query points/s ({1000 * seconds:.0f} ms a step of {batch} shapes)"

    def evaluation(self, resolution: int, half: bool) -> str:
        """Network evaluations per second in a reconstruction on the device (warm)."""
        engine = Reconstructor(self.device, self.weights, half=half)
        options = ReconstructOptions(resolution=resolution, keep_field=False)
        observation = read_observation(CHAIR)
        engine.reconstruct(self.model, observation, ReconstructOptions(resolution=32, keep_field=False))
        result = engine.reconstruct(self.model, observation, options)
        rate = result.stats["evaluations"] / result.timings["evaluate"]
        return f"{rate:,.0f} points/s at {resolution}^3 ({result.timings['total']:.2f} s in all)"

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    # ------------------------------------------------------------------ all
    def run_all(self, train_steps: int) -> Table:
        table = self.table
        table.run("info", self.info)
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            for resolution in self.resolutions:
                for half in (False, True):
                    if half and not self.half and resolution != self.resolutions[0]:
                        continue  # where --half is not offered it is only refused: once says it
                    precision = "--half" if half else "float32"
                    table.run(
                        f"reconstruct {resolution}^3 {precision}",
                        partial(self.reconstruct, resolution, half, Path(tmp)),
                    )
        self.serve(self.resolutions[0])
        if self.cuda:
            table.run(f"out of memory ({CAPPED_MB} MB cap)", self.out_of_memory)
        else:
            table.skip("out of memory", "CUDA only (the CPU's is in tests/backend/test_serve.py)")
        table.run(f"training, {train_steps} steps", lambda: self.training(train_steps))
        top = self.resolutions[-1]
        table.run(f"evaluation {top}^3 float32", lambda: self.evaluation(top, False))
        if self.half:
            table.run(f"evaluation {top}^3 --half", lambda: self.evaluation(top, True))
        return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cuda, cuda:N or cpu")
    parser.add_argument(
        "--resolutions", type=int, nargs="+", help="grids to check (default: 128 256 on CUDA, else 32 64)"
    )
    parser.add_argument("--weights-dir", type=Path, help="models folder (default: the shipped weights)")
    parser.add_argument(
        "--tolerance", type=float, default=TOLERANCE, help="largest Chamfer distance to the CPU's mesh"
    )
    parser.add_argument("--train-steps", type=int, default=5)
    args = parser.parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device.startswith("cuda")
    resolutions = args.resolutions or ([128, 256] if cuda else [32, 64])
    started = time.perf_counter()
    check = GpuCheck(device, resolutions, args.weights_dir, args.tolerance)
    table = check.run_all(args.train_steps)
    print(f"device {device} against the CPU, model {check.model!r}, {time.perf_counter() - started:.0f} s")
    print(table.render())
    failed = [row.check for row in table.rows if row.status == "FAIL"]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
