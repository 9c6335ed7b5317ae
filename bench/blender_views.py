"""A views model on pictures rendered by real Blender, of shapes the training generator cannot make.

The training pictures come from the project's own sphere tracer (``backend/data/render.py``).
This measures what a user's renders give: each unfamiliar shape (``scripts/make_unfamiliar_set.py``:
vases, swept tubes, thin bowls, organic blobs, extruded stars; never trained on) is scaled into
the unit box and rendered by Blender's Cycles (CPU, 32 samples, 128 px, transparent film; a
grey or coloured Principled material, a sun with soft shadows and a grey world) from the front,
right and top views that a modeller sets up (``wire.views.VIEW_SETS``; 40° lens, the shape
filling 75% of the picture). The cameras are Blender camera objects, and each one's row is read
back by the add-on's own reader (``occupancy_addon/readers/views.camera_row``), as the panel
reads it. The engine then reconstructs each shape from the front view, front and side, and all
three, and ``backend.evaluation`` scores the meshes (IoU, Chamfer-L1, F@1%, silhouette IoU).

    python bench/blender_views.py --views-model runs/views/best.safetensors --n 20

Rendering runs in a child process with ``bpy`` (Blender as a Python module, the tests' Blender);
it needs the unfamiliar set (``python scripts/make_unfamiliar_set.py``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

RENDER_SIZE, SAMPLES = 128, 32
SETS = {1: "front", 2: "front-side", 3: "front-side-top"}  # views given -> the views they are


def render_jobs(jobs_file: Path) -> None:
    """(In the bpy child.) Render every job: a unit-box mesh through its cameras, to PNG files,
    and write each camera's row as the add-on reads it beside them."""
    import bpy
    import trimesh
    from mathutils import Matrix

    from occupancy_addon.readers.views import camera_row

    jobs = json.loads(jobs_file.read_text())
    scene = bpy.context.scene
    for obj in list(scene.objects):  # the factory scene's cube, light and camera
        bpy.data.objects.remove(obj)
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = SAMPLES
    scene.cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = RENDER_SIZE
    scene.render.film_transparent = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    world = bpy.data.worlds.new("grey")
    world.color = (0.3, 0.3, 0.3)
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.35, 0.35, 0.35, 1.0)
    scene.world = world
    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy, sun.data.angle = 3.0, 0.2  # soft shadows
    scene.collection.objects.link(sun)
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    for job in jobs:
        mesh = trimesh.load(job["mesh"], force="mesh", process=False)
        vertices = (np.asarray(mesh.vertices) - job["centre"]) / job["scale"]
        data = bpy.data.meshes.new("shape")
        data.from_pydata(vertices.tolist(), [], np.asarray(mesh.faces).tolist())
        shape = bpy.data.objects.new("shape", data)
        material = bpy.data.materials.new("paint")
        material.use_nodes = True
        material.node_tree.nodes["Principled BSDF"].inputs["Base Color"].default_value = (*job["colour"], 1.0)
        data.materials.append(material)
        scene.collection.objects.link(shape)
        sun.rotation_euler = job["sun"]
        rows = []
        for i, row in enumerate(job["rows"]):
            rotation = np.asarray(row[:9]).reshape(3, 3)  # world to camera: its transpose places it
            placed = np.eye(4)
            placed[:3, :3], placed[:3, 3] = rotation.T, row[9:12]
            camera.matrix_world = Matrix(placed.tolist())
            camera.data.sensor_fit = "AUTO"
            camera.data.lens = row[12] * camera.data.sensor_width / 2  # focal across the longest side
            bpy.context.view_layer.update()
            scene.render.filepath = str(Path(job["out"]) / f"view{i}.png")
            bpy.ops.render.render(write_still=True)
            rows.append(camera_row(camera, RENDER_SIZE, RENDER_SIZE).tolist())
        (Path(job["out"]) / "cameras.json").write_text(json.dumps(rows))
        bpy.data.objects.remove(shape)
        bpy.data.meshes.remove(data)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--views-model", required=True, help="a views model: a shipped name or a file")
    p.add_argument("--meshes", type=Path, default=REPO / ".data/unfamiliar/meshes")
    p.add_argument("--n", type=int, default=20, help="shapes, taken round-robin over the families")
    p.add_argument("--out", type=Path, default=REPO / "runs/blender-views")
    p.add_argument("--json", type=Path)
    p.add_argument("--render-jobs", type=Path, help=argparse.SUPPRESS)  # the bpy child's entry
    args = p.parse_args()
    if args.render_jobs is not None:
        render_jobs(args.render_jobs)
        return 0

    from backend.allocator import ensure_fast_allocator

    ensure_fast_allocator(sys.argv)
    import torch
    import trimesh
    from PIL import Image

    from backend.containment import ray_parity
    from backend.data.cameras import Cameras, set_cameras
    from backend.engine.reconstructor import Reconstructor
    from backend.engine.types import Observation, ReconstructOptions
    from backend.evaluation import EvalSettings, mesh_metrics, sample_mesh, surface_tree

    settings = EvalSettings()
    meshes = sorted(args.meshes.glob("*.ply"))
    if not meshes:
        print(f"error: no meshes in {args.meshes}: run scripts/make_unfamiliar_set.py", file=sys.stderr)
        return 2
    by_family: dict[str, list[Path]] = {}
    for path in meshes:
        by_family.setdefault(path.stem.split("-")[0], []).append(path)
    chosen = [paths[i] for i in range(len(meshes)) for paths in by_family.values() if i < len(paths)]
    chosen = chosen[: args.n]

    rng = np.random.default_rng(0)
    jobs, truths = [], []
    for k, path in enumerate(chosen):
        mesh = trimesh.load(path, force="mesh", process=False)
        low, high = mesh.bounds
        centre, scale = (low + high) / 2, float((high - low).max())
        vertices = (np.asarray(mesh.vertices) - centre) / scale
        faces = np.asarray(mesh.faces)
        surface, normals = sample_mesh(vertices, faces, settings.surface_points, rng)
        rows = set_cameras(surface, "front-side-top").to_array()
        colour = [0.8, 0.8, 0.8] if k % 2 == 0 else rng.uniform(0.2, 0.9, 3).tolist()
        sun = [float(rng.uniform(0.3, 0.9)), 0.0, float(rng.uniform(0, 2 * np.pi))]
        out = args.out / path.stem
        out.mkdir(parents=True, exist_ok=True)
        jobs.append({"mesh": str(path), "centre": centre.tolist(), "scale": scale, "rows": rows.tolist()})
        jobs[-1] |= {"colour": colour, "sun": sun, "out": str(out)}
        iou_points = rng.uniform(-0.55, 0.55, (settings.iou_points, 3))
        iou_gt = ray_parity(vertices, faces, iou_points)
        truths.append((path.stem, surface, normals, surface_tree(surface), iou_points, iou_gt))
    jobs_file = args.out / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    t0 = time.perf_counter()
    child = [sys.executable, __file__, "--views-model", args.views_model, "--render-jobs", str(jobs_file)]
    done = subprocess.run(child, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stdout[-2000:], done.stderr[-4000:], file=sys.stderr)
        return 1
    render_s = time.perf_counter() - t0

    engine = Reconstructor("cuda" if torch.cuda.is_available() else "cpu")
    options = ReconstructOptions(resolution=settings.resolution, keep_field=False)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SETS.values()}
    for job, (name, surface, normals, tree, iou_points, iou_gt) in zip(jobs, truths, strict=True):
        out = Path(job["out"])
        pictures = np.stack([np.asarray(Image.open(out / f"view{i}.png")) for i in range(3)])
        rows = np.asarray(json.loads((out / "cameras.json").read_text()), np.float32)
        drift = float(np.abs(rows - np.asarray(job["rows"])).max())  # Blender's camera read back
        masks = pictures[..., 3] > 127
        for count, label in SETS.items():
            observation = Observation(views=pictures[:count], cameras=rows[:count])
            mesh = engine.reconstruct(args.views_model, observation, options)
            outline = (Cameras.from_array(rows[:count]), masks[:count])
            metrics = mesh_metrics(
                mesh.vertices,
                mesh.faces,
                iou_points,
                iou_gt,
                surface,
                normals,
                tree,
                settings.surface_points,
                settings.fscore_threshold,
                np.random.default_rng(1),
                outline,
            )
            results[label].append({"name": name, "camera_drift": drift, **metrics})
    summary = {
        label: {key: float(np.mean([r[key] for r in rows])) for key in rows[0] if key != "name"}
        for label, rows in results.items()
    }
    print(f"{len(jobs)} unfamiliar shapes rendered by Blender (Cycles) in {render_s:.0f} s")
    print(f"{'views':<16} {'IoU':>6} {'Chamfer-L1':>10} {'F@1%':>6} {'silhouette':>10}")
    for label, mean in summary.items():
        print(
            f"{label:<16} {mean['iou']:6.3f} {mean['chamfer_l1']:10.4f} {mean['fscore']:6.3f} "
            f"{mean['silhouette_iou']:10.3f}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"model": args.views_model, "n": len(jobs), "render_seconds": render_s, "mean": summary}
        args.json.write_text(json.dumps(record | {"shapes": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
