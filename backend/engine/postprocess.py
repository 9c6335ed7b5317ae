"""Optional steps after marching cubes: quadric simplification, gradient refinement, normals.

All work in the normalised frame, where the original's step sizes apply.
"""

from __future__ import annotations

from collections.abc import Callable

import fast_simplification
import numpy as np
import torch

from .field import Field
from .types import CancelFn, Cancelled, FractionFn

SIMPLIFY_AGGRESSIVENESS = 5.0  # the original's setting for the same quadric decimation
REFINE_LR = 1e-4
RMSPROP_ALPHA, RMSPROP_EPS = 0.99, 1e-8  # torch.optim.RMSprop's defaults, as the original used
REFINE_NORMAL_WEIGHT = 0.01
# work between two polls of cancel() stays around 50 ms on 2 CPU cores
REFINE_FACE_CHUNK = 2048  # faces per forward/double backward (also bounds its memory)
NORMAL_CHUNK = 8192


def simplify_mesh(
    vertices: np.ndarray, faces: np.ndarray, target_faces: int
) -> tuple[np.ndarray, np.ndarray]:
    """Quadric-error decimation to about ``target_faces`` faces (no-op when already below)."""
    if len(faces) <= target_faces:
        return vertices, faces
    v, f = fast_simplification.simplify(
        vertices.astype(np.float64),
        faces.astype(np.int32),
        target_count=int(target_faces),
        agg=SIMPLIFY_AGGRESSIVENESS,
    )
    return v.astype(np.float32), f.astype(np.int64)


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + 1e-10)


def refine_mesh(
    field: Field,
    vertices: np.ndarray,
    faces: np.ndarray,
    tau: float,
    steps: int,
    seed: int = 0,
    progress: FractionFn | None = None,
    cancel: CancelFn | None = None,
) -> np.ndarray:
    """Move vertices so that faces lie on the level set and agree with the field's gradient.

    As in the original: per step, one random point per face (Dirichlet(0.5) barycentric
    weights); loss = mean (p - tau)^2 + 0.01 * mean |n_face - n_field|^2, where p is the
    occupancy probability and n_field the normalised negative gradient of p; RMSprop with
    learning rate 1e-4.
    """
    if steps <= 0 or len(faces) == 0:
        return vertices
    device = field.device
    v = torch.as_tensor(vertices, dtype=torch.float32, device=device).clone().requires_grad_(True)
    f = torch.as_tensor(faces, dtype=torch.long, device=device)
    # RMSprop written out: constructing torch.optim's costs ~1.6 s of imports on first use
    square_avg = torch.zeros_like(v)
    weights = torch.distributions.Dirichlet(torch.full((3,), 0.5))
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the Dirichlet samples come from torch's global generator
    try:
        n_faces = len(f)
        for step in range(steps):
            grad = torch.zeros_like(v)
            for start in range(0, n_faces, REFINE_FACE_CHUNK):
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                fc = f[start : start + REFINE_FACE_CHUNK]
                corners = v[fc]  # (F, 3, 3)
                w = weights.sample((len(fc),)).to(device)
                point = (corners * w[:, :, None]).sum(dim=1)
                normal = _unit(
                    torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 1], dim=1)
                )
                prob = torch.sigmoid(field.logits(point))
                (g,) = torch.autograd.grad(prob.sum(), point, create_graph=True)
                target = _unit(-g)
                loss = ((prob - tau) ** 2).sum() + REFINE_NORMAL_WEIGHT * ((normal - target) ** 2).sum()
                (gv,) = torch.autograd.grad(loss / n_faces, v)
                grad += gv
            with torch.no_grad():
                square_avg.mul_(RMSPROP_ALPHA).addcmul_(grad, grad, value=1 - RMSPROP_ALPHA)
                v.addcdiv_(grad, square_avg.sqrt().add_(RMSPROP_EPS), value=-REFINE_LR)
            if progress is not None:
                progress((step + 1) / steps)
    finally:
        torch.random.set_rng_state(gen_state)
    return v.detach().cpu().numpy()


def vertex_normals(
    field: Field,
    vertices: np.ndarray,
    progress: FractionFn | None = None,
    cancel: CancelFn | None = None,
    fallback: Callable[[], np.ndarray] | None = None,
) -> np.ndarray:
    """Unit outward normals from the field: the normalised negative gradient of the logits.

    Where the gradient vanishes, the normals ``fallback()`` returns (e.g. the mesh's own) are used;
    it is called only then.
    """
    out = np.zeros((len(vertices), 3), np.float32)
    for start in range(0, len(vertices), NORMAL_CHUNK):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        p = torch.as_tensor(vertices[start : start + NORMAL_CHUNK], dtype=torch.float32, device=field.device)
        p.requires_grad_(True)
        (g,) = torch.autograd.grad(field.logits(p).sum(), p)
        out[start : start + len(p)] = (-g).detach().cpu().numpy()
        if progress is not None:
            progress(min(1.0, (start + len(p)) / len(vertices)))
    norm = np.linalg.norm(out, axis=1, keepdims=True)
    flat = norm[:, 0] < 1e-12
    out = out / np.maximum(norm, 1e-12)
    if fallback is not None and flat.any():
        out[flat] = fallback()[flat]
    return out.astype(np.float32)
