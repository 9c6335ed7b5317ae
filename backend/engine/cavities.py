"""Open cavities that the network filled: a bowl's inside read as solid under a lid.

A scanner sees surfaces only, so no scan point can lie deep inside the object. When the network
closes a bowl, a cup or a pipe with a lid, the points on its inner wall end up buried in the
solid, far from the surface, and that is the evidence that the filled space is empty. The
cavity is then carved out of the field: the space that is

- free of points (every point farther than the carving radius),
- reachable from outside the object through such free space, three cells wide (a ball rolls
  in through the bowl's opening, not through a chance gap between a scan's points), and
- inside the first mesh, or on its surface where no point supports it (the lid itself),

taken one connected part at a time, and only the parts that touch buried points. Everywhere
else the network's field stands. A solid whose underside the scan missed has no buried points,
so the prior keeps its closed surface there; a sealed hollow cannot be reached from outside; a
noisy scan's stray points lie deep alone, while a swallowed wall lies deep with its neighbours.

The carving works on a coarse grid (``GRID`` cells per axis); the fit to the points
(``fit.py``) then moves the new inner surface onto the inner wall's points. A wall thicker than
twice the radius whose edge the scan missed (a free way into it) may be hollowed out too.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..point_tree import PointTree
from .field import Field
from .grid import Grid

GRID = 64  # carving cells per axis over the padded box (1/58 of the object)
# a point this close to a cell's centre makes it not free (or twice the scan's spacing); a point
# inside the solid and this far from its surface is buried (stray points of noise 0.01 are rare)
RADIUS = 0.015
BURIED_SHARE = 0.03  # carve only when this share of the points lies buried (outliers are ~1%)
MIN_POINTS = 1000  # sparser clouds cannot tell a lid from the gaps between their points
NEIGHBOURS = 16  # a buried point needs most of these nearest points buried too
SAMPLE = 50_000  # points tested for burial (every k-th point of a larger cloud: a share, not a fit)
# the carved boundary: where this share of the surroundings is carved; not a dyadic fraction, which
# the lattice points of an extraction hit exactly (the carving cells are 2^k lattice cells wide)
CARVED_AT = 0.2
CARVE_LOGIT = 30.0  # logits fall at this rate with the carved share: -18 at the carving's core


class CarvedField(Field):
    """The network's field with open cavities carved out. The carved share of a point's
    surroundings is trilinear over the carving grid, so the carved boundary is smooth
    and the field stays differentiable for refinement and normals."""

    def __init__(self, inner: Field, carved: np.ndarray, grid: Grid) -> None:
        super().__init__(inner.device, inner.chunk)
        self.inner = inner
        self.half_box = grid.box / 2
        # (1, 1, D, H, W) with D = x: grid_sample reads its last coordinate along W, so p is flipped
        self.carved = torch.from_numpy(carved.astype(np.float32))[None, None].to(inner.device)

    def _carved_share(self, p: torch.Tensor) -> torch.Tensor:
        q = (p.float() / self.half_box).flip(-1).reshape(1, 1, 1, -1, 3)
        return F.grid_sample(self.carved, q, align_corners=False, padding_mode="border").reshape(-1)

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        return self._carve(self.inner.logits(p), p)

    def _infer(self, p: torch.Tensor) -> torch.Tensor:
        return self._carve(self.inner._infer(p), p)

    def _carve(self, logits: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """Outside where more than ``CARVED_AT`` of the surroundings is carved, whatever the network
        says; the network's own logits where nothing around is carved, so that no threshold (the
        live slider goes up to 0.999) finds the solid capped away from the carving."""
        logits = logits.float()
        share = self._carved_share(p)
        return torch.where(share > 0, torch.minimum(logits, CARVE_LOGIT * (CARVED_AT - share)), logits)

    @property
    def nbytes(self) -> int:
        return self.inner.nbytes + self.carved.numel() * 4


def _sample(points: np.ndarray) -> np.ndarray:
    """Every k-th point, at most ``SAMPLE`` of them: enough for a share or a spacing."""
    return points[:: max(1, len(points) // SAMPLE)]


def carving_radius(tree: PointTree, points: np.ndarray) -> float:
    """``RADIUS``, or twice the scan's typical spacing where the points are sparser than that."""
    spacing, _ = tree.query(_sample(points), k=2)
    return max(RADIUS, 2.0 * float(np.median(spacing[:, 1])))


