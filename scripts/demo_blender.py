"""Headless demo in real Blender, run by scripts/demo.sh with the project's Python.

Steps: build the extension zip with build.py, install and enable it in a throwaway Blender user
folder, point it at this Python as its backend interpreter, check the backend, then reconstruct
the example input and write the mesh and a rendered PNG. Steps that do not exist yet are reported
as such and end the run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def step(message: str) -> None:
    print(f"[demo] {message}", flush=True)


def build_zip(output_dir: Path) -> Path:
    subprocess.run([sys.executable, str(REPO_ROOT / "build.py"), "--output-dir", str(output_dir)], check=True)
    (zip_path,) = output_dir.glob("*.zip")
    return zip_path


def run(output_dir: Path, blender_user: Path) -> int:
    # Blender reads BLENDER_USER_RESOURCES when bpy is imported, so the import waits until here.
    os.environ["BLENDER_USER_RESOURCES"] = str(blender_user)
    import blender_scene
    import bpy

    step(f"Blender {bpy.app.version_string}, user folder {blender_user}")
    zip_path = build_zip(blender_user / "dist")
    step(f"built {zip_path.name}")

    module = blender_scene.install_extension(zip_path)
    step(f"installed and enabled {module}")

    # What a user does in Preferences: point the add-on at a Python that has torch.
    blender_scene.addon_preferences(module).backend_python = sys.executable
    blender_scene.run_operator("occupancy.check_backend")

    if not blender_scene.operator_exists("occupancy.reconstruct"):
        step("reconstruction not available yet: the add-on has no occupancy.reconstruct operator")
        step(f"nothing written to {output_dir}")
        return 0
    step("reconstruction exists, but this demo does not run it yet")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--output-dir", type=Path, default=REPO_ROOT / "demo-output", help="default: demo-output/"
    )
    parser.add_argument(
        "--keep-blender-user",
        action="store_true",
        help="keep the throwaway Blender user folder for inspection",
    )
    args = parser.parse_args(argv)
    blender_user = Path(tempfile.mkdtemp(prefix="occ-demo-blender-user-"))
    try:
        return run(args.output_dir.resolve(), blender_user)
    finally:
        if args.keep_blender_user:
            step(f"kept Blender user folder {blender_user}")
        else:
            shutil.rmtree(blender_user, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
