"""Voxels: a mesh (its evaluated surface) or a volume (through Volume to Mesh), voxelised to the
model's 32^3 grid over the object's bounds, in the object's frame."""

from __future__ import annotations

import bpy
import numpy as np

from ..errors import UserError
from ..scene_data import InputChoice, InputData, evaluated_object, face_count, type_label, world_matrix
from ..voxelize import VoxelizeError, voxelize
from .base import Context, MaybeImage, MaybeObject, Reader


class VoxelsReader(Reader):
    kind = "voxels"
    mode = ("VOXELS", "Voxels", "Voxelise the active mesh or volume to a 32\u00b3 grid over its bounds")

    def claims(self, obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> bool:
        return obj.type == "VOLUME" or face_count(obj, context, evaluated) > 0

    def detect(self, obj: MaybeObject, context: Context, evaluated: bool, image: MaybeImage) -> InputChoice:
        assert obj is not None
        if obj.type == "VOLUME":
            return InputChoice(self.kind, "Voxels: volume as a mesh, 32\u00b3 grid", obj.name, obj=obj)
        if obj.type != "MESH":
            raise UserError(f"'{obj.name}' is {type_label(obj)} object: voxels come from a mesh or a volume")
        faces = face_count(obj, context, evaluated)
        if faces == 0:
            raise UserError(f"'{obj.name}' has no faces to voxelise: use it as a point cloud")
        return InputChoice(self.kind, f"Voxels: {faces:,} faces, 32\u00b3 grid", obj.name, obj=obj)

    def read(self, context: bpy.types.Context, choice: InputChoice, evaluated: bool) -> InputData:
        assert choice.obj is not None
        vertices, triangles = read_triangles(context, choice.obj, evaluated)
        triangles, warnings = finite_triangles(vertices, triangles, choice.obj.name)
        try:
            occupancy, bounds = voxelize(vertices, triangles)
        except VoxelizeError as error:
            raise UserError(f"'{choice.obj.name}' cannot be voxelised: {error}") from None
        arrays = {"voxels": occupancy, "bounds": bounds}
        return InputData(choice, arrays, world_matrix(choice.obj.matrix_world), warnings)


def finite_triangles(vertices: np.ndarray, triangles: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """The triangles whose corners all have finite coordinates (the others are left out with a
    warning); UserError when none is left."""
    bad = ~np.isfinite(vertices).all(axis=1)
    if not bad.any():
        return triangles, []
    keep = ~bad[triangles].any(axis=1)
    kept = int(np.count_nonzero(keep))
    if kept == 0:
        raise UserError(
            f"'{name}' has no face whose vertices all have finite coordinates: nothing to voxelise"
        )
    warning = f"Left out {len(triangles) - kept:,} of {len(triangles):,} faces with NaN or infinite vertices"
    return triangles[keep], [warning]


def read_mesh_triangles(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32 and triangles (T, 3) int32 of a mesh (polygons triangulated)."""
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    mesh.calc_loop_triangles()
    triangles = np.empty(len(mesh.loop_triangles) * 3, np.int32)
    mesh.loop_triangles.foreach_get("vertices", triangles)
    return vertices.reshape(-1, 3), triangles.reshape(-1, 3)


def read_triangles(
    context: bpy.types.Context, obj: bpy.types.Object, evaluated: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The surface to voxelise, in the object's local frame."""
    if obj.type == "VOLUME":
        return _volume_triangles(context, obj)
    if not evaluated:
        assert isinstance(obj.data, bpy.types.Mesh)
        return read_mesh_triangles(obj.data)
    evaluated_obj = evaluated_object(obj, context)
    mesh = evaluated_obj.to_mesh()
    try:
        if mesh is None:
            raise UserError(f"'{obj.name}' has no mesh to voxelise")
        return read_mesh_triangles(mesh)
    finally:
        evaluated_obj.to_mesh_clear()


def _volume_triangles(context: bpy.types.Context, volume: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """A volume's surface through Blender's own conversion (the Volume to Mesh modifier) on a
    temporary object that shares the volume's transform, so the mesh is in the volume's frame."""
    shown = evaluated_object(volume, context).data  # its modifiers may make the grids
    grids = shown.grids if isinstance(shown, bpy.types.Volume) else None
    if grids is None or not grids.load() or len(grids) == 0:
        problem = f" ({grids.error_message})" if grids is not None and grids.error_message else ""
        raise UserError(
            f"The volume '{volume.name}' has no grids to voxelise{problem}: load a VDB file into it"
        )
    mesh = bpy.data.meshes.new(f"{volume.name}.occupancy-volume")
    helper = bpy.data.objects.new(mesh.name, mesh)
    helper.matrix_world = volume.matrix_world.copy()
    collection = context.scene.collection if context.scene is not None else None
    if collection is None:
        raise UserError("No scene to evaluate the volume in")
    collection.objects.link(helper)
    try:
        modifier = helper.modifiers.new("Volume to Mesh", "VOLUME_TO_MESH")
        assert isinstance(modifier, bpy.types.VolumeToMeshModifier)
        modifier.object = volume
        evaluated_obj = evaluated_object(helper, context)
        converted = evaluated_obj.to_mesh()
        try:
            if converted is None:
                raise UserError(f"The volume '{volume.name}' could not be converted to a mesh")
            vertices, triangles = read_mesh_triangles(converted)
        finally:
            evaluated_obj.to_mesh_clear()
    finally:
        bpy.data.objects.remove(helper)
        bpy.data.meshes.remove(mesh)
    if len(triangles) == 0:
        raise UserError(f"The volume '{volume.name}' has no surface above the conversion threshold")
    return vertices, triangles
