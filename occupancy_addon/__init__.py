"""Occupancy Reconstruct: turn point clouds, voxel grids and images into closed meshes.

The add-on itself only uses bpy, numpy and the standard library. The network runs in a separate
Python process (``python -m backend``) started with an interpreter the user points it to.
"""

from __future__ import annotations

import bpy

from . import operators, panels, preferences, preview, properties, runtime

# Registration order matters: a PropertyGroup must exist before a PointerProperty refers to it.
CLASSES: tuple[type, ...] = (
    *properties.CLASSES,
    *preferences.CLASSES,
    *operators.CLASSES,
    *panels.CLASSES,
)

_register_classes, _unregister_classes = bpy.utils.register_classes_factory(CLASSES)


def register() -> None:
    _register_classes()
    properties.on_threshold_change(preview.threshold_changed)  # the result slider's live preview
    bpy.types.Scene.occupancy = bpy.props.PointerProperty(type=properties.OCC_PG_settings)  # type: ignore[attr-defined]
    bpy.types.Object.occupancy = bpy.props.PointerProperty(type=properties.OCC_PG_result)  # type: ignore[attr-defined]


def unregister() -> None:
    # The backend process and any request in flight belong to this add-on: end them with it.
    properties.on_threshold_change(None)
    preview.reset()
    runtime.shutdown()
    del bpy.types.Object.occupancy  # type: ignore[attr-defined]
    del bpy.types.Scene.occupancy  # type: ignore[attr-defined]
    _unregister_classes()
