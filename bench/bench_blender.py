"""Speed of the add-on's Blender side, in real Blender (the bpy module) with the installed extension.

Three figures, each with a baseline measured in the same run:
1. reading a 1M-point cloud out of Blender and sending it to the backend (target <= 250 ms);
   baselines: reading the same points vertex by vertex from Python, and a plain in-memory copy of
   the bytes sent;
2. writing a new 200k-face mesh into the preview object (target <= 150 ms), against
   ``Mesh.from_pydata`` (the usual way, and the ratio the target is about);
3. the threshold slider: send ``extract``, receive the mesh, write it, for a ~50k-face result
   (target <= 120 ms median), against the time the backend itself reports for the extraction.

    python bench/bench_blender.py                          # the shipped point-cloud model
    python bench/bench_blender.py --weights-dir DIR        # models from DIR (needs pointcloud)
    python bench/bench_blender.py --quick                  # fewer repetitions
"""

from __future__ import annotations

import argparse
import os
import shutil
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


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


def grid_mesh(side: int) -> tuple[np.ndarray, np.ndarray]:
    """A closed-looking triangle mesh: a (side x side) height-field grid, 2 triangles per cell."""
    u, v = np.meshgrid(np.linspace(-1, 1, side), np.linspace(-1, 1, side), indexing="ij")
    vertices = np.stack([u, v, 0.1 * np.sin(4 * u) * np.cos(4 * v)], -1).reshape(-1, 3).astype(np.float32)
    index = np.arange(side * side).reshape(side, side)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[1:, 1:], index[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    return vertices, faces.astype(np.int32)


def box_points(n: int, size: tuple[float, float, float], seed: int = 0) -> np.ndarray:
    """``n`` noisy points on the surface of a box (its faces weighted by area)."""
    rng = np.random.default_rng(seed)
    half = np.array(size) / 2
    areas = np.array([size[1] * size[2], size[0] * size[2], size[0] * size[1]])
    axis = rng.choice(3, n, p=areas / areas.sum())
    points = rng.uniform(-half, half, (n, 3))
    points[np.arange(n), axis] = np.where(rng.random(n) < 0.5, -1, 1) * half[axis]
    return (points + rng.normal(0, 0.003, points.shape)).astype(np.float32)


def new_object(bpy: Any, name: str, vertices: np.ndarray, faces: np.ndarray | None = None) -> Any:
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(vertices))
    mesh.vertices.foreach_set("co", vertices.reshape(-1))
    if faces is not None and len(faces):
        mesh.loops.add(faces.size)
        mesh.loops.foreach_set("vertex_index", faces.reshape(-1))
        mesh.polygons.add(len(faces))
        mesh.polygons.foreach_set("loop_start", np.arange(0, faces.size, 3, dtype=np.int32))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def bench_read_and_send(bpy: Any, addon: Any, repeat: int) -> None:
    print("\n1. Reading a 1M-point cloud from Blender and sending it (target <= 250 ms)")
    points = box_points(1_000_000, (1.0, 0.6, 0.4))
    obj = new_object(bpy, "Cloud", points)
    context = bpy.context
    config = addon.settings.backend_config(context)
    process = addon.runtime.service.connect(config)
    process.wait_ready(120)
    choice = addon.scene_inputs.detect(context, obj)

    def read() -> np.ndarray:
        arrays: np.ndarray = addon.scene_inputs.read(context, choice).arrays["points"]
        return arrays

    jobs: list[Any] = []

    def read_and_send() -> None:
        # what Reconstruct does before it waits: detect and read the input, then hand the arrays to
        # the backend; the request returns once the backend has taken its bytes off the pipe
        recipe = addon.results.Recipe(kind="", model="", resolution=32)
        plan = addon.results.plan_reconstruction(context, obj, recipe, None)
        jobs.append(addon.results.send(context, plan, None))

    def settle() -> None:  # the reconstruction itself is not measured
        for job in jobs:
            job.cancel()
            job.join()
        jobs.clear()

    read_times = timed(read, repeat)
    total_times = []
    for _ in range(repeat):
        total_times += timed(read_and_send, 1)
        settle()
    data = read()
    naive_n = 100_000
    naive = timed(lambda: [tuple(v.co) for v in obj.data.vertices[:naive_n]], 1)[0] * (len(data) / naive_n)
    copy = timed(lambda: data.copy(), repeat)
    print(f"   read with foreach_get ({data.nbytes / 1e6:.0f} MB): {ms(statistics.median(read_times))}")
    print(f"   read + send (median of {repeat}):     {ms(statistics.median(total_times))}")
    print(f"   baseline: vertex by vertex in Python {ms(naive)} (from {naive_n:,} points, scaled)")
    print(f"   baseline: in-memory copy of the bytes {ms(statistics.median(copy))}")
    print(f"   read + send is {naive / statistics.median(total_times):.0f}x faster than the per-vertex read")


