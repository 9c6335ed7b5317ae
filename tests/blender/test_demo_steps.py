"""The demo's Blender steps (scripts/blender_scene.py) and the demo script as a whole."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from PIL import Image

import backend


def make_cube() -> bpy.types.Object:
    bpy.ops.mesh.primitive_cube_add(size=2.0, location=(0.5, 0.0, 0.0))
    return bpy.context.active_object


def test_operator_exists(blender_scene_script: ModuleType) -> None:
    assert blender_scene_script.operator_exists("mesh.primitive_cube_add")
    assert not blender_scene_script.operator_exists("occupancy.no_such_operator")


def test_export_writes_only_the_given_object(blender_scene_script: ModuleType, tmp_path: Path) -> None:
    cube = make_cube()
    bpy.ops.mesh.primitive_uv_sphere_add(location=(5.0, 0.0, 0.0))
    path = blender_scene_script.export_mesh(cube, tmp_path / "out" / "cube.obj")
    lines = path.read_text().splitlines()
    assert sum(line.startswith("v ") for line in lines) == 8
    assert sum(line.startswith("f ") for line in lines) == 6
    ply = blender_scene_script.export_mesh(cube, tmp_path / "cube.ply")
    assert ply.read_bytes().startswith(b"ply")


def test_export_rejects_unknown_formats(blender_scene_script: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unsupported mesh format '.xyz'"):
        blender_scene_script.export_mesh(make_cube(), tmp_path / "cube.xyz")


def test_render_preview_shows_the_object(blender_scene_script: ModuleType, tmp_path: Path) -> None:
    path = blender_scene_script.render_preview(make_cube(), tmp_path / "cube.png", resolution=48, samples=4)
    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.shape == (48, 48)
    # the lit cube stands out from the dark background in the middle, not at the borders
    centre = pixels[16:32, 16:32].mean()
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]]).mean()
    assert centre > border + 40


@pytest.mark.slow
def test_demo_script_reconstructs_exports_and_renders(
    repo_root: Path, tmp_path: Path, tiny_weights: Path
) -> None:
    """The README's demo end to end, small: a tiny model instead of the shipped one (the demo takes
    any model folder the add-on would), a coarse grid and a small, noisy render."""
    env = {key: value for key, value in os.environ.items() if key != "BLENDER_USER_RESOURCES"}
    env["OCC_WEIGHTS_DIR"] = str(tiny_weights)
    command = [sys.executable, str(repo_root / "scripts" / "demo_blender.py"), "--output-dir", str(tmp_path)]
    options = ["--resolution", "32", "--render-size", "48", "--samples", "2"]
    done = subprocess.run(
        command + options, capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "installed and enabled bl_ext.user_default.occupancy_reconstruct" in done.stdout
    assert f"Backend {backend.__version__} runs with {sys.executable}" in done.stdout
    assert "imported chair_scan.ply: 20,000 points" in done.stdout
    assert "reconstructed 'chair_scan.occupancy' in " in done.stdout
    mesh, image = tmp_path / "chair.obj", tmp_path / "chair.png"
    assert f"wrote mesh {mesh}" in done.stdout and f"wrote preview {image}" in done.stdout
    faces = sum(line.startswith("f ") for line in mesh.read_text().splitlines())
    (count,) = re.findall(r"vertices, ([\d,]+) faces", done.stdout)
    assert faces == int(count.replace(",", "")) > 0
    assert Image.open(image).size == (48, 48)
    # the throwaway Blender user folder it announced is gone again
    (user_folder,) = re.findall(r"user folder (\S+)", done.stdout)
    assert "occ-demo-blender-user-" in user_folder
    assert not Path(user_folder).exists()


@pytest.mark.slow
def test_demo_script_says_when_the_model_is_missing(repo_root: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "BLENDER_USER_RESOURCES"}
    env["OCC_WEIGHTS_DIR"] = str(tmp_path / "no-models")
    command = [
        sys.executable,
        str(repo_root / "scripts" / "demo_blender.py"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "reconstruction failed: Error: Model missing: no model named 'pointcloud'" in done.stdout
    assert not (tmp_path / "out").exists()
