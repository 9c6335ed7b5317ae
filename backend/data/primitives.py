"""Signed distance functions of the primitives, in each primitive's local frame.

Every function takes local points q (n, M, 3) and parameters (n, 5) and returns
(n, M). Signs are exact (negative inside); magnitudes are exact distances for most
primitives and conservative approximations for ellipsoids and superquadrics,
which is enough for occupancy, surface projection and sphere tracing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

SdfFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _norm(x: torch.Tensor) -> torch.Tensor:
    """Euclidean norm over the last axis (vector_norm's gradient is 0, not NaN, at the origin)."""
    return torch.linalg.vector_norm(x, dim=-1)


def _p(params: torch.Tensor, i: int) -> torch.Tensor:
    return params[:, i].unsqueeze(1)  # (n, 1), broadcasts against (n, M)


def box(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Box with half extents params[0:3]."""
    d = q.abs() - params[:, None, 0:3]
    outside = _norm(d.clamp(min=0))
    inside = d.max(dim=-1).values.clamp(max=0)
    return outside + inside


def ellipsoid(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Ellipsoid with radii params[0:3] (the usual first-order distance bound)."""
    r = params[:, None, 0:3]
    k0 = _norm(q / r)
    k1 = _norm(q / (r * r)).clamp(min=1e-9)
    return k0 * (k0 - 1.0) / k1


def cylinder(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Cylinder along z with radius params[0] and half height params[1]."""
    dx = _norm(q[..., :2]) - _p(params, 0)
    dz = q[..., 2].abs() - _p(params, 1)
    d = torch.stack([dx, dz], dim=-1)
    return torch.maximum(dx, dz).clamp(max=0) + _norm(d.clamp(min=0))


def cone(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Capped cone along z: radius params[0] at z = -h, params[1] at z = +h, half height h = params[2]."""
    r1, r2, h = _p(params, 0), _p(params, 1), _p(params, 2)
    qx = _norm(q[..., :2])
    qy = q[..., 2]
    # distance to the caps
    cap_r = torch.where(qy < 0, r1, r2)
    ca_x = qx - torch.minimum(qx, cap_r)
    ca_y = qy.abs() - h
    # distance to the slanted side, as a segment from (r2, h) to (r1, -h)
    k2x, k2y = r2 - r1, 2 * h
    t = (((r2 - qx) * k2x + (h - qy) * k2y) / (k2x * k2x + k2y * k2y)).clamp(0, 1)
    cb_x = qx - r2 + k2x * t
    cb_y = qy - h + k2y * t
    sign = torch.where((cb_x < 0) & (ca_y < 0), -1.0, 1.0)
    return sign * torch.minimum(ca_x**2 + ca_y**2, cb_x**2 + cb_y**2).clamp(min=1e-18).sqrt()


def torus(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Torus in the xy plane: major radius params[0], minor radius params[1]."""
    ring = _norm(q[..., :2]) - _p(params, 0)
    return _norm(torch.stack([ring, q[..., 2]], dim=-1)) - _p(params, 1)


def capsule(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Capsule along z: half length params[0] of the axis segment, radius params[1]."""
    h = _p(params, 0)
    z = q[..., 2] - q[..., 2].clamp(min=-h, max=h)
    return _norm(torch.stack([q[..., 0], q[..., 1], z], dim=-1)) - _p(params, 1)


def superquadric(q: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Superquadric with radii params[0:3] and shape exponents e1 = params[3], e2 = params[4].

    Uses the radial inside-outside function g (homogeneous of degree 1, g = 1 on the
    surface), scaled by the smallest radius: exact sign, approximate distance.
    """
    a = params[:, None, 0:3]
    e1, e2 = _p(params, 3), _p(params, 4)
    x = (q / a).abs().clamp(min=1e-6, max=1e3)
    xy = (x[..., 0] ** (2 / e2) + x[..., 1] ** (2 / e2)) ** (e2 / e1)
    f = xy + x[..., 2] ** (2 / e1)
    g = f ** (e1 / 2)
    return (g - 1.0) * a.min(dim=-1).values


# type ids as stored in ShapeSet.kind (0 = empty slot)
PRIMITIVES: dict[int, SdfFn] = {
    1: box,
    2: ellipsoid,
    3: cylinder,
    4: cone,
    5: torus,
    6: capsule,
    7: superquadric,
}
