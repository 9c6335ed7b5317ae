"""Per-scene settings, stored in one PropertyGroup at ``Scene.occupancy``."""

from __future__ import annotations

import bpy
from bpy.props import FloatProperty


class OCC_PG_settings(bpy.types.PropertyGroup):
    threshold: FloatProperty(  # type: ignore[valid-type]
        name="Threshold",
        description="Occupancy probability at which the surface is extracted",
        min=0.0,
        max=1.0,
        default=0.2,  # the value all published Occupancy Network models use
        precision=3,
    )


def scene_settings(scene: bpy.types.Scene) -> OCC_PG_settings:
    settings = scene.occupancy  # type: ignore[attr-defined]
    assert isinstance(settings, OCC_PG_settings)
    return settings


CLASSES = (OCC_PG_settings,)
