"""Observations in the user's frame -> model inputs in the normalised unit-cube frame.

The models were trained on objects centred on the origin and scaled so that the longest
side of their bounding box is 1 (as in the original ONet data). Each observation is
mapped into that frame, and the ``UserFrame`` it returns maps the extracted mesh back, so the
result lands where the input was.

- Points: bounding-box centre to the origin, longest side to 1. Non-finite points are
  dropped (with a warning); clouds larger than the model's training size are subsampled
  deterministically.
- Voxels: the grid's bounds, made cubic around their centre (the shorter sides padded, the
  aspect kept), become [-0.5, 0.5]^3 and the grid is resampled to 32^3. A voxel of the
  new grid is occupied when any of its sub-samples falls in an occupied input voxel,
  like the training data's "the solid touches the voxel" rule. A cubic 32^3 grid maps
  one to one.
- Images: the object is found and cropped as the training renders frame it (``framing.py``),
  then resized to the model's input size. An image has no 3D frame of its own: the mesh is
  returned in the camera frame of the whole picture (x right, y up, looking down -z), which
  the crop decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..limits import (
    MAX_COORDINATE,
    MAX_IMAGE_SIDE,
    MAX_INPUT_FILE_BYTES,
    MAX_OFFSET_TO_EXTENT,
    MAX_POINTS,
    MAX_VOXEL_DIM,
)
from ..models.views import ModelInput
from ..wire.constants import VOXEL_RES
from .framing import Framing, frame, object_mask
from .outlines import Outlines
from .types import InputError

MIN_POINTS = 10
IMAGE_ROWS_AT_ONCE = 256
FRAMING_SIDE = 1024  # larger pictures are framed at this size: the models read 64 to 224 pixels


@dataclass(frozen=True)
class UserFrame:
    """user = center + scale * unit (a uniform scale, so normals are unchanged)."""

    center: np.ndarray  # (3,) float64
    scale: float

    @staticmethod
    def identity() -> UserFrame:
        return UserFrame(np.zeros(3), 1.0)

    def to_user(self, unit: np.ndarray) -> np.ndarray:
        return (np.asarray(unit, np.float64) * self.scale + self.center).astype(np.float32)

    def to_unit(self, user: np.ndarray) -> np.ndarray:
        return ((np.asarray(user, np.float64) - self.center) / self.scale).astype(np.float32)


@dataclass
class Prepared:
    """A model input (batch of one) and the frame that maps the result back."""

    inputs: ModelInput | None
    frame: UserFrame
    warnings: list[str]
    # a point cloud as the model reads it (normalised): what the surface is fitted to
    points: np.ndarray | None = None
    # reference views: their outlines, whose visual hull the field is blended with (outlines.py)
    outlines: Outlines | None = None


def _as_array(value: object, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} is not an array: {e}") from None
    if arr.dtype.kind not in "biuf":  # bool, integers and floats; not complex, dates or objects
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    return arr


def check_file_size(path: Path) -> int:
    """The size of an input file; InputError beyond ``limits.MAX_INPUT_FILE_BYTES``."""
    size = path.stat().st_size
    if size > MAX_INPUT_FILE_BYTES:
        raise InputError(
            f"{path} is {size / 2**30:.1f} GiB; input files may be up to "
            f"{MAX_INPUT_FILE_BYTES / 2**30:.0f} GiB"
        )
    return size


def check_point_count(n: int) -> None:
    """InputError for a cloud beyond ``limits.MAX_POINTS`` (readers call it with a header's count)."""
    if n > MAX_POINTS:
        raise InputError(
            f"the point cloud has {n:,} points, more than the {MAX_POINTS:,} the backend "
            "takes; thin it first (e.g. a voxel-grid filter at the scan's resolution)"
        )


def check_voxel_shape(shape: tuple[int, ...]) -> None:
    """InputError for a grid with more than ``limits.MAX_VOXEL_DIM`` cells on an axis."""
    if len(shape) == 3 and max(shape) > MAX_VOXEL_DIM:
        raise InputError(
            f"the voxel grid is {' x '.join(map(str, shape))}; the backend takes at most "
            f"{MAX_VOXEL_DIM} cells per axis (it resamples every grid to {VOXEL_RES}^3)"
        )


def check_image_size(width: int, height: int) -> None:
    """InputError for an image wider or taller than ``limits.MAX_IMAGE_SIDE`` (before decoding it)."""
    if max(width, height) > MAX_IMAGE_SIDE:
        raise InputError(
            f"the image is {width:,} x {height:,} pixels; the backend takes at most {MAX_IMAGE_SIDE:,} "
            f"on each side (the model sees it at 64 x 64): scale it down first"
        )


def _check_magnitude(values: np.ndarray, name: str) -> None:
    """Coordinates beyond ``limits.MAX_COORDINATE`` would overflow the float32 mesh."""
    if values.size and float(np.abs(values).max()) > MAX_COORDINATE:
        raise InputError(
            f"the {name} reach {float(np.abs(values).max()):.3g}; the backend takes magnitudes up to "
            f"{MAX_COORDINATE:g} (the mesh is written in float32): move or scale the input first"
        )


def _check_offset(center: np.ndarray, extent: float, name: str) -> None:
    """The float32 mesh must resolve the input: refuse one far from the origin for its size."""
    offset = float(np.abs(center).max())
    if offset > MAX_OFFSET_TO_EXTENT * extent:
        raise InputError(
            f"the {name} span {extent:.3g} but lie {offset:.3g} from the origin, more than "
            f"{MAX_OFFSET_TO_EXTENT:,.0f} times their size: float32 vertices could not resolve the "
            "shape there; move the input nearer to the origin first"
        )


def prepare_points(points: object, max_points: int | None, seed: int = 0) -> Prepared:
    """(N, 3) points in any frame -> (1, n, 3) float32 in the unit frame.

    ``max_points``: a model trained on a fixed number of points gets a subsample of that size;
    None (a model for any density) takes every point, up to ``limits.MAX_POINTS``.
    """
    arr = _as_array(points, "points")
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise InputError(f"points must be an (N, 3) array, got shape {arr.shape}")
    check_point_count(len(arr))
    arr = arr.astype(np.float64)
    warnings = []
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        warnings.append(
            f"dropped {int((~finite).sum())} of {len(arr)} points with NaN or infinite coordinates"
        )
        arr = arr[finite]
    _check_magnitude(arr, "point coordinates")
    if len(arr) < MIN_POINTS:
        raise InputError(
            f"a point cloud needs at least {MIN_POINTS} points with finite coordinates, got {len(arr)}"
        )
    lo, hi = arr.min(axis=0), arr.max(axis=0)
    with np.errstate(over="ignore"):
        extent = float((hi - lo).max())
    center = 0.5 * lo + 0.5 * hi
    if not np.isfinite(extent):
        raise InputError("the point coordinates are too large to normalise (their extent overflows)")
    if not extent > 1e-9 * max(1.0, float(np.abs(center).max())):
        raise InputError("all points lie at one spot: the point cloud has no extent to reconstruct")
    _check_offset(center, extent, "points")
    if max_points is not None and len(arr) > max_points:
        rng = np.random.default_rng(seed)
        arr = arr[np.sort(rng.choice(len(arr), max_points, replace=False))]
        warnings.append(f"used {max_points} of the points (the model was trained on {max_points})")
    frame = UserFrame(center, extent)
    unit = frame.to_unit(arr)
    return Prepared(torch.from_numpy(unit)[None], frame, warnings, points=unit)


def _voxel_bounds(bounds: object | None) -> np.ndarray:
    if bounds is None:
        return np.array([[-0.5] * 3, [0.5] * 3])
    b = _as_array(bounds, "bounds").astype(np.float64)
    if b.shape != (2, 3):
        raise InputError(f"bounds must be a (2, 3) array of min and max corners, got shape {b.shape}")
    if not np.isfinite(b).all():
        raise InputError("bounds must be finite")
    _check_magnitude(b, "bounds")
    if not (b[1] > b[0]).all():
        raise InputError(f"bounds need max > min on every axis, got min {b[0].tolist()} max {b[1].tolist()}")
    return b


def _occupancy(voxels: object) -> np.ndarray:
    arr = _as_array(voxels, "voxels")
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise InputError(f"voxels must be a 3D (X, Y, Z) grid, got shape {arr.shape}")
    check_voxel_shape(arr.shape)
    if arr.dtype == bool:
        return arr
    if not np.isfinite(arr).all():
        raise InputError("the voxel grid holds NaN or infinite values")
    if np.issubdtype(arr.dtype, np.integer):
        return arr > 0
    return arr > 0.5  # float occupancy (probabilities or 0/1)


def prepare_voxels(voxels: object, bounds: object | None = None) -> Prepared:
    """An (X, Y, Z) occupancy grid over ``bounds`` -> (1, 32, 32, 32) float32 in the unit frame."""
    occ = _occupancy(voxels)
    b = _voxel_bounds(bounds)
    warnings = []
    filled = int(occ.sum())
    if filled == 0:
        raise InputError("the voxel grid is empty: no voxel is occupied")
    if filled == occ.size:
        warnings.append("every voxel is occupied: the grid shows a solid box filling its bounds")
    center = 0.5 * b[0] + 0.5 * b[1]
    with np.errstate(over="ignore"):
        side = float((b[1] - b[0]).max())
    if not np.isfinite(side):
        raise InputError("the bounds are too large (their extent overflows)")
    _check_offset(center, side, "voxel grid")
    frame = UserFrame(center, side)
    shape = np.array(occ.shape)
    if occ.shape == (VOXEL_RES,) * 3 and np.allclose(b[1] - b[0], side):
        grid = occ  # already the model's grid: no resampling
    else:
        grid = _resample(occ, b, frame, shape)
    return Prepared(torch.from_numpy(grid.astype(np.float32))[None], frame, warnings)


def _resample(occ: np.ndarray, bounds: np.ndarray, frame: UserFrame, shape: np.ndarray) -> np.ndarray:
    """Any-of-sub-samples resampling of ``occ`` (over ``bounds``) onto the 32^3 unit grid."""
    # enough sub-samples per target voxel that none of the input voxels it covers is skipped
    voxel_unit = (bounds[1] - bounds[0]) / shape / frame.scale  # input voxel size in the unit frame
    per_axis = int(np.clip(np.ceil((1.0 / VOXEL_RES) / voxel_unit.min()) + 1, 3, 16))
    sub = (np.arange(per_axis) + 0.5) / per_axis  # sub-sample offsets within a target voxel
    coords = (np.arange(VOXEL_RES)[:, None] + sub[None]).reshape(-1) / VOXEL_RES - 0.5  # unit frame
    index = []
    for axis in range(3):
        user = frame.center[axis] + frame.scale * coords
        i = np.floor((user - bounds[0, axis]) / (bounds[1, axis] - bounds[0, axis]) * shape[axis]).astype(
            np.int64
        )
        valid = (i >= 0) & (i < shape[axis])
        index.append((np.clip(i, 0, shape[axis] - 1), valid))
    (ix, vx), (iy, vy), (iz, vz) = index
    samples = occ[np.ix_(ix, iy, iz)] & vx[:, None, None] & vy[None, :, None] & vz[None, None, :]
    samples = samples.reshape(VOXEL_RES, per_axis, VOXEL_RES, per_axis, VOXEL_RES, per_axis)
    return samples.any(axis=(1, 3, 5))


def read_picture(image: object) -> tuple[np.ndarray, np.ndarray | None]:
    """An (H, W[, C]) image, checked -> (H, W, 3) float32 colour in [0, 1] and its alpha, if any."""
    arr = _as_array(image, "image")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4) or min(arr.shape[:2]) < 1:
        raise InputError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got shape {arr.shape}")
    check_image_size(arr.shape[1], arr.shape[0])
    integer = np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool
    if integer and arr.dtype != bool and (arr.min() < 0 or arr.max() > 255):
        raise InputError("an integer image must hold values in 0..255")
    if not integer and (not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1):
        raise InputError("a float image must hold finite values in [0, 1]")
    if max(arr.shape[:2]) > FRAMING_SIDE:
        arr = _shrink(arr, integer)
    img = arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):  # 0..255 (bool is 0..1 already)
        img /= 255.0
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2), None
    return img[:, :, :3], (img[:, :, 3] if img.shape[2] == 4 else None)