def buried_points(
    field: Field, vertices: np.ndarray, points: np.ndarray, threshold: float, radius: float
) -> np.ndarray:
    """The points (of at most ``SAMPLE``) that lie buried in the field's solid, all in the
    normalised frame: inside it, farther than ``radius`` from the mesh's surface (its vertices),
    and so are most of their ``NEIGHBOURS`` nearest points; none unless ``BURIED_SHARE`` of them
    are. A noisy scan's stray points lie deep on their own; a wall that the solid swallowed lies
    deep with its neighbours."""
    sample = _sample(points)
    enough = BURIED_SHARE * len(sample)  # fewer deep points than this cannot be carved: skip the work
    surface = PointTree(vertices)
    depth = surface.query(sample, within=radius)[0][:, 0]
    deep = np.flatnonzero(depth > radius)  # inf: no vertex that near
    if len(deep) < enough:
        return sample[:0]
    deep = deep[field.evaluate(sample[deep]) > threshold]  # and inside
    if len(deep) < enough:
        return sample[:0]
    depth = np.zeros(len(sample))
    depth[deep] = surface.query(sample[deep])[0][:, 0]
    _, near = PointTree(sample).query(sample, k=min(NEIGHBOURS, len(sample)))
    buried = sample[np.median(depth[near], axis=1) > radius]
    return buried if len(buried) >= enough else sample[:0]


def _cells(points: np.ndarray, grid: Grid) -> tuple[np.ndarray, ...]:
    """Carving-grid cell indices of points (normalised frame), as an index tuple."""
    cell = grid.box / GRID
    idx = np.clip(((points + grid.box / 2) / cell).astype(np.int64), 0, GRID - 1)
    return tuple(idx.T)


def open_cavities(
    vertices: np.ndarray, points: np.ndarray, tree: PointTree, buried: np.ndarray, grid: Grid, radius: float
) -> np.ndarray:
    """(GRID,) * 3 bool: the cells to carve (see the module's docstring), all in the normalised frame."""
    cell = grid.box / GRID
    axis = ((np.arange(GRID) + 0.5) * cell - grid.box / 2).astype(np.float32)
    centres = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
    to_points = tree.query(centres, within=radius)[0][:, 0]
    free = (to_points > radius).reshape((GRID,) * 3)  # no point within radius (inf when none found)

    surface = np.zeros((GRID,) * 3, bool)
    surface[_cells(vertices, grid)] = True  # a closed mesh at least twice as fine: a closed shell
    inside = ndimage.binary_fill_holes(surface)

    # reachable from the box's border through free space at least three cells wide: a chance gap
    # in the scan, a cell wide, must not lead into a thick wall's inside
    core = ndimage.binary_erosion(free, border_value=1)
    parts, n_parts = ndimage.label(core)
    rim = np.concatenate([parts[[0, -1]].ravel(), parts[:, [0, -1]].ravel(), parts[:, :, [0, -1]].ravel()])
    reachable = ndimage.binary_dilation(np.isin(parts, rim[rim > 0])) & free

    candidates = reachable & inside
    parts, n_parts = ndimage.label(candidates)
    if n_parts == 0:
        return candidates
    near_buried = np.zeros((GRID,) * 3, bool)
    near_buried[_cells(buried, grid)] = True
    near_buried = ndimage.binary_dilation(near_buried, iterations=int(np.ceil(radius / cell)) + 1)
    touched = np.unique(parts[near_buried & candidates])
    return np.isin(parts, touched[touched > 0])


def carve_open_cavities(
    field: Field, vertices: np.ndarray, points: np.ndarray, tree: PointTree, grid: Grid, threshold: float
) -> CarvedField | None:
    """The field with its filled open cavities carved out, or None where the scan shows none.

    ``vertices``: the first mesh of ``field`` (normalised frame), as extracted and fitted, not
    simplified or refined (whose vertices lie farther apart); ``points``: the scan it read;
    ``tree``: a k-d tree over them; ``threshold``: the logit of the mesh's tau.
    """
    if len(points) < MIN_POINTS or len(vertices) == 0:
        return None
    buried = buried_points(field, vertices, points, threshold, RADIUS)  # depth, whatever the spacing
    if len(buried) == 0:
        return None
    carved = open_cavities(vertices, points, tree, buried, grid, carving_radius(tree, points))
    return CarvedField(field, carved, grid) if carved.any() else None
