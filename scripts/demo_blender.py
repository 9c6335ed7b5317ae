"""Headless demo in real Blender, run by scripts/demo.sh with the project's Python.

Steps: build the extension zip with build.py, install and enable it in a throwaway Blender user
folder, point it at this Python as its backend interpreter, check the backend, import the example
scan (examples/chair_scan.ply: 20,000 points seen from three viewpoints above the chair, so its
underside is missing), reconstruct it with the shipped point-cloud model through the add-on's
operator, and write the mesh (OBJ) and a rendered preview (PNG), printing both paths.
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

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = REPO_ROOT / "examples" / "chair_scan.ply"


def step(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def build_zip(output_dir: Path) -> Path:
    subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "--output-dir", str(output_dir)], check=True)
    (zip_path,) = output_dir.glob("*.zip")
    return zip_path


def run(args: argparse.Namespace, output_dir: Path, blender_user: Path) -> int:
    # Blender reads BLENDER_USER_RESOURCES when bpy is imported, so the import waits until here.
    os.environ["BLENDER_USER_RESOURCES"] = str(blender_user)
    import blender_scene
    import bpy

    step(f"Blender {bpy.app.version_string}, user folder {blender_user}")
    bpy.ops.wm.read_factory_settings(use_empty=True)  # no default cube in the picture
    zip_path = build_zip(blender_user / "dist")
    step(f"built {zip_path.name}")

    module = blender_scene.install_extension(zip_path)
    step(f"installed and enabled {module}")

    # What a user does in Preferences: point the add-on at a Python that has torch.
    blender_scene.addon_preferences(module).backend_python = sys.executable
    blender_scene.run_operator("occupancy.check_backend")

    bpy.ops.wm.ply_import(filepath=str(EXAMPLE))
    scan = bpy.context.active_object
    assert scan is not None
    step(f"imported {EXAMPLE.name}: {len(scan.data.vertices):,} points")  # type: ignore[union-attr]
    started = time.perf_counter()
    try:
        blender_scene.run_operator("occupancy.reconstruct", model=args.model, resolution=args.resolution)
    except RuntimeError as error:  # the add-on's message, e.g. a missing model
        step(f"reconstruction failed: {error}".rstrip())
        return 1
    result = bpy.context.active_object
    assert result is not None and isinstance(result.data, bpy.types.Mesh)
    step(
        f"reconstructed '{result.name}' in {time.perf_counter() - started:.1f} s: "
        f"{len(result.data.vertices):,} vertices, {len(result.data.polygons):,} faces"
    )

    mesh_path = blender_scene.export_mesh(result, output_dir / "chair.obj")
    step(f"wrote mesh {mesh_path}")
    image_path = blender_scene.render_preview(
        result, output_dir / "chair.png", resolution=args.render_size, samples=args.samples
    )
    step(f"wrote preview {image_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, default=REPO_ROOT / "demo-output", help="default: demo-output/"
    )
    parser.add_argument(
        "--model", default="pointcloud", help="model name or checkpoint (default: pointcloud)"
    )
    parser.add_argument(
        "--resolution", type=int, default=128, help="grid resolution: 32, 64, 128, 256 or 512 (default: 128)"
    )
    parser.add_argument(
        "--render-size", type=int, default=512, help="preview image size in pixels (default: 512)"
    )
    parser.add_argument("--samples", type=int, default=32, help="Cycles samples of the preview (default: 32)")
    parser.add_argument(
        "--keep-blender-user",
        action="store_true",
        help="keep the throwaway Blender user folder for inspection",
    )
    args = parser.parse_args(argv)
    blender_user = Path(tempfile.mkdtemp(prefix="occ-demo-blender-user-"))
    try:
        return run(args, args.output_dir.resolve(), blender_user)
    finally:
        if args.keep_blender_user:
            step(f"kept Blender user folder {blender_user}")
        else:
            shutil.rmtree(blender_user, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
