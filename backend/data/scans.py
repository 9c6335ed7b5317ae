"""Point clouds as scanners deliver them, drawn from a shape's stored surface samples.

Real scans have any number of points, noise of any size, density that varies over the surface
(closer or more often seen parts get more points), a few stray points, and holes wherever no
sensor saw the surface. A model trained on one fixed kind of cloud meets none of that, so each
training shape is observed with its own draw of all of them (``DataConfig``: n_points to
n_points_max, noise to noise_max, outliers, density_gain, partial_scans with 1 to scan_views
viewpoints). Everything here is vectorised over the batch; nothing loops over points.

The stored samples are finite (e.g. 30,000 per shape), so a drawn point is also moved along its
tangent plane by a small random offset: clouds denser than the store still hold distinct points
on the surface (the error is the curvature times the offset squared, under 1e-4 here).
"""

from __future__ import annotations

import math

import torch

from ..config import DataConfig

TANGENT_JITTER = 0.004  # std of the move along the tangent plane, about half the stored spacing
BOX_HALF = 0.55  # outliers are uniform in the padded box
SCAN_FOV_HALF = 0.6  # tan of half the field of view: an object of radius 0.87 fits from distance 2
MIN_CANDIDATES = 2048


def candidates(stored: int, n: int) -> int:
    """How many stored samples a cloud of n points is drawn from: twice n, within [2048, stored].

    The stored samples are i.i.d. uniform on the surface, so any contiguous run of them is a
    uniform random subset; working on a run, not on all of them, keeps sparse clouds cheap.
    """
    return min(stored, max(2 * n, MIN_CANDIDATES))


def draw_count(cfg: DataConfig, gen: torch.Generator) -> int:
    """Points observed in one batch: n_points, or log-uniform in [n_points, n_points_max]."""
    lo, hi = cfg.n_points, max(cfg.n_points, cfg.n_points_max)
    if hi == lo:
        return lo
    u = float(torch.rand((), generator=gen))
    return int(round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))))


def random_eyes(b: int, v: int, gen: torch.Generator) -> torch.Tensor:
    """(b, v, 3) viewpoints at distance 2 to 3.5 from the centre, directions uniform on the sphere."""
    d = torch.randn(b, v, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True).clamp(min=1e-9)
    return d * (2 + 1.5 * torch.rand(b, v, 1, generator=gen))


def visible(
    surface: torch.Tensor, normals: torch.Tensor, eyes: torch.Tensor, active: torch.Tensor
) -> torch.Tensor:
    """(B, K) bool: which surface samples (B, K, 3) some active viewpoint (B, V, 3) sees.

    A sample is seen from a viewpoint when its outward normal faces it and nothing lies in front
    of it in a depth buffer made of the samples themselves (a z-buffer of splats). The buffer is
    as fine as the samples allow, about three per pixel, and a sample counts as in front when it
    is nearer than its pixel's nearest sample by more than 1.5 pixels' width at its depth.
    ``active`` (B, V) bool masks the viewpoints each shape has.
    """
    b, v = eyes.shape[:2]
    res = int(min(128, max(16, math.sqrt(surface.shape[1] / 3))))
    forward = -eyes / eyes.norm(dim=-1, keepdim=True)
    helper = torch.where(
        forward[..., 2:].abs() > 0.9, torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    )
    right = torch.linalg.cross(forward, helper)
    right = right / right.norm(dim=-1, keepdim=True)
    up = torch.linalg.cross(right, forward)
    rel = surface[:, None] - eyes[:, :, None]  # (B, V, K, 3)
    depth = (rel * forward[:, :, None]).sum(-1).clamp(min=1e-3)
    pixel = []
    for axis in (right, up):
        coord = (rel * axis[:, :, None]).sum(-1) / depth / SCAN_FOV_HALF
        pixel.append(((coord + 1) * 0.5 * res).long().clamp(0, res - 1))
    view_id = torch.arange(b * v).reshape(b, v, 1)
    flat = ((view_id * res + pixel[1]) * res + pixel[0]).reshape(-1)
    nearest = torch.full((b * v * res**2,), float("inf")).scatter_reduce(0, flat, depth.reshape(-1), "amin")
    tolerance = depth * (3 * SCAN_FOV_HALF / res)
    seen = depth <= nearest[flat].reshape(depth.shape) + tolerance
    facing = (normals[:, None] * rel).sum(-1) < 0
    return (seen & facing & active[:, :, None]).any(1)


def simulate_scans(
    surface: torch.Tensor,
    normals: torch.Tensor,
    n: int,
    cfg: DataConfig,
    gen: torch.Generator,
    fixed_views: int = 0,
) -> torch.Tensor:
    """(B, n, 3) observed points from surface samples (B, K, 3) and their unit normals (see
    ``candidates`` for a good K).

    ``fixed_views`` > 0: every shape is a partial scan from exactly that many viewpoints (for
    evaluation); otherwise a share ``cfg.partial_scans`` of shapes are, from 1 to scan_views.
    """
    b, k, _ = surface.shape
    logw = torch.zeros(b, k)
    if cfg.density_gain > 0:
        direction = torch.randn(b, 3, generator=gen)
        direction = direction / direction.norm(dim=-1, keepdim=True).clamp(min=1e-9)
        gain = torch.rand(b, generator=gen) * cfg.density_gain
        logw = logw + gain[:, None] * torch.einsum("bkj,bj->bk", surface, direction)
    if fixed_views > 0 or cfg.partial_scans > 0:
        v = fixed_views or cfg.scan_views
        eyes = random_eyes(b, v, gen)
        if fixed_views > 0:
            active = torch.ones(b, v, dtype=torch.bool)
        else:
            count = torch.randint(1, v + 1, (b, 1), generator=gen)
            partial = torch.rand(b, 1, generator=gen) < cfg.partial_scans
            active = torch.where(partial, torch.arange(v)[None] < count, torch.ones(b, v, dtype=torch.bool))
        rows = active.all(1).logical_not().nonzero()[:, 0] if fixed_views == 0 else torch.arange(b)
        if len(rows):  # only partial scans need a visibility test
            seen = visible(surface[rows], normals[rows], eyes[rows], active[rows])
            seen = seen | ~seen.any(1, keepdim=True)  # a shape no viewpoint sees keeps all its samples
            logw[rows] = logw[rows].masked_fill(~seen, float("-inf"))
    pick = torch.multinomial(torch.softmax(logw, 1), n, replacement=True, generator=gen)
    rows = torch.arange(b)[:, None]
    points, normal = surface[rows, pick], normals[rows, pick]
    jitter = TANGENT_JITTER * torch.randn(b, n, 3, generator=gen)
    points = points + jitter - (jitter * normal).sum(-1, keepdim=True) * normal
    sigma = cfg.noise + torch.rand(b, 1, 1, generator=gen) * max(0.0, cfg.noise_max - cfg.noise)
    points = points + sigma * torch.randn(b, n, 3, generator=gen)
    if cfg.outliers > 0:
        share = torch.rand(b, 1, generator=gen) * cfg.outliers
        stray = torch.rand(b, n, generator=gen) < share
        box = (torch.rand(b, n, 3, generator=gen) * 2 - 1) * BOX_HALF
        points = torch.where(stray[..., None], box, points)
    return points
