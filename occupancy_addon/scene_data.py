"""What the kinds of input share: the detected choice, the data read out of Blender, and the
helpers that look at objects (bpy, numpy; no kind-specific logic).

Detection is cheap (counts only) so the panel can say what it will use on every redraw; reading
copies the data out with ``foreach_get`` into typed numpy arrays. Nothing here changes the input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import bpy
import numpy as np
from mathutils import Matrix

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
    sources: list[str] = field(default_factory=list)  # reference views: the objects that hold them


@dataclass
class InputData:
    """An input read out of Blender: its arrays, ready to send, and where its result goes."""

    choice: InputChoice
    arrays: dict[str, np.ndarray]
    matrix_world: np.ndarray  # 4x4: result vertices -> world
    warnings: list[str] = field(default_factory=list)  # what was left out of the input, and why


def is_image_empty(obj: bpy.types.Object) -> bool:
    return obj.type == "EMPTY" and obj.empty_display_type == "IMAGE"


class _PanelState:
    """``drawing`` is set while the panel draws: detection may look at the evaluated scene then,
    not evaluate it."""

    drawing = False


panel_state = _PanelState()


def evaluated_object(obj: bpy.types.Object, context: bpy.types.Context) -> bpy.types.Object:
    depsgraph = (
        context.view_layer.depsgraph if panel_state.drawing and context.view_layer is not None else None
    )
    return obj.evaluated_get(depsgraph or context.evaluated_depsgraph_get())


def point_data(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> tuple[Any, Any]:
    """The Mesh or PointCloud whose vertices/points are the point cloud (None when there is none),
    and an object to keep alive while it is read.

    With ``evaluated`` the object's modifiers apply (a Geometry Nodes "Mesh to Points" gives a
    point cloud that only exists in the evaluated geometry). The evaluated geometry set owns its
    point cloud: it must outlive the reading, hence the second value.
    """
    if not evaluated or not obj.modifiers:
        return obj.data, None
    evaluated_obj = evaluated_object(obj, context)
    if hasattr(evaluated_obj, "evaluated_geometry"):  # Blender 4.3 and later
        geometry = evaluated_obj.evaluated_geometry()
        if geometry.pointcloud is not None and len(geometry.pointcloud.points):
            return geometry.pointcloud, geometry
        return geometry.mesh, geometry
    return evaluated_obj.data, evaluated_obj


def point_count(data: Any) -> int:
    if isinstance(data, bpy.types.Mesh):
        return len(data.vertices)
    if isinstance(data, bpy.types.PointCloud):
        return len(data.points)
    return 0


def face_count(obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> int:
    if obj.type != "MESH":
        return 0
    data, _owner = point_data(obj, context, evaluated)
    return len(data.polygons) if isinstance(data, bpy.types.Mesh) else 0


def type_label(obj: bpy.types.Object) -> str:
    """ "a camera", "an empty", ... for messages."""
    label = TYPE_LABELS.get(obj.type, obj.type.lower().replace("_", " "))
    return ("an " if label[0] in "aeiou" else "a ") + label


def world_matrix(matrix: Matrix) -> np.ndarray:
    return np.array(matrix, dtype=np.float64).reshape(4, 4)


def image_size(image: bpy.types.Image) -> tuple[int, int]:
    size: Any = image.size  # reading it loads the image's file if needed
    return int(size[0]), int(size[1])
