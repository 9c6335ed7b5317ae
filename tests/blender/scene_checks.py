"""What a failed operator must leave alone, shared by the Blender tests of bad input."""

from __future__ import annotations

import bpy
import pytest


def scene_state() -> list[tuple[str, str]]:
    """Objects and every kind of data a failed run could leave behind."""
    counts = [("meshes", len(bpy.data.meshes)), ("images", len(bpy.data.images))]
    return sorted((o.name, o.type) for o in bpy.data.objects) + [(k, str(n)) for k, n in counts]


def fails(match: str, **options: object) -> str:
    """Run Reconstruct, expecting the error ``match``; nothing in the scene may change."""
    before = scene_state()
    options.setdefault("resolution", 32)
    with pytest.raises(RuntimeError, match=match) as failure:
        bpy.ops.occupancy.reconstruct(**options)
    assert scene_state() == before
    return str(failure.value)
