"""Observation files -> ``Observation`` (for the command line; the add-on sends arrays).

- Point clouds: .ply (the vertices of a point cloud or mesh), .xyz / .txt / .pts (text,
  the first three columns), .npy holding an (N, 3) array.
- Voxel grids: .npy holding an (X, Y, Z) array indexed [x, y, z], .binvox.
- Images: .png, .jpg, .jpeg, .bmp, .webp.
- Reference views: .json, a camera file naming each picture and its camera (``camera_file.py``).

A voxel grid spans [-0.5, 0.5]^3 unless ``bounds`` says otherwise (a binvox file carries
its own bounds, which ``bounds`` overrides).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from ..limits import MAX_IMAGE_SIDE, MAX_POINTS
from .binvox import read_binvox
from .camera_file import read_camera_file
from .observation import check_file_size, check_image_size, check_point_count, check_voxel_shape
from .types import InputError, Observation

POINT_SUFFIXES = {".ply", ".xyz", ".txt", ".pts"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
SUFFIXES = sorted(POINT_SUFFIXES | IMAGE_SUFFIXES | {".npy", ".binvox", ".json"})
PLY_HEADER_BYTES = 65_536  # a PLY header is a few lines; one this long is not a PLY file
# the size of each binary PLY property type, to compare what a header declares to the file
PLY_TYPE_BYTES = {
    **dict.fromkeys(("char", "uchar", "int8", "uint8"), 1),
    **dict.fromkeys(("short", "ushort", "int16", "uint16"), 2),
    **dict.fromkeys(("int", "uint", "float", "int32", "uint32", "float32"), 4),
    **dict.fromkeys(("double", "float64"), 8),
}
TEXT_HEADER_LINES = 1000  # comment and header lines a text cloud may have beyond MAX_POINTS


def _check_ply_header(path: Path, size: int) -> None:
    """Compare the element counts a PLY header declares to the limit and to the file's size."""
    with path.open("rb") as f:
        head = f.read(PLY_HEADER_BYTES)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise InputError(f"cannot read {path} as PLY: no 'ply' ... 'end_header' header in its first 64 KiB")
    data_bytes = size - (head.find(b"\n", end) + 1)
    binary = False
    counts: list[int] = []  # per element: how many rows it declares
    rows: list[int] = []  # the least bytes of one of its rows
    for raw in head[:end].decode("ascii", "replace").splitlines():
        words = raw.split()
        try:
            if words[:1] == ["format"]:
                binary = words[1] != "ascii"
            elif words[:1] == ["element"]:
                counts.append(int(words[2]))
                rows.append(0)
                if words[1] == "vertex":
                    check_point_count(counts[-1])
            elif words[:1] == ["property"] and rows:
                # a list's least row is its count alone; ascii values take at least two characters
                kind = words[2] if words[1] == "list" else words[1]
                rows[-1] += PLY_TYPE_BYTES.get(kind, 1) if binary else 2
        except InputError:
            raise
        except (IndexError, ValueError):
            raise InputError(f"cannot read {path} as PLY: invalid header line {raw.strip()!r:.80}") from None
    if any(count < 0 for count in counts):
        raise InputError(f"cannot read {path} as PLY: a negative element count")
    declared = sum(count * row for count, row in zip(counts, rows, strict=True))
    if declared > data_bytes:
        raise InputError(
            f"{path} is truncated or its header lies: it declares at least {declared:,} bytes of "
            f"elements, but holds {data_bytes:,}"
        )


def _read_ply(path: Path) -> np.ndarray:
    _check_ply_header(path, check_file_size(path))
    import trimesh  # imported here: loading it costs ~0.3 s

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            geometry = trimesh.load(str(path), file_type="ply", process=False)
    except MemoryError:
        raise
    except Exception as e:  # trimesh raises many kinds of errors for malformed files
        raise InputError(f"cannot read {path} as PLY: {e}") from None
    vertices = getattr(geometry, "vertices", None)
    if vertices is None:
        raise InputError(f"{path} holds no vertices")
    return np.asarray(vertices, np.float64)


def _count_lines(path: Path) -> int:
    lines = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            lines += chunk.count(b"\n")
    return lines


