"""The evaluation lattice: integer points 0..R per axis spanning the padded unit cube.

Lattice point ``l`` sits at ``box * (l / R - 0.5)`` in the normalised frame, with
``box = 1 + padding``, as in the original ONet generator. The coarsest level of the
adaptive extraction has ``BASE_RESOLUTION`` cells per axis; every level halves the cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..wire.constants import RESOLUTIONS
from .types import InputError

BASE_RESOLUTION = RESOLUTIONS[0]
PADDING = 0.1


def check_resolution(resolution: object) -> int:
    """``resolution`` as an int, or an InputError unless it is one of ``RESOLUTIONS`` (32 * 2^k up to 512)."""
    if isinstance(resolution, bool) or not isinstance(resolution, int | np.integer):
        raise InputError(f"resolution must be an integer, got {resolution!r}")
    r = int(resolution)
    if r not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(map(str, RESOLUTIONS))}, got {r}")
    return r


@dataclass(frozen=True)
class Grid:
    """A lattice of ``resolution`` cells per axis over the padded unit cube."""

    resolution: int = 128
    padding: float = PADDING
    base: int = BASE_RESOLUTION

    def __post_init__(self) -> None:
        check_resolution(self.resolution)

    @property
    def depth(self) -> int:
        """Number of subdivision levels from the base grid to the finest one."""
        return (self.resolution // self.base).bit_length() - 1

    @property
    def box(self) -> float:
        return 1.0 + self.padding

    @property
    def cell_size(self) -> float:
        """Edge length of a finest cell in the normalised frame."""
        return self.box / self.resolution

    def to_unit(self, lattice: np.ndarray) -> np.ndarray:
        """Lattice coordinates (integer or fractional) -> float32 points in the normalised frame."""
        scale = np.float32(self.box / self.resolution)
        return (np.asarray(lattice, np.float32) * scale - np.float32(self.box / 2)).astype(np.float32)
