"""The kinds of observation, one module each (see ``base.InputKind``), by name."""

from __future__ import annotations

from ..engine.types import InputError, Observation
from .base import InputKind
from .image import Image
from .pointcloud import PointCloud, scans_vary
from .unconditional import Unconditional
from .views import Views
from .voxels import Voxels

REGISTRY: dict[str, InputKind] = {
    k.name: k for k in (PointCloud(), Voxels(), Image(), Views(), Unconditional())
}
OBSERVED = {k.array: k for k in REGISTRY.values() if k.array is not None}  # by the array that carries it


def kind(name: str) -> InputKind:
    """The kind called ``name`` (KeyError naming the known ones)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown kind {name!r}; known: {', '.join(REGISTRY)}") from None


def observed_kind(observation: Observation) -> InputKind:
    """The kind an observation is for; InputError unless exactly one of its arrays is set, and
    only the companions that kind takes (a voxel grid's bounds)."""
    given = [k for array, k in OBSERVED.items() if getattr(observation, array) is not None]
    if len(given) != 1:
        arrays = list(OBSERVED)
        names = ", ".join(k.array or "" for k in given) or "none"
        raise InputError(
            f"an observation needs exactly one of {', '.join(arrays[:-1])} or {arrays[-1]}, got {names}"
        )
    for owner in REGISTRY.values():
        for extra in owner.extra_arrays:
            if getattr(observation, extra) is not None and extra not in given[0].extra_arrays:
                raise InputError(f"{extra} only apply to {owner.noun}")
    return given[0]


__all__ = ["OBSERVED", "REGISTRY", "InputKind", "kind", "observed_kind", "scans_vary"]
