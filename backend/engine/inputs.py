"""Observation files -> ``Observation`` (for the command line; the add-on sends arrays).

- Point clouds: .ply (the vertices of a point cloud or mesh), .xyz / .txt / .pts (text,
  the first three columns), .npy holding an (N, 3) array.
- Voxel grids: .npy holding an (X, Y, Z) array indexed [x, y, z], .binvox.
- Images: .png, .jpg, .jpeg, .bmp, .webp.

A voxel grid spans [-0.5, 0.5]^3 unless ``bounds`` says otherwise (a binvox file carries
its own bounds, which ``bounds`` overrides).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .binvox import read_binvox
from .types import InputError, Observation

POINT_SUFFIXES = {".ply", ".xyz", ".txt", ".pts"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
SUFFIXES = sorted(POINT_SUFFIXES | IMAGE_SUFFIXES | {".npy", ".binvox"})


def _read_ply(path: Path) -> np.ndarray:
    import trimesh  # imported here: loading it costs ~0.3 s

    try:
        geometry = trimesh.load(str(path), process=False)
    except MemoryError:
        raise
    except Exception as e:  # trimesh raises many kinds of errors for malformed files
        raise InputError(f"cannot read {path} as PLY: {e}") from None
    vertices = getattr(geometry, "vertices", None)
    if vertices is None:
        raise InputError(f"{path} holds no vertices")
    return np.asarray(vertices, np.float64)


def _read_text(path: Path) -> np.ndarray:
    try:
        arr = np.loadtxt(path, ndmin=2, comments=("#", "//"))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as text points: {e}") from None
    if arr.shape[1] < 3:
        raise InputError(f"{path} needs at least three columns (x y z), got {arr.shape[1]}")
    return arr[:, :3]


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as a .npy array: {e}") from None


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
            return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise InputError(f"cannot read {path} as an image: {e}") from None


def read_observation(path: str | Path, bounds: np.ndarray | None = None) -> Observation:
    """Read an observation file; InputError naming the problem if it cannot be used."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported input {path.name!r}: use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if bounds is not None and suffix not in (".npy", ".binvox"):
        raise InputError("bounds only apply to a voxel grid (.npy or .binvox)")
    if suffix == ".ply":
        return Observation(points=_read_ply(path))
    if suffix in POINT_SUFFIXES:
        return Observation(points=_read_text(path))
    if suffix in IMAGE_SUFFIXES:
        return Observation(image=_read_image(path))
    if suffix == ".binvox":
        grid = read_binvox(path)
        return Observation(voxels=grid.voxels, bounds=grid.bounds if bounds is None else bounds)
    arr = _read_npy(path)
    if arr.ndim == 2 and arr.shape[1] == 3:
        if bounds is not None:
            raise InputError("bounds only apply to a voxel grid, but the .npy holds an (N, 3) point cloud")
        return Observation(points=arr)
    if arr.ndim == 3:
        return Observation(voxels=arr, bounds=bounds)
    raise InputError(
        f"{path} holds an array of shape {arr.shape}: expected (N, 3) points or an (X, Y, Z) voxel grid"
    )
