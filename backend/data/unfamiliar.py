"""Shapes the procedural training generator cannot make: an out-of-distribution test set.

The training shapes (``shapes.py``) are unions and differences of at most eight convex-ish
primitives. Scores on held-out shapes of that generator say how well a model fits that
distribution, not how it carries over to other objects. This module builds five families
of smooth shapes that no such composition reproduces:

- ``revolved``: vases and bottles, a random smooth radius profile r(z) turned about z, with flat caps;
- ``tube``: a tube of varying radius swept along a random smooth closed or open space curve;
- ``shell``: a bowl, a thin ellipsoidal shell cut by a tilted plane and gently warped;
- ``blob``: an organic ellipsoid with Gaussian bumps and dents and low-frequency noise;
- ``extruded``: a random star- or flower-like outline r(theta) extruded along z, flat top and bottom;
- ``gyroid``: a ball of gyroid sheet, a triply periodic surface thickened into walls that wind
  through each other, with tunnels on both sides.

The training generator can also make thin-walled shapes cut open (``shapes.random_opening``), so
a ``shell`` is no longer a new kind of shape to a model trained with them (the warp and the
ellipsoidal walls still are); ``gyroid`` is, to any model trained here.

Each shape is an implicit function f(p) (negative inside) sampled on a grid fitted to the
shape and meshed by marching cubes. The grid is padded with "outside", so every mesh is
closed; only its largest connected piece is kept. Shape i depends only on (seed, i), and
families go round-robin. The meshes are for evaluation only (``scripts/make_unfamiliar_set.py``
prepares them as a test split): never train on them, or they stop measuring transfer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

Field = Callable[[np.ndarray], np.ndarray]  # (N, 3) points -> (N,) values, negative inside

FAMILIES = ("revolved", "tube", "shell", "blob", "extruded", "gyroid")
RESOLUTION = 128  # grid cells along the longest side of a shape's box
_CHUNK = 262_144  # points per field evaluation, to bound memory


@dataclass
class Implicit:
    """A shape as a field and a box [lo, hi] that contains all of it."""

    field: Field
    lo: np.ndarray
    hi: np.ndarray


# ------------------------------------------------------------------------------------------ families
def _fitted(shape: Implicit, res: int = 40) -> Implicit:
    """The shape with its generous box shrunk to the inside found on a coarse grid, plus two cells.

    The grid's resolution is spent on the shape, not on empty space; the margin covers what the
    coarse grid misses, as long as the field is close to a distance (its bumps are wide).
    """
    axes = [np.linspace(shape.lo[d], shape.hi[d], res) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    inside = grid[shape.field(grid) < 0]
    if len(inside) == 0:
        return shape
    cell = (shape.hi - shape.lo) / (res - 1)
    lo = np.maximum(inside.min(0) - 2 * cell, shape.lo)
    hi = np.minimum(inside.max(0) + 2 * cell, shape.hi)
    return Implicit(shape.field, lo, hi)


def _fourier(rng: np.random.Generator, terms: int, decay: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes (falling as k^-decay) and phases of a random smooth periodic function."""
    k = np.arange(1, terms + 1)
    return rng.normal(size=terms) * k**-decay, rng.uniform(0, 2 * np.pi, terms)


def revolved(rng: np.random.Generator) -> Implicit:
    """A vase or bottle: radius r(z) > 0 a smooth random profile, flat caps at both ends."""
    height = rng.uniform(1.2, 3.0)
    amp, phase = _fourier(rng, 4, 1.2)
    amp *= rng.uniform(0.15, 0.45) / np.abs(amp).sum()  # relative wobble of the profile
    taper = rng.uniform(-0.4, 0.4)  # wider at the bottom or at the top
    base = rng.uniform(0.35, 0.6)

    def radius(z: np.ndarray) -> np.ndarray:
        t = np.clip(z / height, 0, 1)
        wobble = (amp * np.sin(np.pi * np.outer(t, np.arange(1, 5)) + phase)).sum(1)
        return base * np.maximum(1 + taper * (t - 0.5) + wobble, 0.35)

    def field(p: np.ndarray) -> np.ndarray:
        side = np.hypot(p[:, 0], p[:, 1]) - radius(p[:, 2])
        caps = np.abs(p[:, 2] - 0.5 * height) - 0.5 * height
        return np.maximum(side, caps)

    r_max = float(radius(np.linspace(0, height, 512)).max())
    return Implicit(field, np.array([-r_max, -r_max, 0.0]), np.array([r_max, r_max, height]))