def bench_mesh_write(bpy: Any, addon: Any, repeat: int) -> None:
    print("\n2. Applying a new 200k-face mesh to the preview object (target <= 150 ms)")
    vertices, faces = grid_mesh(317)  # 100,489 vertices, 200,344 triangles
    obj = new_object(bpy, "Preview", *grid_mesh(50))
    mesh = obj.data
    write = timed(lambda: addon.mesh_write.write_mesh(mesh, vertices, faces), repeat)
    out_v, out_f = addon.mesh_write.read_mesh(mesh)
    assert np.array_equal(out_v, vertices) and np.array_equal(out_f, faces)

    def pydata() -> None:
        mesh.clear_geometry()
        mesh.from_pydata(vertices.tolist(), [], faces.tolist())
        mesh.update()

    baseline = timed(pydata, max(2, repeat // 2))
    fast, slow = statistics.median(write), statistics.median(baseline)
    print(f"   {len(faces):,} faces, {len(vertices):,} vertices")
    print(f"   foreach_set with typed arrays (median of {repeat}): {ms(fast)}")
    print(f"   baseline from_pydata (median of {len(baseline)}):       {ms(slow)}")
    print(f"   ratio: foreach_set is {slow / fast:.1f}x faster")


def bench_slider(bpy: Any, addon: Any, steps: int) -> None:
    print("\n3. Threshold slider: send extract, receive, apply, ~50k-face result (target <= 120 ms median)")
    new_object(bpy, "Box", box_points(3000, (1.0, 0.35, 0.25), seed=1))
    assert bpy.ops.occupancy.reconstruct(resolution=128) == {"FINISHED"}
    result = bpy.context.active_object
    settings = result.occupancy
    print(f"   result: {len(result.data.polygons):,} faces at threshold {settings.applied_threshold:.3f}")
    config = addon.settings.backend_config(bpy.context)
    start = settings.applied_threshold
    # a drag: up in small steps, then back down over the same values
    up = [round(start + 0.004 * (i + 1), 4) for i in range(steps // 2)]
    taus = up + up[::-1][1:] + [start]

    round_trip, backend, apply_times, faces = [], [], [], []
    for tau in taus:
        t0 = time.perf_counter()
        job = addon.runtime.service.request(config, "extract", settings.field_id, tau)
        job.wait()
        reply = job.outcome()
        t1 = time.perf_counter()
        addon.mesh_write.write_mesh(result.data, reply.arrays["vertices"], reply.arrays["faces"])
        t2 = time.perf_counter()
        round_trip.append(t2 - t0)
        apply_times.append(t2 - t1)
        backend.append(reply.fields["timings"]["total"])
        faces.append(len(reply.arrays["faces"]))
    # the same path through the property, as the slider sets it (blocking in background mode)
    slider = []
    for tau in taus[:5]:
        slider += timed(lambda tau=tau: setattr(settings, "threshold", tau), 1)
    print(f"   {len(taus)} thresholds, {min(faces):,}-{max(faces):,} faces")
    p90 = float(np.percentile(round_trip, 90))
    print(f"   round trip median {ms(statistics.median(round_trip))}, 90th percentile {ms(p90)}")
    print(f"   of which writing the mesh     {ms(statistics.median(apply_times))}")
    print(f"   baseline: backend's own extraction {ms(statistics.median(backend))} (median)")
    overhead = statistics.median([r - b for r, b in zip(round_trip, backend, strict=True)])
    print(f"   pipe + framing + mesh write over the backend's time: {ms(overhead)} (median)")
    print(
        f"   through Object.occupancy.threshold (5 of them again): {ms(statistics.median(slider))} (median)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights-dir", type=Path, help="models folder (default: the shipped weights)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = parser.parse_args()
    repeat = 3 if args.quick else 7

    user = Path(tempfile.mkdtemp(prefix="occ-bench-blender-"))
    os.environ["BLENDER_USER_RESOURCES"] = str(user)  # read once, when bpy is imported
    os.environ["OCC_BACKEND_PYTHON"] = sys.executable
    if args.weights_dir is not None:
        os.environ["OCC_WEIGHTS_DIR"] = str(args.weights_dir.resolve())
    try:
        sys.path.insert(0, str(REPO / "scripts"))
        import blender_scene
        import bpy

        subprocess.run(
            [sys.executable, str(REPO / "build.py"), "--output-dir", str(user / "dist")], check=True
        )
        bpy.ops.wm.read_factory_settings(use_empty=True)
        module = blender_scene.install_extension(next((user / "dist").glob("*.zip")))
        addon = sys.modules[module]
        print(f"Blender {bpy.app.version_string}, backend Python {sys.executable}")
        bench_read_and_send(bpy, addon, repeat)
        bench_mesh_write(bpy, addon, repeat)
        bench_slider(bpy, addon, 12 if args.quick else 30)
        addon.runtime.shutdown()
    finally:
        shutil.rmtree(user, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
