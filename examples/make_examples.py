"""Write the small example inputs shipped in this folder (deterministic; run from anywhere).

    python examples/make_examples.py [OUT_DIR]   (default: this folder)

- chair_points.ply: 3000 points on the surface of a procedural chair, in metres, Z up,
  standing on the floor 1.2 m along x (a point cloud in a "user" frame, not the unit cube).
- chair_scan.ply: a denser scan of the same chair as a scanner sees it: 20,000 points seen from
  three viewpoints above it (so the underside of the seat and the inner faces of the legs are
  missing), with 2 mm of noise, in binary PLY.
- chair_voxels.npy: a 32^3 bool occupancy grid of the same chair, indexed [x, y, z], over
  the default bounds [-0.5, 0.5]^3 (the chair centred and scaled to fit).
- chair.binvox: a 32^3 binvox grid of the chair, whose header places it in metres where
  the point cloud is.

    python -m backend reconstruct examples/chair_points.ply -o chair.ply
    python -m backend reconstruct examples/chair_voxels.npy -o chair_from_voxels.ply
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_POINTS = 3000
N_SCAN = 20_000
SCAN_NOISE = 0.002  # metres
SCAN_EYES = [  # the scanner's viewpoints around the chair's centre, 2.5 m away, 35 degrees up
    2.5
    * np.array(
        [np.cos(np.radians(35)) * np.cos(a), np.cos(np.radians(35)) * np.sin(a), np.sin(np.radians(35))]
    )
    for a in np.radians([-60, 60, 180])
]
VOXEL_RES = 32
SEED = 20250101

# axis-aligned boxes (min corner, max corner) in metres; x right, y back, z up
SEAT_TOP = 0.46
CHAIR = [
    ((0.00, 0.00, 0.42), (0.46, 0.44, SEAT_TOP)),  # seat
    ((0.02, 0.02, 0.00), (0.06, 0.06, 0.42)),  # legs
    ((0.40, 0.02, 0.00), (0.44, 0.06, 0.42)),
    ((0.02, 0.38, 0.00), (0.06, 0.42, 0.42)),
    ((0.40, 0.38, 0.00), (0.44, 0.42, 0.42)),
    ((0.00, 0.40, SEAT_TOP), (0.46, 0.44, 0.92)),  # back rest
    ((0.00, 0.00, 0.62), (0.04, 0.40, 0.66)),  # arm rests
    ((0.42, 0.00, 0.62), (0.46, 0.40, 0.66)),
    ((0.00, 0.02, SEAT_TOP), (0.04, 0.06, 0.62)),
    ((0.42, 0.02, SEAT_TOP), (0.46, 0.06, 0.62)),
]
OFFSET = np.array([1.2, -0.3, 0.0])  # where the chair stands in the user's scene


def inside(
    points: np.ndarray, boxes: list[tuple[tuple[float, ...], tuple[float, ...]]], eps: float = 0.0
) -> np.ndarray:
    """Whether each point lies inside (strictly, by ``eps``) any of the boxes."""
    result = np.zeros(len(points), bool)
    for lo, hi in boxes:
        result |= ((points > np.array(lo) + eps) & (points < np.array(hi) - eps)).all(axis=1)
    return result


def surface_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """Area-uniform samples of the surface of the union of the chair's boxes."""
    faces = []  # (origin, edge u, edge v)
    for lo, hi in CHAIR:
        lo_a, hi_a = np.array(lo), np.array(hi)
        size = hi_a - lo_a
        for axis in range(3):
            u, v = [a for a in range(3) if a != axis]
            for at in (lo_a[axis], hi_a[axis]):
                origin = lo_a.copy()
                origin[axis] = at
                eu, ev = np.zeros(3), np.zeros(3)
                eu[u], ev[v] = size[u], size[v]
                faces.append((origin, eu, ev))
    areas = np.array([np.linalg.norm(np.cross(eu, ev)) for _, eu, ev in faces])
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        pick = rng.choice(len(faces), 4 * n, p=areas / areas.sum())
        st = rng.random((4 * n, 2))
        origin = np.stack([faces[i][0] for i in pick])
        eu = np.stack([faces[i][1] for i in pick])
        ev = np.stack([faces[i][2] for i in pick])
        p = origin + st[:, :1] * eu + st[:, 1:] * ev
        out.append(p[~inside(p, CHAIR, eps=1e-9)])  # faces hidden inside another box are not surface
    return np.concatenate(out)[:n]


