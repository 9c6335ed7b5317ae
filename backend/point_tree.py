"""Nearest points in a cloud: one k-d tree per cloud, shared by the patch features, the fit and carving.

The patch features ask for the 16 nearest input points of every query point, which is a third
of a 3,000-point reconstruction's time. pykdtree answers those queries about 1.5x faster than
scipy's cKDTree (0.10 against 0.16 s for 146,000 queries on 2 cores, the same neighbours), in
float32 and over OpenMP threads.
"""

from __future__ import annotations

import numpy as np
from pykdtree.kdtree import KDTree

LEAF_SIZE = 32  # points per leaf: the fastest for k = 16 here


class PointTree:
    """A k-d tree over points (N, 3), built once and queried many times."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.ascontiguousarray(points, dtype=np.float32)
        self.n = len(self.points)
        self._tree = KDTree(self.points, leafsize=LEAF_SIZE)

    def query(self, q: np.ndarray, k: int = 1, within: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(distances (M, k) float32, indices (M, k) int64) of the k nearest points to each of q
        (M, 3), nearest first. Neighbours farther than ``within``, or beyond the cloud's size,
        read as distance inf and index N (scipy's convention)."""
        q = np.ascontiguousarray(q, dtype=np.float32).reshape(-1, 3)
        if len(q) == 0:
            return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
        kk = min(k, self.n)  # pykdtree fills the columns past the cloud's size with garbage
        found, which = self._tree.query(q, k=kk, distance_upper_bound=within)
        if kk == k:
            return found.reshape(len(q), k), which.reshape(len(q), k).astype(np.int64)
        distance = np.full((len(q), k), np.inf, np.float32)
        index = np.full((len(q), k), self.n, np.int64)
        distance[:, :kk], index[:, :kk] = found.reshape(len(q), kk), which.reshape(len(q), kk)
        return distance, index

    @property
    def nbytes(self) -> int:
        return 20 * self.n  # the float32 points it holds, the permutation and the nodes, roughly