def _shrink(arr: np.ndarray, integer: bool) -> np.ndarray:
    """A large (H, W, C) picture, checked, as 8 bits at most FRAMING_SIDE on its longest side."""
    if integer:
        eight = arr.astype(np.uint8) * (255 if arr.dtype == bool else 1)
    else:
        eight = np.empty(arr.shape, np.uint8)
        for row in range(0, len(arr), IMAGE_ROWS_AT_ONCE):  # a few rows at a time: no float copy
            eight[row : row + IMAGE_ROWS_AT_ONCE] = np.round(arr[row : row + IMAGE_ROWS_AT_ONCE] * 255)
    h, w, c = eight.shape
    factor = FRAMING_SIDE / max(h, w)
    size = (max(round(w * factor), 1), max(round(h * factor), 1))
    small = Image.fromarray(eight[:, :, 0] if c == 1 else eight).resize(size, Image.Resampling.BOX)
    return np.asarray(small).reshape(size[1], size[0], c)


def resize_square(square: np.ndarray, size: int) -> np.ndarray:
    """A square (S, S, 3) float picture in [0, 1] -> (size, size, 3) uint8, as the models see it."""
    pil = Image.fromarray(np.round(square * 255).astype(np.uint8))
    if pil.size != (size, size):
        pil = pil.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(pil)


