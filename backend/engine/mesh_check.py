"""The last check before a mesh leaves the engine: finite, and where the input's frame says.

Every mesh lies inside the padded box around its input (the unit frame's [-0.55, 0.55]^3, mapped
back). A vertex that is NaN, infinite or far outside it means the frame itself broke (coordinates
so extreme that float32 overflows, for instance), and such a mesh must be an error, never a file
or a reply. Front ends call ``check_mesh`` on what they are about to write or send.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .types import InputError

if TYPE_CHECKING:
    from .observation import UserFrame

# how far from the frame's centre a vertex may lie, in units of the frame's scale: the padded box
# reaches 0.55 * sqrt(3) at its corners; refinement may move a vertex a little further
MESH_REACH = 1.0


def check_mesh(
    vertices: np.ndarray, faces: np.ndarray, frame: UserFrame | None = None, normals: np.ndarray | None = None
) -> None:
    """InputError unless the mesh is finite, its faces index its vertices, and (given ``frame``)
    every vertex lies within ``MESH_REACH`` of the frame's centre."""
    v = np.asarray(vertices)
    f = np.asarray(faces)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3:
        raise InputError(f"the mesh has vertices of shape {v.shape} and faces of shape {f.shape}")
    bad = int((~np.isfinite(v).all(axis=1)).sum())
    if bad:
        raise InputError(
            f"the mesh has {bad:,} of {len(v):,} vertices that are NaN or infinite (the input's "
            "coordinates or bounds are too extreme to represent); nothing was written"
        )
    if len(f) and (int(f.min()) < 0 or int(f.max()) >= len(v)):
        raise InputError("the mesh has faces that index missing vertices; nothing was written")
    if normals is not None and not np.isfinite(normals).all():
        raise InputError("the mesh has NaN or infinite normals; nothing was written")
    if frame is None or len(v) == 0:
        return
    centre = np.asarray(frame.center, np.float64)
    # float32 vertices carry the centre's rounding error too
    reach = MESH_REACH * frame.scale + 1e-6 * max(1.0, float(np.abs(centre).max()))
    distance = float(np.abs(v.astype(np.float64) - centre).max())
    if not distance <= reach:
        raise InputError(
            f"the mesh reaches {distance:.3g} from the input's centre, beyond the {reach:.3g} its "
            "frame allows (the input's coordinates or bounds are too extreme); nothing was written"
        )
