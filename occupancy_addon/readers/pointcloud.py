"""Point clouds: a mesh's vertices or a point cloud object's points, in the object's frame."""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np

from ..backend_link import load_protocol
from ..errors import UserError
from ..scene_data import InputChoice, InputData, point_count, point_data, type_label, world_matrix
from .base import Context, MaybeImage, MaybeObject, Reader

MAX_POINTS: int = load_protocol().MAX_POINTS  # what the backend takes, checked before any point is read


class PointCloudReader(Reader):
    kind = "pointcloud"
    mode = ("POINTCLOUD", "Points", "Use the vertices or points of the active object")

    def claims(self, obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> bool:
        return obj.type in ("MESH", "POINTCLOUD")  # asked after voxels: a mesh without faces

    def detect(self, obj: MaybeObject, context: Context, evaluated: bool, image: MaybeImage) -> InputChoice:
        assert obj is not None
        if obj.type not in ("MESH", "POINTCLOUD"):
            raise UserError(
                f"'{obj.name}' is {type_label(obj)} object and has no points: select a mesh or point cloud"
            )
        data, _owner = point_data(obj, context, evaluated)
        count = point_count(data)
        if count == 0:
            raise UserError(f"'{obj.name}' has no points to reconstruct from")
        if count > MAX_POINTS:
            raise UserError(
                f"'{obj.name}' has {count:,} points, more than the {MAX_POINTS:,} the backend takes: "
                "thin them out first (for example with Merge by Distance)"
            )
        return InputChoice(self.kind, f"Point cloud: {count:,} points", obj.name, obj=obj, count=count)

    def read(self, context: bpy.types.Context, choice: InputChoice, evaluated: bool) -> InputData:
        assert choice.obj is not None
        data, _owner = point_data(choice.obj, context, evaluated)
        points = read_points(data)
        if len(points) == 0:
            raise UserError(f"'{choice.obj.name}' has no points to reconstruct from")
        points, warnings = finite_points(points, choice.obj.name)
        return InputData(choice, {"points": points}, world_matrix(choice.obj.matrix_world), warnings)


def finite_points(points: np.ndarray, name: str) -> tuple[np.ndarray, list[str]]:
    """The points without those with NaN or infinite coordinates (dropped with a warning, as the
    backend does); UserError when none is left."""
    finite = np.isfinite(points).all(axis=1)
    kept = int(np.count_nonzero(finite))
    if kept == len(points):
        return points, []
    if kept == 0:
        raise UserError(
            f"'{name}' has no point with finite coordinates: all {len(points):,} are NaN or infinite"
        )
    warning = f"Left out {len(points) - kept:,} of {len(points):,} points with NaN or infinite coordinates"
    return points[finite], [warning]


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
