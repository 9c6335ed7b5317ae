"""Writing the backend's triangles into a Blender mesh, fast enough for a live slider.

``from_pydata`` builds Python lists and takes about half a second for 200k faces; filling the
mesh's arrays with ``foreach_set`` from typed numpy arrays takes a small fraction of that. Positions
and corner vertices go through the attribute API (one memcpy each), with the older per-element
collections as a fallback, since ``.corner_vert`` is an internal attribute name.
"""

from __future__ import annotations

import bpy
import numpy as np


def checked_mesh(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``vertices`` as float32 (V, 3) and ``faces`` as int32 (F, 3), or ValueError when they cannot
    make a mesh: non-finite coordinates (also after rounding to float32) or faces that point past
    the vertices. Checked before anything is written, so a bad mesh never reaches the scene."""
    positions = np.ascontiguousarray(vertices, dtype=np.float32).reshape(-1, 3)
    corners = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    if not np.isfinite(positions).all():
        bad = int((~np.isfinite(positions).all(axis=1)).sum())
        raise ValueError(f"{bad:,} of its {len(positions):,} vertices have NaN or infinite coordinates")
    if corners.size and (corners.min() < 0 or corners.max() >= len(positions)):
        raise ValueError(
            f"face indices must lie in [0, {len(positions)}), got {corners.min()}..{corners.max()}"
        )
    return positions, corners


def write_mesh(mesh: bpy.types.Mesh, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Replace the geometry of ``mesh`` with ``vertices`` (V, 3) and triangles ``faces`` (F, 3).

    Materials, the name and every user of the mesh stay; edges are derived by ``update()``.
    ValueError (``checked_mesh``) leaves the mesh untouched.
    """
    positions, corners = checked_mesh(vertices, faces)
    positions, corners = positions.reshape(-1), corners.reshape(-1)
    n_vertices, n_faces = len(positions) // 3, len(corners) // 3
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
