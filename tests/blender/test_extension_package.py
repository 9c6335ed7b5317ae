"""The zip that build.py writes: its layout and Blender's own validation."""

from __future__ import annotations

import zipfile
from pathlib import Path
from types import ModuleType

import pytest


def names(zip_path: Path) -> list[str]:
    with zipfile.ZipFile(zip_path) as archive:
        return archive.namelist()


def test_zip_is_named_after_manifest_id_and_version(extension_zip: Path) -> None:
    assert extension_zip.name == "occupancy_reconstruct-0.1.0.zip"


def test_addon_files_sit_at_the_root_next_to_the_backend(extension_zip: Path, repo_root: Path) -> None:
    content = set(names(extension_zip))
    addon_files = {path.name for path in (repo_root / "occupancy_addon").glob("*.py")}
    assert "__init__.py" in addon_files and addon_files <= content
    assert {"blender_manifest.toml", "LICENSE", "backend/__init__.py", "backend/__main__.py"} <= content
    assert not any(name.startswith("occupancy_addon/") for name in content)


def test_zip_leaves_out_caches_and_tests(extension_zip: Path) -> None:
    for name in names(extension_zip):
        parts = name.split("/")
        assert "__pycache__" not in parts and "tests" not in parts, name
        assert not name.endswith((".pyc", ".pyo")), name
        assert not any(part.startswith(".") for part in parts), name


def test_blender_validator_accepts_the_zip(extension_zip: Path, build_script: ModuleType) -> None:
    tool = build_script.find_blender_ext()
    assert tool is not None and tool.name == "blender_ext.py"
    build_script.validate_zip(extension_zip, tool)


def test_blender_validator_rejects_a_bad_manifest(
    extension_zip: Path, build_script: ModuleType, tmp_path: Path
) -> None:
    """The check is real: a tagline with final punctuation breaks the extension rules."""
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(extension_zip) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "blender_manifest.toml":
                text = data.decode()
                assert "\ntagline = " in text
                data = text.replace('images"', 'images."', 1).encode()
            target.writestr(item, data)
    with pytest.raises(build_script.BuildError, match="tagline"):
        build_script.validate_zip(broken, build_script.find_blender_ext())


def test_without_bpy_the_same_files_are_zipped_unvalidated(
    extension_zip: Path,
    build_script: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(build_script, "find_blender_ext", lambda: None)
    plain = build_script.build(tmp_path)
    assert "NOT validated" in capsys.readouterr().err
    assert sorted(names(plain)) == sorted(names(extension_zip))
