"""Triangle mesh -> 32^3 occupancy grid over its cubic bounds, in numpy (no bpy, no torch).

A voxel is occupied when the surface passes through it, or when it cannot be reached from outside
the grid without crossing the surface (a flood fill of the empty space from a border around the
grid). That is the voxel models' training rule ("the solid touches the voxel"), and unlike ray
parity it does not care whether a mesh is one closed shell: overlapping or intersecting parts,
which modelled objects often have, fill as their union. A mesh with holes larger than a voxel
leaks, and then only its surface voxels stay occupied.
"""

from __future__ import annotations

import numpy as np

from .backend_link import load_protocol

RESOLUTION: int = load_protocol().VOXEL_RES  # the voxel models' input grid, as the backend defines it
SAMPLE_SPACING = 0.5  # between surface samples, in voxels: every voxel a triangle crosses gets one
CHUNK_SAMPLES = 1 << 21  # surface samples generated at once (bounds the memory use)
# How far (in voxels) samples move off voxel boundaries; well above float32 rounding of a mesh's
# coordinates, far below anything visible.
NUDGE = 1e-4


class VoxelizeError(ValueError):
    """The mesh cannot be voxelised (no triangles, no extent, non-finite coordinates)."""


def cubic_bounds(vertices: np.ndarray) -> np.ndarray:
    """(2, 3) float32 min/max corners of the cube around the vertices' bounding box (same centre,
    the longest side on every axis), so that the grid's voxels are cubes."""
    lo, hi = vertices.min(axis=0).astype(np.float64), vertices.max(axis=0).astype(np.float64)
    centre, side = 0.5 * (lo + hi), float((hi - lo).max())
    if not side > 0:
        raise VoxelizeError("the mesh has no extent: all its vertices lie at one spot")
    return np.stack([centre - side / 2, centre + side / 2]).astype(np.float32)


def voxelize(
    vertices: np.ndarray, triangles: np.ndarray, resolution: int = RESOLUTION
) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy ``(R, R, R)`` bool indexed ``[x, y, z]`` and its ``(2, 3)`` bounds.

    ``vertices`` (V, 3) float, ``triangles`` (T, 3) int indices into them.
    """
    vertices = np.asarray(vertices, np.float64).reshape(-1, 3)
    triangles = np.asarray(triangles, np.int64).reshape(-1, 3)
    if len(triangles) == 0:
        raise VoxelizeError("the mesh has no faces to voxelise")
    used = vertices[np.unique(triangles)]  # vertices no triangle uses do not matter
    if not np.isfinite(used).all():
        raise VoxelizeError("the mesh has vertices with NaN or infinite coordinates")
    bounds = cubic_bounds(used)
    size = float(bounds[1, 0] - bounds[0, 0]) / resolution
    # Grid coordinates: voxel (i, j, k) spans [i, i + 1) on each axis.
    corners = (vertices - bounds[0].astype(np.float64)) / size
    surface = surface_voxels(corners[triangles], resolution)
    return surface | ~outside(surface), bounds


def surface_voxels(tri: np.ndarray, resolution: int) -> np.ndarray:
    """Voxels that triangles (T, 3 corners, 3) in grid coordinates pass through (counter-clockwise
    seen from outside, as Blender's normals point).

    Each triangle is sampled on a barycentric lattice fine enough that neighbouring samples are at
    most SAMPLE_SPACING voxels apart; triangles are grouped by lattice size to stay vectorised.
    """
    grid = np.zeros((resolution,) * 3, bool)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    # A face lying exactly on a voxel boundary belongs to the voxel on its inner side (a voxel
    # mesh's faces all do): samples move a hair against the face normal before they are binned.
    normal = np.cross(b - a, c - a)
    length = np.linalg.norm(normal, axis=1, keepdims=True)
    inward = -NUDGE * np.divide(normal, length, out=np.zeros_like(normal), where=length > 0)
    longest = np.max(
        [np.linalg.norm(b - a, axis=1), np.linalg.norm(c - b, axis=1), np.linalg.norm(a - c, axis=1)], axis=0
    )
    steps = np.maximum(np.ceil(longest / SAMPLE_SPACING), 1).astype(np.int64)
    for n in np.unique(steps):
        i, j = np.nonzero(np.tri(n + 1, dtype=bool)[::-1])  # all i + j <= n
        u, v = (i / n)[None, :, None], (j / n)[None, :, None]
        members = np.nonzero(steps == n)[0]
        per_chunk = max(1, CHUNK_SAMPLES // len(i))
        for start in range(0, len(members), per_chunk):
            pick = members[start : start + per_chunk]
            ta, tb, tc = a[pick][:, None], b[pick][:, None], c[pick][:, None]
            points = ta + u * (tb - ta) + v * (tc - ta)
            # a hair towards the centroid as well: an edge on a voxel boundary is binned with the
            # triangle's own side (the neighbouring triangle covers the other one)
            towards = (ta + tb + tc) / 3 - points
            distance = np.linalg.norm(towards, axis=2, keepdims=True)
            towards *= np.minimum(distance, NUDGE) / np.maximum(distance, 1e-12)
            points = (points + towards + inward[pick][:, None]).reshape(-1, 3)
            # every point lies within the bounds; the far faces of the cube belong to the last voxels
            index = np.clip(np.floor(points).astype(np.int64), 0, resolution - 1)
            grid[index[:, 0], index[:, 1], index[:, 2]] = True
    return grid


def outside(solid: np.ndarray) -> np.ndarray:
    """Voxels reachable from beyond the grid through face-adjacent voxels that are not ``solid``."""
    walls = np.pad(solid, 1)  # a free border all around: the flood starts there
    reached = np.zeros_like(walls)
    reached[0, :, :] = reached[-1, :, :] = True
    reached[:, 0, :] = reached[:, -1, :] = True
    reached[:, :, 0] = reached[:, :, -1] = True
    free = ~walls
    while True:
        grown = reached.copy()
        grown[1:] |= reached[:-1]
        grown[:-1] |= reached[1:]
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= free
        if np.array_equal(grown, reached):
            return reached[1:-1, 1:-1, 1:-1]
        reached = grown
