"""Multiresolution IsoSurface Extraction (MISE), vectorised, closed by construction.

As in the original: evaluate the base grid (32^3 cells), subdivide the cells whose
corners straddle the threshold, evaluate the new corners, and repeat down to the final
resolution. Each level is processed as whole arrays: a subdivided parent contributes its
3x3x3 lattice points, and the corners of its 8 children are windows of that block.

Two additions make the result a closed surface without a dense grid:

- The box boundary counts as "outside" (the original pads the dense grid with a large
  negative value): a cell on the boundary with an inside corner straddles as well.
- The surface is followed across cell faces: a finest surface cell whose face has a sign
  change (or an inside part on the box boundary) needs the neighbour behind that face at
  the finest level too. If MISE left that neighbour inside a coarse cell (the surface
  crossed the coarse cell between its corners), the coarse cell is subdivided down to the
  neighbour and the pass goes on until no face is left open.

Marching cubes on the returned surface cells then gives the same triangles that marching
cubes on a dense grid would give there, and nothing is missing between them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .grid import Grid
from .lattice import LatticeValues
from .types import CancelFn, Cancelled

# evaluate(lattice points (k, 3) int32, (start, end)) -> logits (k,) float32, where start..end
# is the part of the extraction the call covers, in levels (0 .. depth + 1), for progress reports
LevelEvaluate = Callable[[np.ndarray, tuple[float, float]], np.ndarray]

PARENT_BATCH = 16384  # parents per step: bounds temporaries (~30 MB) and the time between cancel polls

_BLOCK27 = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(27, 3).astype(np.int32)
_CHILD8 = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).astype(np.int32)  # (2, 2, 2, 3)


@dataclass
class SurfaceCells:
    """Finest cells that the level set (or the box boundary, on inside parts) passes through."""

    cells: np.ndarray  # (m, 3) int32 lower-corner lattice indices
    evaluations: int  # field evaluations made by this pass (values already known are not counted)
    passes: int  # sweeps over the levels (1 unless the surface had to be followed into coarse cells)


def _corner_codes(above: np.ndarray) -> np.ndarray:
    """Bit i of the code is set when corner i = (a, b, c) (i = 4a + 2b + c) is above the threshold.

    ``above`` is (..., n + 1, n + 1, n + 1) point flags over the last three axes; the result
    is (..., n, n, n) uint8 codes of the cells between them.
    """
    n = above.shape[-1] - 1
    bits = above.view(np.uint8)
    code = np.zeros(above.shape[:-3] + (n, n, n), np.uint8)
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                code |= bits[..., a : a + n, b : b + n, c : c + n] << np.uint8(4 * a + 2 * b + c)
    return code


def _straddles(code: np.ndarray, at_boundary: np.ndarray) -> np.ndarray:
    """Cells whose corners are mixed, or that are inside on the box boundary."""
    return (code != 0) & ((code != 255) | at_boundary)


def _face_mask(axis: int, side: int) -> np.uint8:
    """Bits of the four corners on one face of a cell."""
    bits = 0
    for i in range(8):
        if (i >> (2 - axis)) & 1 == side:
            bits |= 1 << i
    return np.uint8(bits)


# the six faces of a cell (axis 0 low, axis 0 high, axis 1 low, ...): corner bits, step to the neighbour
_FACE_BITS = np.array([_face_mask(axis, side) for axis in range(3) for side in (0, 1)], np.uint8)
_FACE_STEPS = np.array(
    [[(2 * side - 1) * (a == axis) for a in range(3)] for axis in range(3) for side in (0, 1)], np.int32
)


def _on_boundary(cells: np.ndarray, n: int) -> np.ndarray:
    return ((cells == 0) | (cells == n - 1)).any(axis=-1)


@functools.lru_cache(maxsize=8)
def _base_layout(n0: int, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lattice points of the base grid, its cells, and which cells touch the box boundary."""
    axis = np.arange(n0 + 1, dtype=np.int32) << depth
    points = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    cells = np.stack(np.meshgrid(*[np.arange(n0, dtype=np.int32)] * 3, indexing="ij"), -1)
    for a in (points, cells):
        a.flags.writeable = False  # shared between passes
    return points, cells, _on_boundary(cells, n0)