def _read_text(path: Path) -> np.ndarray:
    check_file_size(path)
    lines = _count_lines(path)
    if lines > MAX_POINTS + TEXT_HEADER_LINES:
        check_point_count(lines)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. numpy's "input contained no data"
            # only x y z are kept, so that extra columns (normals, colours) cost no memory
            arr = np.loadtxt(path, ndmin=2, comments=("#", "//"), usecols=(0, 1, 2))
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {path} as text points (x y z in the first columns): {e}") from None
    return arr


def _npy_header(path: Path, size: int) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a .npy file declares, checked against the limits and the file's size."""
    fmt = np.lib.format
    with path.open("rb") as f:
        try:
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, _, dtype = read(f)
        except MemoryError:
            raise
        except Exception as e:  # numpy raises ValueError, EOFError or tokenizer errors here
            raise InputError(f"cannot read {path} as a .npy array: {e or type(e).__name__}") from None
        offset = f.tell()
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{path} holds an array of {dtype}: expected plain numbers")
    if len(shape) == 2 and shape[1] == 3:
        check_point_count(shape[0])
    elif len(shape) == 3:
        check_voxel_shape(shape)
    else:
        raise InputError(
            f"{path} holds an array of shape {shape}: expected (N, 3) points or an (X, Y, Z) voxel grid"
        )
    declared = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if declared > size - offset:
        raise InputError(
            f"{path} is truncated or its header lies: it declares {declared:,} bytes of data "
            f"(shape {shape}, {dtype}), but holds {size - offset:,}"
        )
    return shape, dtype


def _read_npy(path: Path) -> np.ndarray:
    _npy_header(path, check_file_size(path))
    try:
        return np.load(path, allow_pickle=False)
    except MemoryError:
        raise
    except Exception as e:
        raise InputError(f"cannot read {path} as a .npy array: {e or type(e).__name__}") from None


def _read_image(path: Path) -> np.ndarray:
    check_file_size(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's warnings about odd but readable files
            with Image.open(path) as img:
                check_image_size(*img.size)  # the declared size, before anything is decoded
                has_alpha = img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info
                return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    except (InputError, MemoryError):
        raise
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{path} declares an image far larger than the {MAX_IMAGE_SIDE:,} x {MAX_IMAGE_SIDE:,} pixels "
            f"the backend takes ({e})"
        ) from None
    except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, struct.error, ...
        raise InputError(f"cannot read {path} as an image: {e or type(e).__name__}") from None


def _read_picture_file(path: Path) -> np.ndarray:
    """One picture of a camera file, by the rules for any picture."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"{path.name!r} is not a picture: use one of {', '.join(sorted(IMAGE_SUFFIXES))}")
    if not path.is_file():
        raise InputError(f"picture not found: {path}")
    return _read_image(path)


def read_mask(path: str | Path) -> np.ndarray:
    """A picture's object mask from an image file -> (H, W) float32 in [0, 1]: its alpha if it
    has transparency, else its brightness (white marks the object)."""
    path = Path(path)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"a mask is an image ({', '.join(sorted(IMAGE_SUFFIXES))}), not {path.name!r}")
    if not path.is_file():
        raise InputError(f"mask file not found: {path}")
    pixels = _read_image(path)
    if pixels.shape[2] == 4:
        return pixels[:, :, 3].astype(np.float32) / 255.0
    return pixels.mean(axis=2, dtype=np.float32) / 255.0


def read_observation(
    path: str | Path, bounds: np.ndarray | None = None, mask: str | Path | None = None
) -> Observation:
    """Read an observation file (and a picture's mask file); InputError naming the problem if it
    cannot be used."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unsupported input {path.name!r}: use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"input file not found: {path}")
    if bounds is not None and suffix not in (".npy", ".binvox"):
        raise InputError("bounds only apply to a voxel grid (.npy or .binvox)")
    if mask is not None and suffix not in IMAGE_SUFFIXES:
        raise InputError("a mask only applies to a picture")
    if suffix == ".ply":
        return Observation(points=_read_ply(path))
    if suffix in POINT_SUFFIXES:
        return Observation(points=_read_text(path))
    if suffix in IMAGE_SUFFIXES:
        return Observation(image=_read_image(path), mask=None if mask is None else read_mask(mask))
    if suffix == ".json":
        return read_camera_file(path, _read_picture_file, read_mask)
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
