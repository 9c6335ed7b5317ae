"""Reading binvox voxel files (the format of the ShapeNet voxelisations the original used).

Layout: a text header (``#binvox 1``, ``dim D H W``, ``translate x y z``, ``scale s``,
``data``) followed by run-length pairs of bytes (value, count). Voxels run with y fastest,
then z, then x; the grid spans ``translate`` to ``translate + scale`` on every axis.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..limits import MAX_VOXEL_DIM
from .observation import check_file_size
from .types import InputError

RUN_LENGTH = 255  # the most voxels one (value, count) pair covers


@dataclass
class Binvox:
    voxels: np.ndarray  # (X, Y, Z) bool, indexed [x, y, z]
    bounds: np.ndarray  # (2, 3) float64 min and max corner


def read_binvox(path: str | Path) -> Binvox:
    """Parse a binvox file; InputError naming the problem if it is not a valid one."""
    path = Path(path)
    try:
        check_file_size(path)
        raw = path.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    header: dict[str, list[str]] = {}
    pos = 0
    for _ in range(16):  # the header is a handful of lines
        end = raw.find(b"\n", pos)
        if end < 0:
            raise InputError(f"{path} is not a binvox file: the header never reaches 'data'")
        line = raw[pos:end].decode("ascii", "replace").strip()
        pos = end + 1
        if not header and not line.startswith("#binvox"):
            raise InputError(f"{path} is not a binvox file (it does not start with '#binvox')")
        if line == "data":
            break
        if line:
            key, *rest = line.split()
            header[key] = rest
    else:
        raise InputError(f"{path} is not a binvox file: no 'data' line in its header")
    try:
        dims = [int(d) for d in header["dim"]]
        translate = np.array([float(t) for t in header.get("translate", ["0", "0", "0"])])
        scale = float(header.get("scale", ["1"])[0])
    except (KeyError, ValueError) as e:
        raise InputError(f"{path} has an invalid binvox header ({e})") from None
    if len(dims) != 3 or min(dims) < 1 or translate.shape != (3,):
        raise InputError(f"{path} has invalid binvox dimensions {header.get('dim')}")
    if max(dims) > MAX_VOXEL_DIM:
        raise InputError(
            f"{path} declares a {' x '.join(map(str, dims))} grid; the backend takes at most "
            f"{MAX_VOXEL_DIM} cells per axis"
        )
    if not (np.isfinite(translate).all() and np.isfinite(scale) and scale > 0):
        raise InputError(f"{path} has an invalid binvox translate/scale")
    n = int(np.prod(dims))
    data = len(raw) - pos
    # the header never decides what is allocated: the data must hold between one pair per 255
    # voxels and one pair per voxel (and a stray trailing byte, which some writers add)
    if not 2 * -(-n // RUN_LENGTH) <= data <= 2 * n + 1:
        raise InputError(
            f"{path} is truncated or corrupt: its header declares {n:,} voxels, which {data:,} bytes "
            "of run-length data cannot hold"
        )
    pairs = np.frombuffer(raw[pos:], np.uint8)
    if len(pairs) % 2:
        pairs = pairs[:-1]  # a stray trailing byte (some writers add a newline)
    values, counts = pairs[0::2], pairs[1::2].astype(np.int32)  # n fits: MAX_VOXEL_DIM ** 3 < 2^31
    if counts.sum(dtype=np.int64) != n:
        raise InputError(f"{path} is truncated or corrupt: its data holds {counts.sum()} voxels, not {n}")
    flat = np.repeat(values > 0, counts)
    # stored order is x, z, y (y fastest): reorder to [x, y, z]
    voxels = flat.reshape(dims[0], dims[2], dims[1]).transpose(0, 2, 1)
    bounds = np.stack([translate, translate + scale])
    return Binvox(np.ascontiguousarray(voxels), bounds)


def write_binvox(
    path: str | Path, voxels: np.ndarray, translate: tuple[float, float, float], scale: float
) -> None:
    """Write an (X, Y, Z) bool grid indexed [x, y, z] as a binvox file spanning ``translate`` to
    ``translate + scale`` (the inverse of ``read_binvox``)."""
    grid = np.asarray(voxels, bool)
    flat = grid.transpose(0, 2, 1).reshape(-1)  # stored order: x, z, y with y fastest
    starts = np.flatnonzero(np.diff(flat.astype(np.int8), prepend=-1))
    lengths = np.diff(np.append(starts, len(flat)))
    pairs = []
    for start, length in zip(starts, lengths, strict=True):
        value = int(flat[start])
        full, rest = divmod(int(length), 255)  # a run's count is one byte
        pairs += [value, 255] * full + ([value, rest] if rest else [])
    d = grid.shape
    header = (
        f"#binvox 1\ndim {d[0]} {d[1]} {d[2]}\ntranslate {translate[0]} {translate[1]} {translate[2]}\n"
        f"scale {scale}\ndata\n"
    )
    Path(path).write_bytes(header.encode("ascii") + bytes(pairs))
