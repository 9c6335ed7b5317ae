"""Procedural shapes: random CSG compositions of primitives with exact occupancy.

A shape is up to ``MAX_SLOTS`` primitives, each with a type, parameters, a rotation
and a translation, and an operation: union (added material) or subtraction (holes,
cuts, concavities). The signed distance of the composition is
``max(min(unions), -min(subtractions))``; its sign, hence occupancy, is exact.

A shape can also be made thin-walled and cut open (``random_opening``): cups, bowls, open
boxes and pipes, as real objects often are. Its walls are the band ``|d| <= shell`` around
the solid's surface, and a plane then cuts away one side, so the inside can be seen.

Shapes are stored as padded tensors (``ShapeSet``) so that the SDF of a whole batch
of shapes is evaluated in a few vectorised torch calls.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from .primitives import PRIMITIVES

MAX_SLOTS = 8
N_PARAMS = 5
UNION, SUBTRACT = 1, 2
BOX, ELLIPSOID, CYLINDER, CONE, TORUS, CAPSULE, SUPERQUADRIC = range(1, 8)


@dataclass
class ShapeSet:
    """A batch of S shapes as padded tensors (slot op 0 = unused).

    ``to_shape`` maps the normalised unit-cube frame into each shape's own frame:
    p_shape = scale * p_unit + center.
    """

    kind: torch.Tensor  # (S, P) int64
    op: torch.Tensor  # (S, P) int64
    params: torch.Tensor  # (S, P, 5) float32
    rot: torch.Tensor  # (S, P, 3, 3) float32, local -> shape frame
    trans: torch.Tensor  # (S, P, 3) float32
    center: torch.Tensor  # (S, 3) float32
    scale: torch.Tensor  # (S,) float32
    shell: torch.Tensor  # (S,) float32 wall half-thickness in the shape's frame; 0 = solid
    cut: torch.Tensor  # (S, 4) float32 plane (n, o): the shape keeps n . p <= o; NO_CUT keeps all

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def select(self, idx: torch.Tensor | np.ndarray | list[int]) -> ShapeSet:
        idx = torch.as_tensor(idx, dtype=torch.long)
        return ShapeSet(*(getattr(self, f)[idx] for f in _FIELDS))

    @staticmethod
    def from_numpy(d: Mapping[str, np.ndarray]) -> ShapeSet:
        """From a split's arrays; a split without walls and cuts (all solids) reads as solid."""
        arrays = {f: np.asarray(d[f]) for f in _FIELDS if f in d}
        n = len(arrays["kind"])
        arrays.setdefault("shell", np.zeros(n, np.float32))
        arrays.setdefault("cut", np.tile(NO_CUT, (n, 1)))
        arrays["scale"] = arrays["scale"].astype(np.float32)
        return ShapeSet(*(torch.from_numpy(arrays[f]) for f in _FIELDS))

    @staticmethod
    def concat(sets: list[ShapeSet]) -> ShapeSet:
        return ShapeSet(*(torch.cat([getattr(s, f) for s in sets]) for f in _FIELDS))

    def sdf_shape_frame(self, p: torch.Tensor) -> torch.Tensor:
        """Signed distance at points p (S, M, 3) given in each shape's own frame -> (S, M)."""
        s, m, _ = p.shape
        active = self.op > 0
        s_idx = active.nonzero()[:, 0]
        # local coordinates R^T (p - t), as row vectors: (p - t) @ R
        local = torch.matmul(p[s_idx] - self.trans[active][:, None], self.rot[active])
        kind, params = self.kind[active], self.params[active]
        d_active = torch.empty(len(s_idx), m, dtype=p.dtype)
        for type_id, fn in PRIMITIVES.items():
            mask = kind == type_id
            if mask.any():
                d_active[mask] = fn(local[mask], params[mask]).to(p.dtype)
        d = torch.full((s, MAX_SLOTS, m), float("inf"), dtype=p.dtype)
        d[active] = d_active
        inf = torch.tensor(float("inf"), dtype=p.dtype)
        d_union = torch.where((self.op == UNION)[..., None], d, inf).min(dim=1).values
        d_sub = torch.where((self.op == SUBTRACT)[..., None], d, inf).min(dim=1).values
        d = torch.maximum(d_union, -d_sub)
        hollow = self.shell > 0
        if not hollow.any():  # solids only: the composition as it is
            return d
        d = torch.where(hollow[:, None], d.abs() - self.shell[:, None].to(p.dtype), d)
        plane = torch.einsum("smj,sj->sm", p, self.cut[:, :3].to(p.dtype)) - self.cut[:, 3:].to(p.dtype)
        return torch.maximum(d, plane)

    def sdf(self, p: torch.Tensor, frame: Frame | None = None) -> torch.Tensor:
        """Signed distance at points p (S, M, 3) in the unit-cube frame, or in ``frame`` if given."""
        if frame is None:
            frame = Frame.unit(self)
        p_shape = (
            frame.scale[:, None, None] * torch.einsum("sij,smj->smi", frame.rot, p) + frame.offset[:, None]
        )
        return self.sdf_shape_frame(p_shape) / frame.scale[:, None]

    def occupancy(self, p: torch.Tensor, frame: Frame | None = None) -> torch.Tensor:
        """1.0 inside, 0.0 outside, at points p (S, M, 3)."""
        return (self.sdf(p, frame) <= 0).float()


