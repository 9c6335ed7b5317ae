"""Reference views on the wire: camera rows and a stack of pictures, shared by the add-on and the
command line (numpy only).

A camera is one row of 15 numbers (``CAMERA_ROW``): the rotation from world to camera (its rows
are the camera's right, up and backward axes in the world; the camera looks down its -z, as
Blender's do), the camera's position, the focal length and the principal point in units of half
the picture's longest side (focal = 1 / tan(fov / 2) for the field of view across that side).
The pictures travel as one (V, S, S, 4) stack: each is padded to the largest one's square around
its centre, which only changes its camera's focal length and principal point (``pad_views``,
``crop_rows``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CAMERA_ROW = 15
MAX_VIEWS = 4  # a views model reads at most this many pictures of one object
WORLD_UP = np.array([0.0, 0.0, 1.0])  # Blender's
# named sets of reference views, as a modeller sets them up in Blender: the directions from the
# object to each camera (front: Blender's front view, looking along +y; side: its right view;
# top: looking down)
VIEW_SETS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "front-side": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
    "front-side-top": ((0.0, -1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)),
}


def look_at_rows(
    eye: np.ndarray, target: np.ndarray, fov_degrees: np.ndarray, roll_degrees: np.ndarray | None = None
) -> np.ndarray:
    """Camera rows (V, 15) at ``eye`` (V, 3) looking at ``target`` (V, 3), the world's +z up in the
    picture (+y when looking straight up or down), turned by ``roll`` about the view axis."""
    eye, target = np.asarray(eye, np.float64).reshape(-1, 3), np.asarray(target, np.float64).reshape(-1, 3)
    forward = target - eye
    forward /= np.linalg.norm(forward, axis=1, keepdims=True)
    up = np.where((np.abs(forward @ WORLD_UP) > 0.999)[:, None], [0.0, 1.0, 0.0], WORLD_UP)
    x = np.cross(forward, up)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = np.cross(x, forward)
    if roll_degrees is not None:
        a = np.radians(np.asarray(roll_degrees, np.float64)).reshape(-1, 1)
        x, y = x * np.cos(a) + y * np.sin(a), y * np.cos(a) - x * np.sin(a)
    rotation = np.stack([x, y, -forward], 1)
    focal = 1.0 / np.tan(np.radians(np.asarray(fov_degrees, np.float64)).reshape(-1) / 2)
    rows = np.concatenate([rotation.reshape(-1, 9), eye, focal[:, None], np.zeros((len(eye), 2))], 1)
    return rows.astype(np.float32)


def crop_rows(rows: np.ndarray, size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Camera rows (V, 15) of (width, height) pictures -> the rows of those pictures cut to ``box``
    (left, top, width, height, in pixels from the top-left corner; beyond the picture for a pad).

    The rays stay the same: only the focal length and the principal point change, because both
    are measured from the picture's centre in units of half its longest side.
    """
    out = np.array(rows, np.float64).reshape(-1, CAMERA_ROW)
    (width, height), (left, top, box_w, box_h) = size, box
    half, box_half = max(width, height) / 2.0, max(box_w, box_h) / 2.0
    # the principal point in pixels from the top-left corner (u runs right, v up)
    x = width / 2.0 + out[:, 13] * half - left
    y = height / 2.0 - out[:, 14] * half - top
    out[:, 12] *= half / box_half
    out[:, 13] = (x - box_w / 2.0) / box_half
    out[:, 14] = (box_h / 2.0 - y) / box_half
    return out.astype(np.float32)


def pad_views(pictures: Sequence[np.ndarray], rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pictures (H, W, C) of any sizes, C in 1, 3, 4, with their camera rows -> one (V, S, S, 4)
    float32 stack in [0, 1] (S: the longest side of all) and the rows for the padded pictures.

    A transparent picture gets a transparent border, an opaque one its own edge colour, so a
    plain backdrop stays plain.
    """
    side = max(max(p.shape[:2]) for p in pictures)
    stack, out = [], np.array(rows, np.float32).reshape(-1, CAMERA_ROW)
    for i, picture in enumerate(pictures):
        rgba = as_rgba(picture)
        h, w = rgba.shape[:2]
        top, left = (side - h) // 2, (side - w) // 2
        pad = ((top, side - h - top), (left, side - w - left), (0, 0))
        if float(rgba[..., 3].min()) < 0.99:
            stack.append(np.pad(rgba, pad, constant_values=0.0))
        else:
            stack.append(np.pad(rgba, pad, mode="edge"))
        out[i] = crop_rows(out[i], (w, h), (-left, -top, side, side))[0]
    return np.stack(stack), out


def as_rgba(picture: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8 or float in [0, 1] -> (H, W, 4) float32."""
    arr = np.asarray(picture)
    scale = 255.0 if np.issubdtype(arr.dtype, np.integer) else 1.0
    arr = arr.astype(np.float32) / scale
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.shape[2] in (1, 2):  # grey, grey + alpha
        arr = np.concatenate([arr[..., :1].repeat(3, 2), arr[..., 1:]], 2)
    if arr.shape[2] == 3:
        arr = np.concatenate([arr, np.ones(arr.shape[:2] + (1,), np.float32)], 2)
    return arr[..., :4]