def prepare_image(image: object, size: int, framed: bool = True, mask: np.ndarray | None = None) -> Prepared:
    """An (H, W[, C]) image -> (1, 3, size, size) float32 in [0, 1] and the crop's frame.

    ``framed``: the object is found and cropped as the training renders frame it
    (``framing.py``); otherwise the whole picture, RGBA composited on white, is padded to a
    square with white, as the model's own renders are made.
    """
    rgb, alpha = read_picture(image)
    if mask is not None:
        mask = np.asarray(mask, np.float32)
        picture = np.shape(image)[:2]  # type: ignore[arg-type]  # read_picture has checked it
        if mask.shape != picture:
            raise InputError(f"the mask is {mask.shape[::-1]} pixels but the picture is {picture[::-1]}")
        if mask.shape != rgb.shape[:2]:  # the picture was shrunk
            mask = _shrink((mask / max(float(mask.max()), 1e-6)).clip(0, 1)[:, :, None], False)[:, :, 0]
    if framed:
        square, framing = frame(rgb, object_mask(rgb, alpha, mask))
    else:
        if alpha is not None:
            rgb = rgb * alpha[..., None] + (1.0 - alpha[..., None])
        h, w = rgb.shape[:2]
        side = max(h, w)
        square = np.ones((side, side, 3), np.float32)
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = rgb
        framing = Framing.whole()
    out = resize_square(square, size).astype(np.float32) / 255.0
    centre, scale = framing.to_picture()
    return Prepared(torch.from_numpy(out).permute(2, 0, 1).contiguous()[None], UserFrame(centre, scale), [])