def hidden(points: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """Whether the segment from each point to the eye passes through a box (slab test)."""
    direction = eye - points  # the segment is points + t * direction, t in (0, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / direction
    blocked = np.zeros(len(points), bool)
    for lo, hi in CHAIR:
        t0, t1 = (np.array(lo) - points) * inv, (np.array(hi) - points) * inv
        near = np.nanmax(np.minimum(t0, t1), axis=1)
        far = np.nanmin(np.maximum(t0, t1), axis=1)
        blocked |= (far > np.maximum(near, 1e-6)) & (near < 1.0)
    return blocked


def scan_points(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` noisy samples of the surface that at least one of SCAN_EYES sees."""
    lo = np.min([b[0] for b in CHAIR], axis=0)
    hi = np.max([b[1] for b in CHAIR], axis=0)
    centre = (lo + hi) / 2
    out: list[np.ndarray] = []
    while sum(len(o) for o in out) < n:
        p = surface_points(4 * n, rng)
        seen = np.zeros(len(p), bool)
        for eye in SCAN_EYES:
            seen |= ~hidden(p, centre + eye)
        out.append(p[seen])
    points = np.concatenate(out)[:n]
    return points + rng.normal(0.0, SCAN_NOISE, points.shape)


def write_binary_ply(path: Path, points: np.ndarray) -> None:
    header = (
        f"ply\nformat binary_little_endian 1.0\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    )
    path.write_bytes(header.encode("ascii") + points.astype("<f4").tobytes())


def write_ply(path: Path, points: np.ndarray) -> None:
    properties = "".join(f"property float {axis}\n" for axis in "xyz")
    header = f"ply\nformat ascii 1.0\nelement vertex {len(points)}\n{properties}end_header\n"
    body = "\n".join(f"{x:.6f} {y:.6f} {z:.6f}" for x, y, z in points)
    path.write_text(header + body + "\n")


def voxelize(lo: np.ndarray, side: float, res: int) -> np.ndarray:
    """(res, res, res) grid over the cube [lo, lo + side]: occupied where the centre or a point a
    quarter voxel from it is inside the chair (the rule of the training data)."""
    t = (np.arange(res) + 0.5) / res * side
    grid = np.stack(np.meshgrid(lo[0] + t, lo[1] + t, lo[2] + t, indexing="ij"), -1).reshape(-1, 3)
    offsets = (
        np.array([[0, 0, 0]] + [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)])
        * 0.25
        * side
        / res
    )
    occ = np.zeros(len(grid), bool)
    for o in offsets:
        occ |= inside(grid + o, CHAIR)
    return occ.reshape(res, res, res)


def write_binvox(path: Path, voxels: np.ndarray, translate: np.ndarray, scale: float) -> None:
    """binvox stores x, then z, then y fastest, run-length encoded in (value, count <= 255) pairs."""
    flat = voxels.transpose(0, 2, 1).reshape(-1).astype(np.uint8)
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [len(flat)]]))
    data = bytearray()
    for start, length in zip(starts, lengths, strict=True):
        while length > 0:
            run = min(int(length), 255)
            data += bytes([flat[start], run])
            length -= run
    d = voxels.shape
    t = " ".join(f"{x:.6f}" for x in translate)
    header = f"#binvox 1\ndim {d[0]} {d[1]} {d[2]}\ntranslate {t}\nscale {scale:.6f}\ndata\n"
    path.write_bytes(header.encode("ascii") + bytes(data))


def main(out: Path = HERE) -> None:
    rng = np.random.default_rng(SEED)
    points = surface_points(N_POINTS, rng)
    write_ply(out / "chair_points.ply", points + OFFSET)
    write_binary_ply(out / "chair_scan.ply", scan_points(N_SCAN, rng) + OFFSET)
    lo = np.min([b[0] for b in CHAIR], axis=0)
    hi = np.max([b[1] for b in CHAIR], axis=0)
    center, side = (lo + hi) / 2, float((hi - lo).max())
    np.save(out / "chair_voxels.npy", voxelize(center - side / 2, side, VOXEL_RES))
    # the binvox grid: a cube around the chair with a little margin, placed in metres
    margin = side * 0.05
    cube_lo, cube_side = center - side / 2 - margin, side + 2 * margin
    write_binvox(out / "chair.binvox", voxelize(cube_lo, cube_side, VOXEL_RES), cube_lo + OFFSET, cube_side)
    names = f"chair_points.ply ({N_POINTS} points), chair_scan.ply ({N_SCAN}), chair_voxels.npy, chair.binvox"
    print(f"wrote {names} to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
