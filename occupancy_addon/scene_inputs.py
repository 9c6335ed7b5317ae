"""What to reconstruct from: the input found in the scene, and its arrays for the backend.

Detection is cheap (counts only) so the panel can say what it will use on every redraw; reading
copies the data out with ``foreach_get`` into typed numpy arrays. Points and voxels are read in the
object's local frame and the result gets the object's world matrix, so it lands exactly over the
input whatever its transform. Nothing here changes the input.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

from .errors import UserError
from .placement import front_view_matrix, image_result_matrix
from .voxelize import VoxelizeError, voxelize

POINTCLOUD, VOXELS, IMAGE = "pointcloud", "voxels", "image"
MODES = [
    (
        "AUTO",
        "Auto",
        "Decide from the active object: a mesh without faces or a point cloud gives "
        "points, a mesh with faces or a volume gives voxels, an image empty gives an image",
    ),
    ("POINTCLOUD", "Points", "Use the vertices or points of the active object"),
    ("VOXELS", "Voxels", "Voxelise the active mesh or volume to a 32\u00b3 grid over its bounds"),
    ("IMAGE", "Image", "Use the active image empty, or the image chosen below"),
]
MAX_IMAGE_SIDE = 512  # larger pictures are averaged down before sending (the model sees 64 px)
SUPPORTED = "select a mesh, point cloud, volume or image empty"
TYPE_LABELS = {
    "CURVE": "curve",
    "CURVES": "hair curves",
    "SURFACE": "surface",
    "META": "metaball",
    "FONT": "text",
    "GPENCIL": "grease pencil",
    "GREASEPENCIL": "grease pencil",
    "ARMATURE": "armature",
    "LATTICE": "lattice",
    "EMPTY": "empty",
    "LIGHT": "light",
    "LIGHT_PROBE": "light probe",
    "CAMERA": "camera",
    "SPEAKER": "speaker",
}


@dataclass
class InputChoice:
    """The detected input: which kind, from what, and the sentence the panel shows."""

    kind: str
    description: str
    name: str  # the result is called "<name>.occupancy"
    obj: bpy.types.Object | None = None
    image: bpy.types.Image | None = None
    count: int = 0  # points of a point cloud


@dataclass
class InputData:
    """An input read out of Blender: its arrays, ready to send, and where its result goes."""

    choice: InputChoice
    arrays: dict[str, np.ndarray]
    matrix_world: np.ndarray  # 4x4: result vertices -> world


# ---------------------------------------------------------------------------------------------------------
# Detection


def _is_image_empty(obj: bpy.types.Object) -> bool:
    return obj.type == "EMPTY" and obj.empty_display_type == "IMAGE"


_drawing = False  # set while the panel draws: it may look at the evaluated scene, not evaluate it


def _evaluated(obj: bpy.types.Object, context: bpy.types.Context) -> bpy.types.Object:
    depsgraph = context.view_layer.depsgraph if _drawing and context.view_layer is not None else None
    return obj.evaluated_get(depsgraph or context.evaluated_depsgraph_get())


def _point_data(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> tuple[Any, Any]:
    """The Mesh or PointCloud whose vertices/points are the point cloud (None when there is none),
    and an object to keep alive while it is read.

    With ``evaluated`` the object's modifiers apply (a Geometry Nodes "Mesh to Points" gives a
    point cloud that only exists in the evaluated geometry). The evaluated geometry set owns its
    point cloud: it must outlive the reading, hence the second value.
    """
    if not evaluated or not obj.modifiers:
        return obj.data, None
    evaluated_obj = _evaluated(obj, context)
    if hasattr(evaluated_obj, "evaluated_geometry"):  # Blender 4.3 and later
        geometry = evaluated_obj.evaluated_geometry()
        if geometry.pointcloud is not None and len(geometry.pointcloud.points):
            return geometry.pointcloud, geometry
        return geometry.mesh, geometry
    return evaluated_obj.data, evaluated_obj


def _count(data: Any) -> int:
    if isinstance(data, bpy.types.Mesh):
        return len(data.vertices)
    if isinstance(data, bpy.types.PointCloud):
        return len(data.points)
    return 0


def _face_count(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> int:
    if obj.type != "MESH":
        return 0
    data, _owner = _point_data(obj, context, evaluated)
    return len(data.polygons) if isinstance(data, bpy.types.Mesh) else 0


def _type_label(obj: bpy.types.Object) -> str:
    """ "a camera", "an empty", ... for messages."""
    label = TYPE_LABELS.get(obj.type, obj.type.lower().replace("_", " "))
    return ("an " if label[0] in "aeiou" else "a ") + label


def resolve_source(obj: bpy.types.Object | None) -> bpy.types.Object | None:
    """A previous result stands for the object it was made from (so Reconstruct again re-runs it)."""
    if obj is None:
        return None
    result = getattr(obj, "occupancy", None)
    if result is not None and result.is_result and result.source is not None:
        source: bpy.types.Object = result.source
        return source
    return obj


def detect(
    context: bpy.types.Context,
    obj: bpy.types.Object | None,
    mode: str = "AUTO",
    evaluated: bool = True,
    chosen_image: bpy.types.Image | None = None,
    drawing: bool = False,
) -> InputChoice:
    """The input that Reconstruct would use; UserError says why there is none.

    ``drawing``: called from a panel's draw, where the scene is already evaluated and must not be
    evaluated again.
    """
    global _drawing
    _drawing = drawing
    try:
        return _detect(context, obj, mode, evaluated, chosen_image)
    finally:
        _drawing = False


def _detect(
    context: bpy.types.Context,
    obj: bpy.types.Object | None,
    mode: str,
    evaluated: bool,
    chosen_image: bpy.types.Image | None,
) -> InputChoice:
    obj = resolve_source(obj)
    if mode == "IMAGE" or (obj is None and mode == "AUTO" and chosen_image is not None):
        return _detect_image(obj, chosen_image)
    if obj is None:
        raise UserError(f"Nothing selected: {SUPPORTED} (or choose an image in the panel)")
    if mode == "AUTO":
        if _is_image_empty(obj):
            return _detect_image(obj, None)
        if obj.type == "POINTCLOUD":
            return _detect_points(obj, context, evaluated)
        if obj.type == "VOLUME":
            return _detect_voxels(obj, context, evaluated)
        if obj.type == "MESH":
            data, _owner = _point_data(obj, context, evaluated)
            if isinstance(data, bpy.types.Mesh) and len(data.polygons):
                return _detect_voxels(obj, context, evaluated)
            return _detect_points(obj, context, evaluated)
        raise UserError(
            f"'{obj.name}' is {_type_label(obj)} object, which cannot be reconstructed: {SUPPORTED}"
        )
    if mode == "POINTCLOUD":
        return _detect_points(obj, context, evaluated)
    return _detect_voxels(obj, context, evaluated)


def _detect_points(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> InputChoice:
    if obj.type not in ("MESH", "POINTCLOUD"):
        raise UserError(
            f"'{obj.name}' is {_type_label(obj)} object and has no points: select a mesh or point cloud"
        )
    data, _owner = _point_data(obj, context, evaluated)
    count = _count(data)
    if count == 0:
        raise UserError(f"'{obj.name}' has no points to reconstruct from")
    return InputChoice(POINTCLOUD, f"Point cloud: {count:,} points", obj.name, obj=obj, count=count)


def _detect_voxels(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> InputChoice:
    if obj.type == "VOLUME":
        return InputChoice(VOXELS, "Voxels: volume as a mesh, 32\u00b3 grid", obj.name, obj=obj)
    if obj.type != "MESH":
        raise UserError(f"'{obj.name}' is {_type_label(obj)} object: voxels come from a mesh or a volume")
    faces = _face_count(obj, context, evaluated)
    if faces == 0:
        raise UserError(f"'{obj.name}' has no faces to voxelise: use it as a point cloud")
    return InputChoice(VOXELS, f"Voxels: {faces:,} faces, 32\u00b3 grid", obj.name, obj=obj)


def _detect_image(obj: bpy.types.Object | None, chosen: bpy.types.Image | None) -> InputChoice:
    if obj is not None and _is_image_empty(obj):
        image = obj.data
        if not isinstance(image, bpy.types.Image):
            raise UserError(f"'{obj.name}' is an image empty without an image: open an image in it")
        return InputChoice(IMAGE, _image_text(image), obj.name, obj=obj, image=image)
    if chosen is None:
        raise UserError("No image: select an image empty or choose an image in the panel")
    return InputChoice(IMAGE, _image_text(chosen), os.path.splitext(chosen.name)[0], image=chosen)


def _image_size(image: bpy.types.Image) -> tuple[int, int]:
    size: Any = image.size  # reading it loads the image's file if needed
    return int(size[0]), int(size[1])


def _image_text(image: bpy.types.Image) -> str:
    width, height = _image_size(image)
    if width == 0 or height == 0:
        return f"Image: {image.name} (not loaded)"
    return f"Image: {image.name} ({width} \u00d7 {height})"


# ---------------------------------------------------------------------------------------------------------
# Reading


def read(context: bpy.types.Context, choice: InputChoice, evaluated: bool = True) -> InputData:
    """Copy the input's data into numpy arrays for the backend; UserError when it is unusable."""
    context.evaluated_depsgraph_get()  # brings world matrices up to date after a script moved things
    if choice.kind == POINTCLOUD:
        assert choice.obj is not None
        data, _owner = _point_data(choice.obj, context, evaluated)
        points = read_points(data)
        if len(points) == 0:
            raise UserError(f"'{choice.obj.name}' has no points to reconstruct from")
        return InputData(choice, {"points": points}, _matrix(choice.obj.matrix_world))
    if choice.kind == VOXELS:
        assert choice.obj is not None
        vertices, triangles = read_triangles(context, choice.obj, evaluated)
        try:
            occupancy, bounds = voxelize(vertices, triangles)
        except VoxelizeError as error:
            raise UserError(f"'{choice.obj.name}' cannot be voxelised: {error}") from None
        arrays = {"voxels": occupancy, "bounds": bounds}
        return InputData(choice, arrays, _matrix(choice.obj.matrix_world))
    assert choice.image is not None
    pixels = read_image(choice.image)
    if choice.obj is not None:
        width, height = _image_size(choice.image)
        offset: Any = choice.obj.empty_image_offset
        local = image_result_matrix(
            choice.obj.empty_display_size, width, height, (float(offset[0]), float(offset[1]))
        )
        matrix = _matrix(choice.obj.matrix_world) @ local
    else:
        cursor: Any = context.scene.cursor.location if context.scene is not None else (0.0, 0.0, 0.0)
        matrix = front_view_matrix((float(cursor[0]), float(cursor[1]), float(cursor[2])))
    return InputData(choice, {"image": pixels}, matrix)


