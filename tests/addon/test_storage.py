"""Storage folders when the add-on is not loaded as an extension (no Blender user folder)."""

from __future__ import annotations

from pathlib import Path

import pytest

from occupancy_addon import storage


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("bl_ext.user_default.occupancy_reconstruct", True),
        ("bl_ext.dev.occupancy_reconstruct", True),
        ("occupancy_addon", False),
        ("bl_ext", False),
        ("bl_extension.x.y", False),
    ],
)
def test_extension_package_names(package: str, expected: bool) -> None:
    assert storage.is_extension_package(package) is expected


def test_direct_import_falls_back_to_a_temporary_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(storage, "FALLBACK_ROOT", tmp_path / "occ")
    folder = storage.user_dir("occupancy_addon", "cache")
    assert folder == tmp_path / "occ" / "cache"
    assert folder.is_dir()


def test_lookup_without_create_does_not_touch_the_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(storage, "FALLBACK_ROOT", tmp_path / "occ")
    assert storage.user_dir("occupancy_addon", "venv", create=False) == tmp_path / "occ" / "venv"
    assert not (tmp_path / "occ").exists()
