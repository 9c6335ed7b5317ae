"""Field values known on the integer lattice, stored sparsely.

The adaptive extraction evaluates the field only near the surface, so a dense
``(R + 1)^3`` array would be mostly empty (540 MB of float32 at 512^3). Values are kept
in small dense bricks of ``BRICK^3`` points, allocated on first touch and found through
a dense table of brick slots. Lookups and stores are a few vectorised index operations.
Unknown values read as NaN.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

BRICK_SHIFT = 2
BRICK = 1 << BRICK_SHIFT  # points per brick edge
BRICK_POINTS = BRICK**3

Evaluate = Callable[[np.ndarray], np.ndarray]  # (k, 3) int32 lattice points -> (k,) float32


@functools.lru_cache(maxsize=16)
def _cube_layout(shift: int, size: int, span: int) -> tuple[np.ndarray, np.ndarray]:
    """For the points of a cube starting ``shift`` into a brick: their brick (of span^3) and offset in it."""
    u = np.arange(size) + shift
    bx, by, bz = np.meshgrid(u >> BRICK_SHIFT, u >> BRICK_SHIFT, u >> BRICK_SHIFT, indexing="ij")
    ox, oy, oz = np.meshgrid(u & (BRICK - 1), u & (BRICK - 1), u & (BRICK - 1), indexing="ij")
    which = ((bx * span + by) * span + bz).reshape(-1)
    inside = ((ox * BRICK + oy) * BRICK + oz).reshape(-1)
    return which, inside.astype(np.int64)


class LatticeValues:
    """float32 values at points of the lattice {0..n-1}^3; NaN where nothing is stored."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._nb = -(-n // BRICK)
        self._table = np.full(self._nb**3, -1, np.int32)
        # unused pool entries are NaN, and there is always at least one past the used bricks
        self._pool = np.full(1, np.nan, np.float32)
        self._bricks = 0
        self.count = 0  # known values

    @property
    def nbytes(self) -> int:
        return int(self._table.nbytes + self._pool.nbytes)

    def _locate(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat brick index, offset inside the brick) of each point."""
        p = np.asarray(points)
        b = p >> BRICK_SHIFT
        o = p & (BRICK - 1)
        brick = (b[:, 0].astype(np.int64) * self._nb + b[:, 1]) * self._nb + b[:, 2]
        offset = (o[:, 0] * BRICK + o[:, 1]) * BRICK + o[:, 2]
        return brick, offset.astype(np.int64)

    def _slots(self, points: np.ndarray, allocate: bool) -> np.ndarray:
        """Pool index of each point; -1 where its brick does not exist (and ``allocate`` is off)."""
        brick, offset = self._locate(points)
        ids = self._table[brick]
        if allocate and (ids < 0).any():
            new = np.unique(brick[ids < 0])
            first = self._bricks
            self._grow(first + len(new))
            self._table[new] = np.arange(first, first + len(new), dtype=np.int32)
            ids = self._table[brick]
        slots = ids.astype(np.int64) * BRICK_POINTS + offset
        return np.where(ids >= 0, slots, -1)

    def _grow(self, bricks: int) -> None:
        need = bricks * BRICK_POINTS
        if need >= len(self._pool):
            # geometric growth keeps repeated small allocations amortised
            size = max(need + 1, 2 * len(self._pool), 64 * BRICK_POINTS)
            pool = np.full(size, np.nan, np.float32)
            pool[: len(self._pool)] = self._pool
            self._pool = pool
        self._bricks = bricks

    def get(self, points: np.ndarray) -> np.ndarray:
        """Values at ``points`` (k, 3); NaN where unknown."""
        slots = self._slots(points, allocate=False)
        out = self._pool[np.maximum(slots, 0)]
        out[slots < 0] = np.nan
        return out

    def get_cubes(self, origins: np.ndarray, size: int) -> np.ndarray:
        """Values of the ``size``^3 points from each origin (k, 3) -> (k, size, size, size); NaN unknown.

        All origins must have the same offset inside their brick; then the brick of every
        point relative to its origin is the same for all cubes, and one table lookup per
        brick replaces per-point index arithmetic.
        """
        origins = np.asarray(origins, np.int64)
        if len(origins) == 0:
            return np.zeros((0, size, size, size), np.float32)
        shift = int(origins[0, 0]) & (BRICK - 1)
        if ((origins & (BRICK - 1)) != shift).any():
            raise ValueError("get_cubes needs origins with one common offset inside their bricks")
        span = -(-(shift + size) // BRICK)  # bricks per axis
        which, inside = _cube_layout(shift, size, span)
        first = origins >> BRICK_SHIFT  # (k, 3), may be -1 off the lattice
        r = np.arange(span)
        b = [first[:, a, None] + r for a in range(3)]  # (k, span) per axis
        ok = [(x >= 0) & (x < self._nb) for x in b]
        valid = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
        flat = (b[0][:, :, None, None] * self._nb + b[1][:, None, :, None]) * self._nb + b[2][
            :, None, None, :
        ]
        ids = np.where(valid, self._table[np.where(valid, flat, 0)], -1).reshape(len(origins), -1)
        # a missing brick reads the NaN just past the used bricks
        base = np.where(ids >= 0, ids.astype(np.int64) * BRICK_POINTS, self._bricks * BRICK_POINTS)
        step = (ids >= 0).astype(np.int64)
        idx = base[:, which] + step[:, which] * inside
        return self._pool[idx].reshape(len(origins), size, size, size)

    def fetch(self, points: np.ndarray, evaluate: Evaluate) -> tuple[np.ndarray, int]:
        """Values at ``points``, evaluating (once each) those not known yet -> (values, evaluations)."""
        slots = self._slots(points, allocate=True)
        values = self._pool[slots]
        unknown = np.isnan(values)
        if not unknown.any():
            return values, 0
        wanted, first, inverse = np.unique(slots[unknown], return_index=True, return_inverse=True)
        new = np.asarray(evaluate(np.asarray(points)[unknown][first]), np.float32)
        # a NaN would read as "unknown" forever: store the field's failures as far outside
        new = np.nan_to_num(new, nan=-1e6, posinf=1e6, neginf=-1e6)
        self._pool[wanted] = new
        self.count += len(wanted)
        values[unknown] = new[inverse.reshape(-1)]
        return values, len(wanted)
