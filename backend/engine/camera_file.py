"""A set of reference views for the command line: a JSON file that names each picture and its
camera, read into the views model's observation.

    {"views": [
      {"image": "front.png", "position": [0, -5, 1], "look_at": [0, 0, 1], "fov_degrees": 40},
      {"image": "side.png", "position": [5, 0, 1], "look_at": [0, 0, 1], "fov_degrees": 40,
       "roll_degrees": 0},
      {"image": "top.png", "rotation": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "position": [0, 0, 6],
       "focal": 2.75, "principal": [0, 0], "mask": "top-mask.png"}
    ]}

Picture paths are relative to the file. A view may name a ``mask``, a picture of the same size
whose white (or opaque) pixels mark the object, for a picture whose backdrop is not plain; it
becomes that picture's transparency. A camera stands at ``position`` and either looks at
``look_at`` (the world's +z up in the picture, turned by ``roll_degrees``) or is turned by
``rotation``, the world-to-camera rotation (its rows: the camera's right, up and backward axes;
it looks down its -z, as Blender's cameras do). Its lens is ``fov_degrees`` across the picture's
longest side, or ``focal`` (1 / tan(fov / 2)), with an optional ``principal`` point (0, 0 is the
picture's centre; units of half its longest side). Units and axes are the scene's: the result
comes back in them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..wire.views import CAMERA_ROW, as_rgba, look_at_rows, pad_views
from .framing import mask_weights
from .types import InputError, Observation

MAX_FILE_BYTES = 1 << 20  # a camera file is a few hundred bytes


def read_camera_file(path: Path, read_picture: Any, read_mask: Any) -> Observation:
    """The views and cameras a camera file describes; ``read_picture(path)`` reads one picture and
    ``read_mask(path)`` one mask. InputError names the view and the key that is wrong."""
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(f"{path} is not a camera file: it has more than {MAX_FILE_BYTES:,} bytes")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InputError(f"cannot read {path} as a camera file (JSON): {e}") from None
    views = spec.get("views") if isinstance(spec, dict) else None
    if not isinstance(views, list) or not views:
        raise InputError(f'{path} needs a "views" list: one entry per picture with its camera')
    pictures, rows = [], []
    for number, view in enumerate(views, 1):
        if not isinstance(view, dict):
            raise InputError(f"view {number} in {path} must be an object with an image and a camera")
        image = view.get("image")
        if not isinstance(image, str):
            raise InputError(f'view {number} in {path} needs "image": the picture\'s file')
        where = f"view {number} in {path}"
        picture = read_picture(path.parent / image)
        if "mask" in view:
            if not isinstance(view["mask"], str):
                raise InputError(f'{where}: "mask" must name a picture file')
            picture = _masked(picture, read_mask(path.parent / view["mask"]), where)
        pictures.append(picture)
        rows.append(_camera_row(view, where))
    stack, cameras = pad_views(pictures, np.stack(rows))
    return Observation(views=stack, cameras=cameras)


def _masked(picture: np.ndarray, mask: np.ndarray, where: str) -> np.ndarray:
    """The picture (H, W, 4) with the mask as its transparency, so the engine frames it as a
    cut-out picture."""
    rgba = as_rgba(picture)
    try:
        rgba[..., 3] = mask_weights(mask, rgba.shape[:2])
    except InputError as e:
        raise InputError(f"{where}: {e}") from None
    return rgba


def _vector(view: dict[str, Any], key: str, size: int, where: str) -> np.ndarray:
    try:
        value = np.asarray(view[key], np.float64)
    except KeyError:
        raise InputError(f'{where} needs "{key}"') from None
    except (TypeError, ValueError):
        raise InputError(f'{where}: "{key}" must hold numbers') from None
    if value.size != size or not np.isfinite(value).all():
        raise InputError(f'{where}: "{key}" must hold {size} finite numbers, got {view[key]!r}')
    return value.reshape(-1)


def _number(view: dict[str, Any], key: str, where: str) -> float:
    return float(_vector(view, key, 1, where)[0])


def _camera_row(view: dict[str, Any], where: str) -> np.ndarray:
    position = _vector(view, "position", 3, where)
    if ("look_at" in view) == ("rotation" in view):
        raise InputError(f'{where} needs either "look_at" or "rotation" (one of them)')
    if ("fov_degrees" in view) == ("focal" in view):
        raise InputError(f'{where} needs either "fov_degrees" or "focal" (one of them)')
    if "fov_degrees" in view:
        fov = _number(view, "fov_degrees", where)
        if not 0 < fov < 180:
            raise InputError(f'{where}: "fov_degrees" must lie between 0 and 180, got {fov:g}')
        focal = 1.0 / math.tan(math.radians(fov) / 2)
    else:
        focal = _number(view, "focal", where)
        if focal <= 0:
            raise InputError(f'{where}: "focal" must be positive, got {focal:g}')
    if "look_at" in view:
        target = _vector(view, "look_at", 3, where)
        if np.linalg.norm(target - position) < 1e-9:
            raise InputError(f'{where}: "look_at" is the camera\'s own position')
        roll = np.array([_number(view, "roll_degrees", where)]) if "roll_degrees" in view else None
        row = look_at_rows(position[None], target[None], np.array([90.0]), roll)[0].astype(np.float64)
    else:
        rotation = _vector(view, "rotation", 9, where).reshape(3, 3)
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-3:
            raise InputError(f'{where}: "rotation" must be a rotation (orthonormal rows)')
        row = np.concatenate([rotation.reshape(-1), position, [1.0], [0.0, 0.0]])
    row[12] = focal
    row[13:15] = _vector(view, "principal", 2, where) if "principal" in view else 0.0
    assert row.shape == (CAMERA_ROW,)
    return row.astype(np.float32)