def _matrix(matrix: Matrix) -> np.ndarray:
    return np.array(matrix, dtype=np.float64).reshape(4, 4)


def read_points(data: Any) -> np.ndarray:
    """(N, 3) float32 positions of a Mesh's vertices or a PointCloud's points, local frame."""
    if isinstance(data, bpy.types.Mesh):
        points = np.empty(len(data.vertices) * 3, np.float32)
        data.vertices.foreach_get("co", points)
    elif isinstance(data, bpy.types.PointCloud):
        points = np.empty(len(data.points) * 3, np.float32)
        position: Any = data.attributes.get("position")
        if len(points) and position is not None:
            position.data.foreach_get("vector", points)
    else:
        return np.empty((0, 3), np.float32)
    return points.reshape(-1, 3)


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
    evaluated_obj = _evaluated(obj, context)
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
        evaluated_obj = _evaluated(helper, context)
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


def read_image(image: bpy.types.Image) -> np.ndarray:
    """(H, W, C) float32 pixels in [0, 1], top row first, at most MAX_IMAGE_SIDE on a side."""
    width, height = _image_size(image)
    channels = image.channels
    if width == 0 or height == 0 or channels == 0:
        raise UserError(f"The image '{image.name}' has no pixels (is its file missing?)")
    pixels = np.empty(width * height * channels, np.float32)
    image.pixels.foreach_get(pixels)
    picture = pixels.reshape(height, width, channels)[::-1]  # Blender stores the bottom row first
    step = -(-max(width, height) // MAX_IMAGE_SIDE)
    if step > 1:  # average step x step blocks
        h, w = height // step * step, width // step * step
        picture = picture[:h, :w].reshape(h // step, step, w // step, step, channels).mean(axis=(1, 3))
    if channels == 2:  # grey + alpha
        picture = np.concatenate([picture[..., :1].repeat(3, axis=2), picture[..., 1:]], axis=2)
    elif channels == 1:
        picture = picture.repeat(3, axis=2)
    elif channels > 4:
        picture = picture[..., :4]
    return np.ascontiguousarray(np.clip(np.nan_to_num(picture), 0.0, 1.0), dtype=np.float32)
