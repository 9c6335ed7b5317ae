"""Sidebar panel in the 3D viewport (tab "Reconstruct")."""

from __future__ import annotations

import bpy

from .properties import scene_settings


class OCC_PT_reconstruct(bpy.types.Panel):
    bl_idname = "OCC_PT_reconstruct"
    bl_label = "Occupancy Reconstruct"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Reconstruct"

    def draw(self, context: bpy.types.Context) -> None:
        layout, scene = self.layout, context.scene
        assert layout is not None and scene is not None  # always set while a panel draws
        layout.prop(scene_settings(scene), "threshold")
        layout.operator("occupancy.check_backend", icon="CHECKMARK")


CLASSES = (OCC_PT_reconstruct,)