@dataclass
class Frame:
    """A similarity transform from a query frame into each shape's frame.

    p_shape = scale * rot @ q + offset
    """

    rot: torch.Tensor  # (S, 3, 3)
    scale: torch.Tensor  # (S,)
    offset: torch.Tensor  # (S, 3)

    @staticmethod
    def unit(shapes: ShapeSet) -> Frame:
        eye = torch.eye(3).expand(len(shapes), 3, 3)
        return Frame(eye, shapes.scale, shapes.center)

    @staticmethod
    def view(
        shapes: ShapeSet, view_rot: torch.Tensor, view_center: torch.Tensor, view_scale: torch.Tensor
    ) -> Frame:
        """The frame of a camera view: q = (view_rot @ p_unit - view_center) / view_scale."""
        rt = view_rot.transpose(1, 2)
        scale = shapes.scale * view_scale
        offset = shapes.scale[:, None] * torch.einsum("sij,sj->si", rt, view_center) + shapes.center
        return Frame(rt, scale, offset)


_FIELDS = ("kind", "op", "params", "rot", "trans", "center", "scale", "shell", "cut")
NO_CUT = np.array([0.0, 0.0, 0.0, 1e6], np.float32)  # a plane that every point is far behind


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random rotation matrix (from a random unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _random_primitive(rng: np.random.Generator) -> tuple[int, list[float]]:
    """A primitive type and parameters; plates and rods are thin boxes and cylinders."""
    u = rng.uniform
    choice = rng.choice(
        ["box", "plate", "rod", "ellipsoid", "cylinder", "cone", "torus", "capsule", "superquadric"],
        p=[0.14, 0.12, 0.1, 0.12, 0.12, 0.08, 0.08, 0.1, 0.14],
    )
    if choice == "box":
        return BOX, [u(0.05, 0.35), u(0.05, 0.35), u(0.05, 0.35)]
    if choice == "plate":
        dims = [u(0.15, 0.4), u(0.15, 0.4), u(0.012, 0.03)]
        rng.shuffle(dims)
        return BOX, dims
    if choice == "rod":
        radius, half_length = u(0.015, 0.04), u(0.2, 0.45)
        return (CYLINDER, [radius, half_length]) if u() < 0.5 else (CAPSULE, [half_length, radius])
    if choice == "ellipsoid":
        return ELLIPSOID, [u(0.08, 0.35), u(0.08, 0.35), u(0.08, 0.35)]
    if choice == "cylinder":
        return CYLINDER, [u(0.05, 0.25), u(0.05, 0.35)]
    if choice == "cone":
        return CONE, [u(0.08, 0.3), u(0.0, 0.15), u(0.1, 0.35)]
    if choice == "torus":
        major = u(0.12, 0.3)
        return TORUS, [major, u(0.02, min(0.1, 0.6 * major))]
    if choice == "capsule":
        return CAPSULE, [u(0.05, 0.3), u(0.03, 0.15)]
    return SUPERQUADRIC, [u(0.08, 0.3), u(0.08, 0.3), u(0.08, 0.3), u(0.2, 1.8), u(0.2, 1.8)]


def _random_cutter(rng: np.random.Generator) -> tuple[int, list[float]]:
    """A primitive to subtract: through-holes, slots and scoops."""
    u = rng.uniform
    choice = rng.choice(["hole", "slot", "scoop"], p=[0.45, 0.3, 0.25])
    if choice == "hole":
        return CYLINDER, [u(0.03, 0.12), 0.7]
    if choice == "slot":
        return BOX, [u(0.03, 0.2), u(0.03, 0.2), 0.7]
    return ELLIPSOID, [u(0.08, 0.25), u(0.08, 0.25), u(0.08, 0.25)]


def random_shape(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One random composition, in its own (unnormalised) frame, as padded numpy arrays."""
    n_union = int(rng.integers(1, 6))
    n_sub = int(rng.choice([0, 0, 1, 1, 2]))
    kind = np.zeros(MAX_SLOTS, np.int64)
    op = np.zeros(MAX_SLOTS, np.int64)
    params = np.ones((MAX_SLOTS, N_PARAMS), np.float32)  # ones keep unused slots finite
    rot = np.tile(np.eye(3, dtype=np.float32), (MAX_SLOTS, 1, 1))
    trans = np.zeros((MAX_SLOTS, 3), np.float32)
    spread = rng.uniform(0.1, 0.35)  # small spread: one compact part; large: several components
    for i in range(n_union + n_sub):
        if i < n_union:
            kind[i], p = _random_primitive(rng)
            op[i] = UNION
            trans[i] = 0 if i == 0 else rng.normal(0, spread, 3)
        else:
            kind[i], p = _random_cutter(rng)
            op[i] = SUBTRACT
            trans[i] = trans[rng.integers(n_union)] + rng.normal(0, 0.1, 3)
        params[i, : len(p)] = p
        rot[i] = random_rotation(rng)
    return {"kind": kind, "op": op, "params": params, "rot": rot, "trans": trans}


def random_opening(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> dict[str, np.ndarray]:
    """Walls and a cut for a solid whose inside lies in the box [lo, hi] (its own frame).

    The walls are 2.5-6% of the box's longest side thick. The cutting plane has a random
    direction and passes near the box's centre, so that a bowl, a cup or half a pipe is left
    and the inside shows; an uncut hollow looks like a solid from everywhere a scanner can be.
    """
    extent = float((hi - lo).max())
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    centre = 0.5 * (lo + hi)
    reach = 0.5 * float(np.abs(normal) @ (hi - lo))  # half the box's width along the normal
    offset = float(normal @ centre) + rng.uniform(-0.3, 0.5) * reach
    return {
        "shell": np.asarray(rng.uniform(0.0125, 0.03) * extent, np.float32),
        "cut": np.append(normal, offset).astype(np.float32),
    }
