"""Test input shared by the add-on and Blender tests: a voxel grid as a voxel editor's mesh."""

from __future__ import annotations

import numpy as np


def voxel_quads(grid: np.ndarray) -> np.ndarray:
    """The outer faces of the occupied voxels of ``grid`` (X, Y, Z) as quads (Q, 4, 3), in voxel units,
    wound so that their normals point out of the solid."""
    quads = []
    padded = np.pad(grid, 1)
    for axis in range(3):
        for step in (-1, 1):
            exposed = padded & ~np.roll(padded, -step, axis=axis)
            u, v = [a for a in range(3) if a != axis]
            for index in np.argwhere(exposed[1:-1, 1:-1, 1:-1]):
                quad = np.repeat(index[None].astype(np.float64), 4, axis=0)
                quad[:, axis] += step == 1
                quad[[1, 2], u] += 1
                quad[[2, 3], v] += 1
                if np.cross(quad[1] - quad[0], quad[2] - quad[0])[axis] * step < 0:
                    quad = quad[::-1]
                quads.append(quad)
    return np.stack(quads)
