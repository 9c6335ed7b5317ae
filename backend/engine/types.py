"""Plain data types exchanged between the engine and its front ends (CLI, serve process).

Arrays are numpy so that the serve process can put them on the wire unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..wire.constants import Kind

# progress(stage, fraction in [0, 1]); stages: "encode", "evaluate", "marching_cubes", "simplify", "refine",
# "fit", "normals" (in that order; only the stages that run are reported)
ProgressFn = Callable[[str, float], None]
# cancel() -> True when the caller wants the work to stop; polled between chunks of work
CancelFn = Callable[[], bool]
FractionFn = Callable[[float], None]  # progress of one stage, 0 to 1


class InputError(ValueError):
    """The observation or an option is invalid. The message names what is wrong."""


class FieldGoneError(KeyError):
    """No field is cached under this id (released, evicted or never made); raised by the field cache.

    A KeyError, as for any mapping; the server tells it apart by its type, so that a KeyError from
    some other lookup inside the engine is never taken for a missing field. Defined here, with the
    engine's other errors, so that the server can catch it without importing torch.
    """


class Cancelled(Exception):  # noqa: N818 - the agreed name
    """The work was stopped because ``cancel()`` returned True."""


@dataclass
class Observation:
    """What the user gives, in the user's own frame.

    Exactly one of ``points``, ``voxels`` or ``image`` is set (none for unconditional sampling).
    - points: (N, 3) float32, any scale and position.
    - voxels: (D, D, D) bool/uint8/float occupancy indexed grid[x, y, z]; ``bounds`` (2, 3) float
      gives the min and max corner of the grid in the user frame (default: the unit cube
      [-0.5, 0.5]^3).
    - image: (H, W, 3) or (H, W, 4) uint8 or float32 in [0, 1]; ``mask`` (H, W), optional, says
      where the object is (engine/framing.py finds it by alpha or the backdrop otherwise).
    - views: (V, H, W, 3 or 4) pictures of one object, framed, with ``cameras`` (V, 15), the
      rows of ``data.cameras.Cameras.to_array`` (a views model; see models/views.py).
    """

    points: np.ndarray | None = None
    voxels: np.ndarray | None = None
    bounds: np.ndarray | None = None
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    views: np.ndarray | None = None
    cameras: np.ndarray | None = None


@dataclass
class ReconstructOptions:
    tau: float | None = None  # probability threshold; None = the model's cross-validated tau
    resolution: int = 128  # final grid resolution, 32 * 2^k, up to 512
    refine_steps: int = 0  # gradient refinement iterations (0 = off)
    simplify_faces: int | None = None  # target face count for quadric simplification (None = off)
    normals: bool = False  # vertex normals from the field's gradient
    fit_points: bool = True  # point clouds: move the surface onto the scan where it is dense (fit.py)
    outlines: bool = True  # reference views: blend the field with the views' visual hull (outlines.py)
    open_cavities: bool = True  # point clouds: carve cavities filled over buried points (cavities.py)
    keep_field: bool = True  # cache the field for later re-extraction at another tau
    seed: int = 0  # for sampling / refinement randomness


@dataclass
class MeshResult:
    vertices: np.ndarray  # (V, 3) float32, in the input's frame
    faces: np.ndarray  # (F, 3) int32, counter-clockwise seen from outside (normals point out)
    tau: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, and "total"
    normals: np.ndarray | None = None  # (V, 3) float32 when requested
    field_id: str | None = None  # id of the cached field, for re-extraction
    warnings: list[str] = field(default_factory=list)  # e.g. "empty mesh: no surface at tau"
    # counts for diagnostics: "evaluations" (network queries this call), "known_values",
    # "surface_cells", "passes"
    stats: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelInfo:
    """A model the engine can use: a shipped name or a checkpoint file."""

    name: str
    kind: Kind
    tau: float  # the model's threshold (cross-validated on held-out shapes)
    path: str
    automatic_points: tuple[int, int] | None = None  # cloud sizes Automatic takes it for
