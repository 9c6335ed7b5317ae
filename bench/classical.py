"""Classical surface reconstruction with Open3D, the baselines a learned model has to beat.

Open3D is an optional bench dependency (`pip install -e .[bench]`); the add-on and the backend
never import it. Both methods get the same points as the model, and neither gets normals:

- Screened Poisson (Kazhdan and Hoppe 2013), octree depth 8, with normals estimated from 30
  nearest neighbours and oriented consistently over a 15-neighbour tangent-plane graph, the
  usual recipe for a scan without normals. Its mesh is closed; nothing is trimmed.
- Ball Pivoting (Bernardini et al. 1999) with balls of 1, 2 and 4 times the mean spacing of the
  points, on the same estimated normals. Its mesh is open wherever the points leave gaps.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]  # (V, 3) float vertices, (F, 3) int faces


def _cloud(points: np.ndarray):  # -> open3d.geometry.PointCloud
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(30))
    pcd.orient_normals_consistent_tangent_plane(15)
    return pcd


def _arrays(mesh) -> Mesh:  # open3d.geometry.TriangleMesh -> arrays
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.triangles, np.int64)


def poisson(points: np.ndarray, depth: int = 8) -> Mesh:
    import open3d as o3d

    mesh, _ = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(_cloud(points), depth=depth)
    return _arrays(mesh)


def ball_pivoting(points: np.ndarray) -> Mesh:
    import open3d as o3d

    pcd = _cloud(points)
    spacing = float(np.mean(pcd.compute_nearest_neighbor_distance()))
    radii = o3d.utility.DoubleVector([spacing, 2 * spacing, 4 * spacing])
    return _arrays(o3d.geometry.TriangleMesh.create_from_point_cloud_ball_pivoting(pcd, radii))


METHODS: dict[str, Callable[[np.ndarray], Mesh]] = {"poisson": poisson, "ball_pivoting": ball_pivoting}


def available() -> bool:
    """Is Open3D installed (and loadable: it needs the system's libusb-1.0)?"""
    try:
        import open3d  # noqa: F401
    except ImportError:
        return False
    return True


def family(name: str) -> str:
    """A shape's family from its name: the unfamiliar set's ``shell-042.ply`` is a ``shell``."""
    stem = name.rsplit(".", 1)[0]
    head, _, tail = stem.rpartition("-")
    return head if head and tail.isdigit() else "all"
