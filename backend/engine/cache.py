"""Fields kept after a reconstruction, for re-extraction at another threshold.

A cached field holds what is needed to extract again without encoding again: the
field (code c, latent z and a reference to the shared model), every value MISE computed,
the lattice, the frame and the options. The cache is a least-recently-used map bounded
by the bytes its entries hold; the value store of an entry grows as new thresholds are
explored, and the cache re-checks its bound after each extraction.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import OrderedDict
from dataclasses import dataclass

from .field import Field
from .fit import Scan
from .grid import Grid
from .lattice import LatticeValues
from .observation import UserFrame
from .types import FieldGoneError, ReconstructOptions


@dataclass
class CachedField:
    field: Field
    values: LatticeValues
    grid: Grid
    frame: UserFrame
    options: ReconstructOptions
    model: str  # the model's name or path, for logs
    warnings: list[str] = dataclasses.field(default_factory=list)  # from preparing the observation
    points: Scan | None = None  # a point cloud, for fitting each re-extraction's surface to it

    @property
    def nbytes(self) -> int:
        own = 0 if self.points is None else self.points.nbytes
        return self.values.nbytes + self.field.nbytes + own


class FieldCache:
    """field_id -> CachedField, least recently used evicted first once over ``capacity`` bytes."""

    def __init__(self, capacity: int) -> None:
        self.capacity = int(capacity)
        self._entries: OrderedDict[str, CachedField] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, field_id: object) -> bool:
        return field_id in self._entries

    @property
    def nbytes(self) -> int:
        return sum(e.nbytes for e in self._entries.values())

    def add(self, entry: CachedField) -> str | None:
        """Store ``entry`` and return its new id, or None when it alone exceeds the capacity."""
        if entry.nbytes > self.capacity:
            return None
        field_id = secrets.token_hex(8)
        self._entries[field_id] = entry
        self.shrink(keep=field_id)
        return field_id

    def get(self, field_id: str) -> CachedField:
        """The entry (now the most recently used); FieldGoneError if released or evicted."""
        entry = self._entries.get(field_id)
        if entry is None:
            raise FieldGoneError(field_id)
        self._entries.move_to_end(field_id)
        return entry

    def shrink(self, keep: str | None = None) -> None:
        """Evict least recently used entries (never ``keep``) until the total fits."""
        total = self.nbytes
        for field_id in list(self._entries):
            if total <= self.capacity:
                break
            if field_id == keep:
                continue
            total -= self._entries.pop(field_id).nbytes

    def release(self, field_id: str | None = None) -> None:
        """Drop one entry (FieldGoneError if unknown) or, with None, all of them."""
        if field_id is None:
            self._entries.clear()
        elif self._entries.pop(field_id, None) is None:
            raise FieldGoneError(field_id)
