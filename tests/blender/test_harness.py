"""The harness itself: a throwaway user folder and a clean factory scene for every test."""

from __future__ import annotations

from pathlib import Path

import bpy


def test_blender_uses_the_throwaway_user_folder(blender_user_folder: Path) -> None:
    assert Path(bpy.utils.resource_path("USER")) == blender_user_folder
    (user_repo,) = (
        repo for repo in bpy.context.preferences.extensions.repos if repo.module == "user_default"
    )
    assert Path(user_repo.directory).is_relative_to(blender_user_folder)


def test_a_test_may_leave_objects_behind() -> None:
    bpy.ops.mesh.primitive_cube_add()
    assert len(bpy.data.objects) == 1


def test_the_next_test_starts_from_an_empty_scene() -> None:
    assert len(bpy.data.objects) == 0
    assert len(bpy.data.meshes) == 0
