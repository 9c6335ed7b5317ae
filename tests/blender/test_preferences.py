"""Preferences: backend interpreter and device, the field cache, checkpoints, Install Backend."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import ModuleType

import bpy
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def preferences(addon: ModuleType) -> bpy.types.AddonPreferences:
    return bpy.context.preferences.addons[addon.__name__].preferences


def reconstruct_chair() -> bpy.types.Object:
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    return bpy.context.active_object


def test_check_backend_shows_torch_and_device(addon: ModuleType, capfd: pytest.CaptureFixture[str]) -> None:
    preferences(addon).device = "cpu"
    assert bpy.ops.occupancy.check_backend() == {"FINISHED"}
    out = capfd.readouterr().out
    assert f"runs with {sys.executable} (from OCC_BACKEND_PYTHON): torch " in out and out.rstrip().endswith(
        "CPU"
    )
    info = addon.runtime.status.torch
    assert info is not None and info.version.split("+")[0].count(".") >= 1


def test_device_and_cache_reach_the_backend(addon: ModuleType) -> None:
    preferences(addon).device = "cpu"
    preferences(addon).cache_mb = 64
    reconstruct_chair()
    service = addon.runtime.service
    ready = service.ready_message()
    assert ready is not None and ready.fields["device"] == "cpu"
    assert service.describe() == "Device: cpu (backend running)"
    argv = Path(f"/proc/{service.process.pid}/cmdline").read_bytes().split(b"\0")
    assert argv[argv.index(b"--device") : argv.index(b"--device") + 2] == [b"--device", b"cpu"]
    assert argv[argv.index(b"--cache-mb") + 1] == b"64"
    # a new setting means a new process on the next request
    preferences(addon).cache_mb = 32
    first = service.process.pid
    bpy.context.view_layer.objects.active = bpy.data.objects["chair_points"]
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    assert service.process.pid != first


def test_half_precision_is_on_by_default_and_reaches_the_backend(addon: ModuleType) -> None:
    assert preferences(addon).half_precision is True  # ignored by the backend where it does not pay
    reconstruct_chair()
    service = addon.runtime.service
    assert b"--half" in Path(f"/proc/{service.process.pid}/cmdline").read_bytes().split(b"\0")
    preferences(addon).half_precision = False
    first = service.process.pid
    bpy.context.view_layer.objects.active = bpy.data.objects["chair_points"]
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    assert service.process.pid != first
    assert b"--half" not in Path(f"/proc/{service.process.pid}/cmdline").read_bytes().split(b"\0")


def test_release_gpu_memory_restarts_the_backend(addon: ModuleType) -> None:
    result = reconstruct_chair()
    first = addon.runtime.service.process
    assert bpy.ops.occupancy.restart_backend() == {"FINISHED"}
    assert addon.runtime.service.process is None and first.alive() is False
    result.occupancy.threshold = 0.45  # the field went with the old process: it is made again
    assert addon.runtime.service.process.pid != first.pid
    assert result.occupancy.applied_threshold == pytest.approx(0.45)


def test_user_checkpoint_is_offered_and_used(addon: ModuleType, tiny_weights: Path, tmp_path: Path) -> None:
    own = tmp_path / "my scans" / "points-v2.safetensors"
    own.parent.mkdir()
    shutil.copy(tiny_weights / "pointcloud.safetensors", own)
    assert bpy.ops.occupancy.add_checkpoint(filepath=str(own)) == {"FINISHED"}
    assert [item.filepath for item in preferences(addon).checkpoints] == [str(own)]
    models, problems = addon.settings.available_models(bpy.context)
    assert problems == []
    assert [m.name for m in models][-1] == str(own) and models[-1].label == "points-v2 (point cloud)"
    # the panel's model picker offers it
    assert bpy.context.scene.occupancy.model == "AUTO"
    bpy.context.scene.occupancy.model = str(own)
    assert bpy.context.scene.occupancy.model == str(own)
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    assert bpy.ops.occupancy.reconstruct(resolution=32, model=str(own)) == {"FINISHED"}
    assert bpy.context.active_object.occupancy.model == str(own)

    with pytest.raises(RuntimeError, match="is not an Occupancy Reconstruct model file|not a readable model"):
        bpy.ops.occupancy.add_checkpoint(filepath=str(EXAMPLES / "chair_points.ply"))
    assert bpy.ops.occupancy.remove_checkpoint() == {"FINISHED"}
    assert len(preferences(addon).checkpoints) == 0


def test_install_backend_needs_online_access(addon: ModuleType, blender_user_folder: Path) -> None:
    assert bpy.app.online_access is False  # Blender as a module starts offline
    with pytest.raises(
        RuntimeError, match="Blender does not allow online access: enable Allow Online Access"
    ):
        bpy.ops.occupancy.install_backend()
    assert addon.runtime.installer is None
    assert not list(blender_user_folder.glob("extensions/.user/*/*/venv"))


def test_files_go_only_to_the_extension_user_folder(addon: ModuleType, blender_user_folder: Path) -> None:
    installed = Path(addon.__file__).parent

    def extension_files() -> set[Path]:  # Python's own bytecode caches aside
        return {p for p in installed.rglob("*") if "__pycache__" not in p.parts}

    before = extension_files()
    reconstruct_chair()
    assert extension_files() == before
    log = (
        blender_user_folder
        / "extensions"
        / ".user"
        / "user_default"
        / installed.name
        / "logs"
        / "backend.log"
    )
    assert "engine ready" in log.read_text()
