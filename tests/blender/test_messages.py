"""Every failure the user can meet says what happened and what to do, and changes nothing.

A failed operator reports an error; a script (and so this test) receives it as a RuntimeError
whose text is the message the UI shows.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import ModuleType

import bpy
import pytest

from tests.blender.scene_checks import fails

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def import_chair() -> bpy.types.Object:
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    return bpy.context.active_object


def test_no_selection(addon: ModuleType) -> None:
    assert bpy.context.active_object is None
    fails(r"Nothing selected: select a mesh, point cloud, volume or image empty")
    assert "Nothing selected" in addon.runtime.status.error  # the panel shows it too
    assert not addon.runtime.status.crashed


def test_unsupported_objects(addon: ModuleType) -> None:
    bpy.ops.object.camera_add()
    fails(r"'Camera' is a camera object, which cannot be reconstructed: select a mesh, point cloud")
    bpy.ops.object.empty_add()
    fails(r"'Empty' is an empty object, which cannot be reconstructed")
    bpy.ops.object.light_add(type="POINT")
    fails(r"'Point' is a light object")


def test_inputs_that_do_not_fit_the_chosen_kind(addon: ModuleType) -> None:
    import_chair()
    fails(r"'chair_points' has no faces to voxelise: use it as a point cloud", input_mode="VOXELS")
    fails(r"No image: select an image empty or choose an image in the panel", input_mode="IMAGE")
    empty = bpy.data.objects.new("Frame", None)
    empty.empty_display_type = "IMAGE"
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    fails(r"'Frame' is an image empty without an image: open an image in it")
    bpy.ops.mesh.primitive_cube_add()
    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.delete(type="VERT")
    bpy.ops.object.mode_set(mode="OBJECT")
    fails(r"'Cube' has no points to reconstruct from", input_mode="POINTCLOUD")
    fails(r"No object named 'Nowhere'", object="Nowhere")
    fails(r"Resolution must be one of 32, 64, 128, 256, 512, got 48", resolution=48)


def test_backend_not_configured(
    addon: ModuleType, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    import_chair()
    monkeypatch.delenv("OCC_BACKEND_PYTHON")
    # With nothing configured the add-on would fall back to Blender's own Python, which has torch
    # here (Blender runs as a module of this very interpreter): check that first, then hide it.
    assert bpy.ops.occupancy.check_backend() == {"FINISHED"}
    assert "(from Blender's Python)" in capfd.readouterr().out
    monkeypatch.setattr(addon.backend_python, "torch_in_blender_python", lambda: False)
    text = fails(r"Backend not configured: no backend Python configured")
    assert "set 'Backend Python' in the add-on preferences" in text


def test_backend_python_that_cannot_start(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import_chair()
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named numpy' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("OCC_BACKEND_PYTHON", str(broken))
    text = fails(r"The backend could not start with .*python \(from OCC_BACKEND_PYTHON\)")
    assert "No module named numpy" in text and "press Restart Backend" in text
    assert addon.runtime.status.crashed  # the panel offers Restart Backend


def test_backend_python_without_torch(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real backend process whose interpreter cannot import torch."""
    import_chair()
    no_torch = tmp_path / "python"
    code = "import sys; sys.modules['torch'] = None; from backend.__main__ import main; sys.exit(main())"
    # called as `python -m backend serve ...`: drop "-m backend", keep the rest
    no_torch.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" -c "{code}" "$@"\n')
    no_torch.chmod(0o755)
    monkeypatch.setenv("OCC_BACKEND_PYTHON", str(no_torch))
    text = fails(r"Backend not configured: .*python \(from OCC_BACKEND_PYTHON\) cannot run the backend")
    assert "cannot load the reconstruction engine" in text and "torch" in text
    assert addon.runtime.status.crashed


def test_model_missing(
    addon: ModuleType, tiny_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_points = tmp_path / "weights"
    only_points.mkdir()
    shutil.copy(tiny_weights / "pointcloud.safetensors", only_points)
    monkeypatch.setenv("OCC_WEIGHTS_DIR", str(only_points))
    bpy.ops.mesh.primitive_cylinder_add()
    fails(r"Model missing: no voxels model is installed: add a checkpoint file in the add-on preferences")
    fails(
        r"Model missing: model file not found: .*nowhere.safetensors",
        model=str(tmp_path / "nowhere.safetensors"),
    )
    import_chair()
    fails(r"Model missing: no model named 'chairs' \(available: pointcloud\)", model="chairs")
    with pytest.raises(RuntimeError, match="Model missing: no unconditional model is installed"):
        bpy.ops.occupancy.generate(resolution=32)


def test_model_of_another_kind(addon: ModuleType) -> None:
    import_chair()
    fails(r"model voxels \(voxels\) takes voxels input, not point cloud", model="voxels")


def test_threshold_on_an_object_that_is_no_result(addon: ModuleType) -> None:
    import_chair()
    with pytest.raises(RuntimeError, match="Select a reconstructed object to change its threshold"):
        bpy.ops.occupancy.set_threshold(threshold=0.3)


def test_threshold_when_the_field_and_the_source_are_gone(addon: ModuleType) -> None:
    chair = import_chair()
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    result = bpy.context.active_object
    bpy.data.objects.remove(chair)
    bpy.ops.occupancy.restart_backend()
    with pytest.raises(RuntimeError, match="its source object is gone: the threshold cannot change any more"):
        bpy.ops.occupancy.set_threshold(threshold=0.3, object=result.name)
    assert result.occupancy.applied_threshold == pytest.approx(0.5)  # the mesh is untouched