def tube(rng: np.random.Generator) -> Implicit:
    """A tube of varying radius along a random Fourier space curve (a loop, or open with round ends)."""
    from scipy.spatial import cKDTree

    closed = bool(rng.random() < 0.5)
    k = np.arange(1, 4)[:, None]
    a, b = rng.normal(size=(2, 3, 3)) * k**-1.3
    span = 1.0 if closed else rng.uniform(0.4, 0.7)  # an open curve is part of a loop

    def curve(t: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * k * t  # (terms, T)
        return (a[:, None] * np.cos(angle)[..., None] + b[:, None] * np.sin(angle)[..., None]).sum(0)

    coarse = curve(np.linspace(0, span, 2000))
    scale = 2.0 / np.ptp(coarse, axis=0).max()  # longest side of the curve's box: 2
    length = scale * np.linalg.norm(np.diff(coarse, axis=0), axis=1).sum()
    # samples 0.005 apart: the distance to the nearest one is the distance to the curve within 1e-4
    t = np.linspace(0, span, max(2000, int(length / 0.005)), endpoint=not closed)
    points = scale * curve(t)
    r0 = rng.uniform(0.08, 0.16)
    r_amp, r_phase = rng.uniform(0, 0.35), rng.uniform(0, 2 * np.pi)
    radii = r0 * (1 + r_amp * np.sin(4 * np.pi * t / span + r_phase))
    tree = cKDTree(points)

    def field(p: np.ndarray) -> np.ndarray:
        dist, idx = tree.query(p)
        return dist - radii[idx]

    pad = float(radii.max())
    return Implicit(field, points.min(0) - pad, points.max(0) + pad)


def _ellipsoid_distance(p: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """An approximate signed distance to an ellipsoid, close to exact near its surface."""
    k0 = np.linalg.norm(p / axes, axis=1)
    k1 = np.maximum(np.linalg.norm(p / axes**2, axis=1), 1e-12)
    return k0 * (k0 - 1) / k1


def shell(rng: np.random.Generator) -> Implicit:
    """A bowl: an ellipsoidal shell 3-5% of its size thick, cut by a tilted plane, gently warped."""
    axes = np.array([1.0, rng.uniform(0.7, 1.0), rng.uniform(0.5, 1.4)])
    thickness = rng.uniform(0.03, 0.05) * 2 * axes.max()
    cut = rng.uniform(-0.2, 0.6) * axes[2]  # the bowl is what lies below the plane
    tilt = rng.normal(size=2) * 0.15
    warp_amp = rng.uniform(0, 0.08)
    warp_freq = rng.uniform(1.0, 2.0, 3)
    warp_phase = rng.uniform(0, 2 * np.pi, 3)

    def field(p: np.ndarray) -> np.ndarray:
        q = p + warp_amp * np.sin(warp_freq * p[:, [1, 2, 0]] + warp_phase)
        wall = np.abs(_ellipsoid_distance(q, axes)) - 0.5 * thickness
        plane = q[:, 2] - cut - q[:, :2] @ tilt
        return np.maximum(wall, plane)

    reach = axes + thickness + warp_amp
    return Implicit(field, -reach, reach)


def blob(rng: np.random.Generator) -> Implicit:
    """An organic lump: an ellipsoid with Gaussian lobes and dents and smooth low-frequency noise."""
    axes = rng.uniform(0.6, 1.1, 3)
    n_bumps = int(rng.integers(5, 14))
    direction = rng.normal(size=(n_bumps, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    centers = direction * axes * rng.uniform(0.6, 1.1, (n_bumps, 1))
    heights = rng.uniform(-0.35, 0.8, n_bumps)
    widths = rng.uniform(0.15, 0.35, n_bumps)
    freqs = rng.normal(size=(8, 3)) * 2.5
    noise_amp = rng.uniform(0.1, 0.25)
    noise_phase = rng.uniform(0, 2 * np.pi, 8)

    def field(p: np.ndarray) -> np.ndarray:
        base = _ellipsoid_distance(p, axes)
        d2 = ((p[:, None] - centers[None]) ** 2).sum(-1)
        bumps = (heights * np.exp(-d2 / (2 * widths**2))).sum(1)
        noise = noise_amp * np.sin(p @ freqs.T + noise_phase).mean(1)
        return base - bumps - noise

    reach = axes.max() * 1.1 + heights.clip(0).sum() + noise_amp + 0.3
    return _fitted(Implicit(field, np.full(3, -reach), np.full(3, reach)))


def extruded(rng: np.random.Generator) -> Implicit:
    """A star, gear or flower outline r(theta) extruded along z, flat on top and bottom."""
    lobes = int(rng.integers(3, 9))
    depth = rng.uniform(0.15, 0.4)  # how far the lobes reach in and out
    sharp = rng.uniform(1.0, 3.0)  # > 1: narrower lobes, wider gaps
    amp, phase = _fourier(rng, 3, 1.0)
    amp *= rng.uniform(0, 0.12) / np.abs(amp).sum()  # irregularity of the outline
    height = rng.uniform(0.25, 1.2)

    def radius(theta: np.ndarray) -> np.ndarray:
        lobe = np.abs(np.cos(0.5 * lobes * theta)) ** sharp  # 1 at lobe tips, 0 between lobes
        irregular = (amp * np.cos(np.outer(theta, np.arange(1, 4)) + phase)).sum(1)
        return 1 - depth + 2 * depth * lobe + irregular

    def field(p: np.ndarray) -> np.ndarray:
        rho = np.hypot(p[:, 0], p[:, 1])
        outline = rho - radius(np.arctan2(p[:, 1], p[:, 0]))
        return np.maximum(outline, np.abs(p[:, 2]) - 0.5 * height)

    r_max = float(radius(np.linspace(-np.pi, np.pi, 2048)).max())
    return Implicit(field, np.array([-r_max, -r_max, -0.5 * height]), np.array([r_max, r_max, 0.5 * height]))


def gyroid(rng: np.random.Generator) -> Implicit:
    """An ellipsoidal ball of gyroid sheet: walls |g| <= t of g = sin x cos y + sin y cos z + sin z cos x,
    2 to 3 periods across the ball, turned at random; the walls are 3-5% of the ball's size thick."""
    axes = rng.uniform(0.75, 1.0, 3)
    k = np.pi * rng.uniform(2.0, 3.0) / axes.max()  # 2 pi / period; 2 to 3 periods over the diameter
    level = rng.uniform(0.3, 0.5)  # |grad g| is about 1.2 k on the sheet: walls 2 level / (1.2 k) thick
    q = np.linalg.qr(rng.normal(size=(3, 3)))[0]

    def field(p: np.ndarray) -> np.ndarray:
        x, y, z = (k * p @ q).T
        g = np.sin(x) * np.cos(y) + np.sin(y) * np.cos(z) + np.sin(z) * np.cos(x)
        wall = (np.abs(g) - level) / (1.2 * k)
        return np.maximum(wall, _ellipsoid_distance(p, axes))

    return Implicit(field, -axes - 0.05, axes + 0.05)


BUILDERS: dict[str, Callable[[np.random.Generator], Implicit]] = {
    "revolved": revolved,
    "tube": tube,
    "shell": shell,
    "blob": blob,
    "extruded": extruded,
    "gyroid": gyroid,
}


# ------------------------------------------------------------------------------------------ meshing
def mesh_from_field(shape: Implicit, resolution: int = RESOLUTION) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64): the closed surface f = 0, largest piece only.

    ``resolution`` cells span the longest side of the box; two more cells of "outside" on
    every side make the surface close even where the shape touches its box.
    """
    import mcubes
    import trimesh

    step = float((shape.hi - shape.lo).max()) / resolution
    counts = np.ceil((shape.hi - shape.lo) / step).astype(int) + 5
    origin = 0.5 * (shape.lo + shape.hi) - 0.5 * step * (counts - 1)
    axes = [origin[d] + step * np.arange(counts[d]) for d in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    values = np.concatenate([shape.field(grid[i : i + _CHUNK]) for i in range(0, len(grid), _CHUNK)])
    values = values.reshape(*counts)
    values[values == 0] = 1e-9  # a grid point exactly on the surface would give a degenerate triangle
    for d in range(3):  # the outermost layer is outside, whatever the field says
        index: list[slice | int] = [slice(None)] * 3
        for end in (0, -1):
            index[d] = end
            values[tuple(index)] = np.maximum(values[tuple(index)], step)
    vertices, faces = mcubes.marching_cubes(-values, 0.0)  # mcubes: positive inside, faces outward
    if len(faces) == 0:
        raise ValueError("the field has no surface inside its box")
    mesh = trimesh.Trimesh(origin + step * vertices, faces.astype(np.int64), process=False)
    pieces = mesh.split(only_watertight=False)
    if len(pieces) > 1:
        mesh = max(pieces, key=lambda m: len(m.faces))
    return np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64)


def family(i: int, families: Sequence[str] = FAMILIES) -> str:
    """The family of shape i (round-robin over ``families``)."""
    return families[i % len(families)]


def unfamiliar_shape(
    i: int, seed: int = 0, resolution: int = RESOLUTION, families: Sequence[str] = FAMILIES
) -> tuple[np.ndarray, np.ndarray]:
    """(vertices, faces) of shape i of the set ``seed``; the same arguments give the same mesh.

    A set of fewer ``families`` is the set as it was before the others were added: shape i of
    the first five families is the same mesh as in the set made before ``gyroid`` existed.
    """
    rng = np.random.default_rng([seed, i])
    return mesh_from_field(BUILDERS[family(i, families)](rng), resolution)


def shape_name(i: int, families: Sequence[str] = FAMILIES) -> str:
    """The file stem of shape i: its family and index, e.g. ``revolved-000``."""
    return f"{family(i, families)}-{i:03d}"


def check_families(families: Sequence[str]) -> None:
    unknown = [f for f in families if f not in BUILDERS]
    if not families or unknown or len(set(families)) != len(families):
        raise ValueError(f"families must be distinct names among {', '.join(FAMILIES)}, got {list(families)}")


def _write_one(args: tuple[Path, int, int, int, tuple[str, ...]]) -> Path:
    import trimesh

    folder, i, seed, resolution, families = args
    vertices, faces = unfamiliar_shape(i, seed, resolution, families)
    path = folder / f"{shape_name(i, families)}.ply"
    tmp = folder / f".{path.name}.tmp"  # not a mesh suffix: a leftover is never prepared
    trimesh.Trimesh(vertices.astype(np.float32), faces, process=False).export(tmp, file_type="ply")
    tmp.replace(path)  # a file is complete or absent
    return path


def write_unfamiliar_meshes(
    folder: Path,
    n: int,
    seed: int = 0,
    resolution: int = RESOLUTION,
    workers: int = 1,
    families: Sequence[str] = FAMILIES,
) -> list[Path]:
    """Write shapes 0 .. n-1 of the set ``seed`` into ``folder`` as binary PLY files; their paths."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    check_families(families)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(folder, i, seed, resolution, tuple(families)) for i in range(n)]
    if workers <= 1:
        return [_write_one(job) for job in jobs]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(workers) as pool:
        return pool.map(_write_one, jobs)
