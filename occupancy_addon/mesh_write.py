"""Writing the backend's triangles into a Blender mesh, fast enough for a live slider.

``from_pydata`` builds Python lists and takes about half a second for 200k faces; filling the
mesh's arrays with ``foreach_set`` from typed numpy arrays takes a small fraction of that. Positions
and corner vertices go through the attribute API (one memcpy each), with the older per-element
collections as a fallback, since ``.corner_vert`` is an internal attribute name.
"""

from __future__ import annotations

import bpy
import numpy as np


def write_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Replace the geometry of ``mesh`` with ``vertices`` (V, 3) and triangles ``faces`` (F, 3).

    Materials, the name and every user of the mesh stay; edges are derived by ``update()``.
    """
    positions = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1)
    corners = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1)
    n_vertices, n_faces = len(positions) // 3, len(corners) // 3
    if len(corners) and (corners.min() < 0 or corners.max() >= n_vertices):
        raise ValueError(f"face indices must lie in [0, {n_vertices}), got {corners.min()}..{corners.max()}")
    mesh.clear_geometry()
    if n_vertices == 0:
        mesh.update()
        return
    mesh.vertices.add(n_vertices)
    mesh.loops.add(len(corners))
    mesh.polygons.add(n_faces)
    position = mesh.attributes.get("position")
    corner_vert = mesh.attributes.get(".corner_vert")
    if isinstance(position, bpy.types.FloatVectorAttribute):
        position.data.foreach_set("vector", positions)
    else:
        mesh.vertices.foreach_set("co", positions)
    if isinstance(corner_vert, bpy.types.IntAttribute):
        corner_vert.data.foreach_set("value", corners)
    else:
        mesh.loops.foreach_set("vertex_index", corners)
    mesh.polygons.foreach_set("loop_start", np.arange(0, len(corners), 3, dtype=np.int32))
    mesh.update()


def read_mesh(mesh: bpy.types.Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) float32 and triangle corners (F, 3) int32 of an all-triangle mesh."""
    vertices = np.empty(len(mesh.vertices) * 3, np.float32)
    mesh.vertices.foreach_get("co", vertices)
    corners = np.empty(len(mesh.loops), np.int32)
    mesh.loops.foreach_get("vertex_index", corners)
    return vertices.reshape(-1, 3), corners.reshape(-1, 3)