class _Pass:
    """One extraction at one threshold; ``values`` persists between passes."""

    def __init__(
        self, grid: Grid, values: LatticeValues, evaluate: LevelEvaluate, thr: float, cancel: CancelFn | None
    ) -> None:
        self.grid, self.values, self.evaluate, self.thr, self.cancel = grid, values, evaluate, thr, cancel
        self.depth = grid.depth
        # subdivided[k]: cells of level k that were split (levels 0 .. depth - 1)
        self.subdivided = [np.zeros((grid.base << k,) * 3, bool) for k in range(self.depth)]
        # pending[k]: parents (cells of level k - 1) whose children at level k are still to classify
        self.pending: list[list[np.ndarray]] = [[] for _ in range(self.depth + 1)]
        self.surface: list[np.ndarray] = []
        self.evaluations = 0

    def _fetch(self, points: np.ndarray, span: tuple[float, float]) -> np.ndarray:
        if self.cancel is not None and self.cancel():
            raise Cancelled("cancelled")
        vals, n = self.values.fetch(points, lambda p: self.evaluate(p, span))
        self.evaluations += n
        return vals

    def run(self) -> SurfaceCells:
        self._base_level()
        passes = 1
        while any(self.pending):
            for k in range(1, self.depth + 1):
                if self.pending[k]:
                    parents = np.concatenate(self.pending[k])
                    self.pending[k] = []
                    for start in range(0, len(parents), PARENT_BATCH):
                        stop = min(start + PARENT_BATCH, len(parents))
                        span = (k + start / len(parents), k + stop / len(parents))
                        self._refine_level(k, parents[start:stop], span)
            if any(self.pending):  # new work came only from following the surface
                passes += 1
        cells = np.concatenate(self.surface) if self.surface else np.zeros((0, 3), np.int32)
        return SurfaceCells(cells.astype(np.int32), self.evaluations, passes)

    def _base_level(self) -> None:
        n0 = self.grid.base
        points, cells, boundary = _base_layout(n0, self.depth)
        code = _corner_codes((self._fetch(points, (0.0, 1.0)) > self.thr).reshape(n0 + 1, n0 + 1, n0 + 1))
        straddle = _straddles(code, boundary)
        if self.depth == 0:
            self.surface.append(cells[straddle])  # every cell is at the finest level: nothing to open
        else:
            self.subdivided[0][straddle] = True
            self.pending[1].append(cells[straddle])

    def _refine_level(self, k: int, parents: np.ndarray, span: tuple[float, float]) -> None:
        """Classify the children (level k) of ``parents`` (level k - 1)."""
        stride = 1 << (self.depth - k)
        points = ((parents * (2 * stride))[:, None, :] + _BLOCK27[None] * stride).reshape(-1, 3)
        code = _corner_codes((self._fetch(points, span) > self.thr).reshape(-1, 3, 3, 3))  # (m, 2, 2, 2)
        children = parents[:, None, None, None, :] * 2 + _CHILD8[None]  # (m, 2, 2, 2, 3)
        straddle = _straddles(code, _on_boundary(children, self.grid.base << k))
        if k == self.depth:
            self.surface.append(children[straddle])
            self._close(parents, code)
            return
        split = children[straddle]
        split = split[~self.subdivided[k][tuple(split.T)]]
        self.subdivided[k][tuple(split.T)] = True
        self.pending[k + 1].append(split)

    def _close(self, parents: np.ndarray, code: np.ndarray) -> None:
        """Open up the coarse cells that the surface in the finest children of ``parents`` runs into.

        Only faces on a parent's boundary can lead to a cell that is not at the finest level,
        and only where the neighbouring parent was not subdivided; those are few.
        """
        sub = self.subdivided[-1]
        n, r = sub.shape[0], self.grid.resolution
        found = []
        for f, bits in enumerate(_FACE_BITS):
            axis, side = divmod(f, 2)
            step = _FACE_STEPS[f]
            beyond = parents + step
            open_side = (beyond[:, axis] >= 0) & (beyond[:, axis] < n)
            open_side[open_side] = ~sub[tuple(beyond[open_side].T)]
            if not open_side.any():
                continue
            idx = np.flatnonzero(open_side)
            faces = np.take(code[idx], side, axis=1 + axis) & bits  # (q, 2, 2): children on that side
            q, i, j = np.nonzero(faces)
            others = [a for a in range(3) if a != axis]
            child = parents[idx[q]] * 2
            child[:, axis] += side
            child[:, others[0]] += i.astype(np.int32)
            child[:, others[1]] += j.astype(np.int32)
            crossed = faces[q, i, j] != bits  # mixed face; else all inside: open only on the box boundary
            if not crossed.all():
                crossed |= ((child[:, others] == 0) | (child[:, others] == r - 1)).any(axis=1)
            found.append(child[crossed] + step)
        if found:
            missing = np.concatenate(found)
            if len(missing):
                self._open(np.unique(missing, axis=0))

    def _open(self, cells: np.ndarray) -> None:
        """Subdivide every ancestor of the finest ``cells`` that is not subdivided yet."""
        for k in range(self.depth):
            anc = cells >> (self.depth - k)
            anc = anc[~self.subdivided[k][tuple(anc.T)]]
            if len(anc) == 0:
                continue
            anc = np.unique(anc, axis=0)
            self.subdivided[k][tuple(anc.T)] = True
            self.pending[k + 1].append(anc)


def find_surface_cells(
    grid: Grid, values: LatticeValues, evaluate: LevelEvaluate, thr: float, cancel: CancelFn | None = None
) -> SurfaceCells:
    """Run MISE at logit threshold ``thr``, reusing and extending ``values``."""
    return _Pass(grid, values, evaluate, thr, cancel).run()
