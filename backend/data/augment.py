"""Training-time augmentation by the symmetries of the cube, or of the image square.

The 48 symmetries of the cube (axis permutations times sign flips) map the padded box
onto itself and a shape normalised into the unit cube onto another normalised shape, and
the procedural shapes are placed with random rotations, so each one is as likely a
training shape as the original. Applying a random one per shape and step multiplies the
distinct shapes a model sees without generating any.

Image models predict in the camera's frame, which only the 8 symmetries of the square image
plane preserve: quarter turns and mirrors about the view axis z. The camera's field of view
is the same in x and y and the pixel centres are symmetric about the image centre, so the
mapped image is exactly the rendering of the mapped shape (under a mapped light).

A symmetry is (perm, sign): point p maps to q with q[i] = sign[i] * p[perm[i]].
"""

from __future__ import annotations

import torch


def random_symmetries(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 3) long axis permutations and (n, 3) float signs in {-1, 1}, uniform over the 48."""
    perm = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    sign = torch.randint(0, 2, (n, 3), generator=gen).float() * 2 - 1
    return perm, sign


def random_square_symmetries(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Like ``random_symmetries``, uniform over the 8 that keep the z axis (the view axis) fixed."""
    perm = torch.argsort(torch.rand(n, 2, generator=gen), dim=1)
    sign = torch.randint(0, 2, (n, 2), generator=gen).float() * 2 - 1
    return torch.cat([perm, torch.full((n, 1), 2)], 1), torch.cat([sign, torch.ones(n, 1)], 1)


def symmetry_matrices(perm: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """The (n, 3, 3) matrices of these symmetries, (M p)_i = sign_i p_perm_i: for what maps with
    the points but is not a point (cameras)."""
    matrices = torch.zeros(len(perm), 3, 3)
    matrices.scatter_(2, perm[:, :, None], sign[:, :, None])
    return matrices


def apply_to_points(points: torch.Tensor, perm: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Map (B, M, 3) points by each row's symmetry."""
    index = perm[:, None, :].expand(-1, points.shape[1], -1)
    return torch.gather(points, 2, index) * sign[:, None, :]


def apply_to_grids(grids: torch.Tensor, perm: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Map (B, ..., R, R, R) grids by each row's symmetry; the last ``perm.shape[1]`` dims are
    the spatial axes, any before them (channels) are kept.

    Grid index i runs along axis i over cells centred symmetrically about 0 (as the voxel
    grids are made), so a permutation of axes is a permutation of dims and a sign flip is
    a flip of that dim.
    """
    axes = perm.shape[1]
    lead = grids.ndim - 1 - axes
    out = []
    for grid, p, s in zip(grids, perm.tolist(), sign.tolist(), strict=True):
        g = grid.permute(*range(lead), *(lead + i for i in p))
        flips = [lead + i for i in range(axes) if s[i] < 0]
        out.append(g.flip(flips) if flips else g)
    return torch.stack(out)


def apply_to_images(images: torch.Tensor, perm: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Map (B, C, H, W) camera images by each row's symmetry of the square (z fixed).

    Columns run along +x and rows along -y (``data/render.py``), so flipping the rows and
    swapping the two image dims gives a (B, C, X, Y) grid that maps as ``apply_to_grids``.
    """
    if not bool((perm[:, 2] == 2).all() and (sign[:, 2] == 1).all()):
        raise ValueError("an image maps only by the symmetries that keep the view axis z")
    xy = images.flip(-2).transpose(-2, -1)
    return apply_to_grids(xy, perm[:, :2], sign[:, :2]).transpose(-2, -1).flip(-2)
