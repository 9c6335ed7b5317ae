"""Fitting the surface to a scan: each vertex moves along its normal onto the points near it.

The network's surface is its reading of the whole cloud, smoothed at the scale of its features;
where the scan is dense, the points themselves say where the surface is, to within their noise.
Each vertex takes the weighted mean of the signed offsets, along its normal, of its nearest
input points: weights fall off with a point's distance across the normal and with its offset's
distance from the estimate (a few rounds of mean shift, from the vertex's own position), so that
points on the far side of a thin wall count little; the shifts are then averaged over each vertex's ring
of neighbours, so that the scan's noise averages out and the surface stays smooth. A vertex with
fewer than ``MIN_POINTS`` points near keeps the network's position: where the scan has no
evidence (a hole, the missing underside of a partial scan, a sparse cloud) the prior decides.
All in the normalised frame (the object fills the unit cube).
"""

from __future__ import annotations

import numpy as np

from ..point_tree import PointTree

RADIUS = 0.02  # points farther than this from a vertex are not its evidence (2.5 cells at 128^3)
NEIGHBOURS = 16  # the nearest points within RADIUS that a vertex reads
ACROSS = 0.01  # weight scale of a point's distance across the vertex's normal
ALONG = 0.01  # ... and of its offset along it
MIN_POINTS = 4
MEAN_SHIFT_ROUNDS = 3  # the first round is biased towards the vertex; the next ones remove that
SMOOTHING = 2  # rounds of averaging the shifts over each vertex's ring


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals of a mesh whose faces wind counter-clockwise outside."""
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])  # length: twice the area
    corners = faces.ravel()
    normals = np.stack(
        [np.bincount(corners, np.repeat(face_normals[:, a], 3), len(vertices)) for a in range(3)], 1
    )
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def ring_mean(values: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Each vertex's value averaged with its edge neighbours'. On a closed mesh every edge is two
    half-edges of opposite direction, so each neighbour counts once."""
    tail = faces.ravel()
    head = np.roll(faces, -1, axis=1).ravel()  # the half-edges (a, b), (b, c), (c, a) of each face
    total = values + np.bincount(tail, values[head], len(values))
    return total / (1 + np.bincount(tail, minlength=len(values)))


class Scan:
    """A point cloud (N, 3) that surfaces are fitted to. Its k-d tree is built on first use and
    kept, so that each re-extraction of a cached field (the live threshold) reuses it; ``tree``
    hands it one already built over the same points (a patch model's, ``models/patches.py``)."""

    def __init__(self, points: np.ndarray, tree: PointTree | None = None) -> None:
        self.points = np.asarray(points, np.float32)
        self._tree = tree
        self._own_tree = tree is None

    def __len__(self) -> int:
        return len(self.points)

    @property
    def tree(self) -> PointTree:
        if self._tree is None:
            self._tree = PointTree(self.points)
        return self._tree

    @property
    def nbytes(self) -> int:
        tree = self._tree.nbytes if self._own_tree and self._tree is not None else 0
        return self.points.nbytes + tree


def fit_to_points(vertices: np.ndarray, faces: np.ndarray, scan: Scan) -> np.ndarray:
    """``vertices`` (V, 3) moved along their normals onto the nearby points of ``scan``."""
    if len(vertices) == 0 or len(faces) == 0 or len(scan) < MIN_POINTS:
        return vertices
    v = vertices.astype(np.float32)
    normals = vertex_normals(v.astype(np.float64), faces).astype(np.float32)
    k = min(NEIGHBOURS, len(scan))
    distance, index = scan.tree.query(v, k=k, within=RADIUS)
    near = np.isfinite(distance)
    offsets = scan.points[np.where(near, index, 0)] - v[:, None]  # (V, k, 3)
    along = np.einsum("vkc,vc->vk", offsets, normals)
    across_sq = np.maximum(np.square(distance, where=near, out=np.zeros_like(distance)) - along**2, 0.0)
    nearby = np.where(near, np.exp(-across_sq / ACROSS**2), 0.0)
    shift = np.zeros(len(v), np.float32)
    for _ in range(MEAN_SHIFT_ROUNDS):  # the weighted mean of the offsets, re-centred on the estimate
        weight = nearby * np.exp(-(((along - shift[:, None]) / ALONG) ** 2))
        shift = (weight * along).sum(1) / np.maximum(weight.sum(1), 1e-12)
    shift[near.sum(1) < MIN_POINTS] = 0.0
    for _ in range(SMOOTHING):
        shift = ring_mean(shift, faces)
    return (vertices + shift[:, None] * normals).astype(vertices.dtype)
