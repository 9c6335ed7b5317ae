"""The extension installed from its zip the way a user does, then used through bpy."""

from __future__ import annotations

import sys
from pathlib import Path

import addon_utils
import bpy
import pytest

import backend

EXTENSION_ID = "occupancy_reconstruct"


def addon_module(name: str):  # noqa: ANN201 - the module's type is only known at run time
    return sys.modules[name]


def test_install_enables_the_extension(installed_extension: str, blender_user_folder: Path) -> None:
    assert installed_extension == f"bl_ext.user_default.{EXTENSION_ID}"
    assert installed_extension in bpy.context.preferences.addons
    folder = blender_user_folder / "extensions" / "user_default" / EXTENSION_ID
    assert (folder / "__init__.py").is_file()
    assert (folder / "backend" / "__main__.py").is_file()
    # the add-on looks up the backend bundled inside its own folder
    assert addon_module(installed_extension).backend_link.backend_root() == folder


def test_registers_panel_settings_and_preferences(installed_extension: str) -> None:
    assert bpy.ops.occupancy.check_backend.get_rna_type().identifier == "OCCUPANCY_OT_check_backend"
    panel = bpy.types.Panel.bl_rna_get_subclass_py("OCC_PT_reconstruct")
    assert (panel.bl_space_type, panel.bl_region_type, panel.bl_category) == ("VIEW_3D", "UI", "Reconstruct")
    assert bpy.context.scene.occupancy.threshold == pytest.approx(0.2)
    preferences = bpy.context.preferences.addons[installed_extension].preferences
    assert preferences.backend_python == ""
    assert preferences.device == "auto"


def test_check_backend_reports_the_bundled_version(
    installed_extension: str, backend_python_env: str, capfd: pytest.CaptureFixture[str]
) -> None:
    assert bpy.ops.occupancy.check_backend() == {"FINISHED"}
    assert f"Backend {backend.__version__} runs with {backend_python_env}" in capfd.readouterr().out


def test_check_backend_uses_the_preference(
    installed_extension: str, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("OCC_BACKEND_PYTHON", raising=False)
    bpy.context.preferences.addons[installed_extension].preferences.backend_python = sys.executable
    assert bpy.ops.occupancy.check_backend() == {"FINISHED"}
    assert "(from preferences)" in capfd.readouterr().out


def test_check_backend_without_a_backend_python_explains(
    installed_extension: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OCC_BACKEND_PYTHON", raising=False)
    # Blender's own Python is the last resort when torch is installed there, as it is here
    monkeypatch.setattr(
        addon_module(installed_extension).backend_python, "torch_in_blender_python", lambda: False
    )
    with pytest.raises(RuntimeError, match="no backend Python configured"):
        bpy.ops.occupancy.check_backend()


def test_check_backend_with_a_failing_interpreter(
    installed_extension: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'ModuleNotFoundError: No module named numpy' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("OCC_BACKEND_PYTHON", str(broken))
    with pytest.raises(RuntimeError, match="No module named numpy"):
        bpy.ops.occupancy.check_backend()


def test_storage_lives_in_the_extension_user_folder(
    installed_extension: str, blender_user_folder: Path
) -> None:
    cache = addon_module(installed_extension).storage.user_dir(installed_extension, "cache")
    assert cache == blender_user_folder / "extensions" / ".user" / "user_default" / EXTENSION_ID / "cache"
    assert cache.is_dir()


def test_disable_and_enable_again(installed_extension: str, backend_python_env: str) -> None:
    addon_utils.disable(installed_extension, default_set=True)
    assert not hasattr(bpy.types.Scene, "occupancy")
    assert bpy.types.Panel.bl_rna_get_subclass_py("OCC_PT_reconstruct") is None
    addon_utils.enable(installed_extension, default_set=True)
    assert bpy.context.scene.occupancy.threshold == pytest.approx(0.2)
    bpy.context.preferences.addons[installed_extension].preferences.device = "cpu"
    assert bpy.ops.occupancy.check_backend() == {"FINISHED"}
