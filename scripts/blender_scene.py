"""Blender steps of the demo: install the extension, export a mesh, render a preview.

Importing this module imports ``bpy``, which starts Blender; set ``BLENDER_USER_RESOURCES`` first.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import bpy
from mathutils import Vector

EXTENSION_ID = "occupancy_reconstruct"


def install_extension(zip_path: Path, repo: str = "user_default") -> str:
    """Install and enable the extension zip as Preferences > Install from Disk does.

    Returns the add-on's module name, ``bl_ext.<repo>.occupancy_reconstruct``.
    """
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo=repo, enable_on_install=True
    )
    module = f"bl_ext.{repo}.{EXTENSION_ID}"
    preferences = bpy.context.preferences
    if result != {"FINISHED"} or preferences is None or module not in preferences.addons:
        raise RuntimeError(f"installing {zip_path} did not enable {module} (operator returned {result})")
    return module


def addon_preferences(module: str) -> Any:
    """The preferences of an enabled add-on (their class is defined by the add-on at run time)."""
    preferences = bpy.context.preferences
    assert preferences is not None
    return preferences.addons[module].preferences


def _operator(idname: str) -> Any:
    category, name = idname.split(".")
    return getattr(getattr(bpy.ops, category), name)


def operator_exists(idname: str) -> bool:
    """True when an operator such as ``occupancy.reconstruct`` is registered."""
    try:
        _operator(idname).get_rna_type()
    except KeyError:
        return False
    return True


def run_operator(idname: str, **properties: Any) -> set[str]:
    """Run an operator by its id (e.g. ``occupancy.check_backend``); errors raise RuntimeError."""
    result: set[str] = _operator(idname)(**properties)
    return result


def export_mesh(obj: bpy.types.Object, path: Path) -> Path:
    """Write ``obj`` alone to ``path``; the suffix picks the format (.obj or .ply)."""
    exporters = {".obj": bpy.ops.wm.obj_export, ".ply": bpy.ops.wm.ply_export}
    exporter = exporters.get(path.suffix.lower())
    if exporter is None:
        raise ValueError(f"unsupported mesh format {path.suffix!r}; use one of {sorted(exporters)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    view_layer = bpy.context.view_layer
    assert view_layer is not None
    for other in view_layer.objects:
        other.select_set(other == obj)
    view_layer.objects.active = obj
    options = {"export_materials": False} if path.suffix.lower() == ".obj" else {}
    exporter(filepath=str(path), export_selected_objects=True, **options)
    return path


def _world_bounds(obj: bpy.types.Object) -> tuple[Vector, float]:
    """Centre and radius of the object's bounding sphere in world space."""
    corners = [obj.matrix_world @ Vector(corner) for corner in obj.bound_box]
    centre = sum(corners, Vector()) / len(corners)
    return centre, max((corner - centre).length for corner in corners)


def render_preview(obj: bpy.types.Object, path: Path, resolution: int = 512, samples: int = 32) -> Path:
    """Render ``obj`` from an oblique view with Cycles on the CPU (works headless) into a PNG."""
    scene = bpy.context.scene
    assert scene is not None
    centre, radius = _world_bounds(obj)

    camera_data = bpy.data.cameras.new("OCC_preview_camera")
    camera = bpy.data.objects.new("OCC_preview_camera", camera_data)
    scene.collection.objects.link(camera)
    view_direction = Vector((1.0, -1.2, 0.8)).normalized()
    # Far enough that the bounding sphere fits the field of view with a margin.
    distance = 1.15 * max(radius, 1e-6) / math.sin(camera_data.angle / 2)
    camera.location = centre + view_direction * distance
    camera.rotation_euler = (-view_direction).to_track_quat("-Z", "Y").to_euler()
    camera_data.clip_end = distance + 4 * radius
    scene.camera = camera

    light_data = bpy.data.lights.new("OCC_preview_light", type="SUN")
    assert isinstance(light_data, bpy.types.SunLight)
    light_data.energy = 3.0
    light = bpy.data.objects.new("OCC_preview_light", light_data)
    light.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(light)

    world = scene.world or bpy.data.worlds.new("OCC_preview_world")
    world.color = (0.05, 0.05, 0.06)
    scene.world = world

    scene.render.engine = "CYCLES"  # type: ignore[assignment]  # the stubs know only EEVEE
    cycles = scene.cycles  # type: ignore[attr-defined]  # registered by the Cycles add-on
    cycles.device = "CPU"
    cycles.samples = samples
    cycles.use_denoising = False
    scene.render.resolution_x = scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    path.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True)
    return path
