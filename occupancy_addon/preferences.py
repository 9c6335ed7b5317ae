"""Add-on preferences: which Python runs the backend and on which device."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, StringProperty

from .backend_python import ENV_VAR

DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA when the backend's torch sees a GPU, otherwise CPU"),
    ("cuda", "CUDA", "Run the network on the GPU (needs a CUDA build of torch)"),
    ("cpu", "CPU", "Run the network on the CPU"),
]


class OCC_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(  # type: ignore[valid-type]
        name="Backend Python",
        description=(
            "Python interpreter with torch and the backend's dependencies installed. "
            f"Empty: use {ENV_VAR}, else a known virtual environment"
        ),
        subtype="FILE_PATH",
    )
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        description="Where the backend runs the network",
        items=DEVICE_ITEMS,
        default="auto",
    )

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        layout.prop(self, "backend_python")
        layout.prop(self, "device")
        layout.operator("occupancy.check_backend", icon="CHECKMARK")


def addon_preferences(context: bpy.types.Context) -> OCC_AddonPreferences | None:
    """This add-on's preferences, or None when the package was registered without being enabled
    as an add-on (then Blender keeps no preferences for it)."""
    if context.preferences is None:
        return None
    addon = context.preferences.addons.get(__package__)
    if addon is None:
        return None
    preferences = addon.preferences
    assert isinstance(preferences, OCC_AddonPreferences)
    return preferences


CLASSES = (OCC_AddonPreferences,)
