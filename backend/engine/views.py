"""Several reference pictures of one object with their cameras -> the views model's input.

Each picture is framed as a single picture is (``framing.py``: the object found by alpha, a plain
backdrop or a mask, cut out onto white and cropped as the training renders are framed), and its
camera becomes the camera of that crop (``data.cameras.Cameras.crop``), so it stays exact.

The model predicts in the object's frame: centred on the object, its longest side 1. Where the
object is follows from the cameras: it lies where the rays through the centres of its outlines
meet (the point nearest all of them, by least squares); its size from how wide the outlines are
at that distance. With one view there is nothing to meet, so the object is taken to lie where
that ray passes nearest the world's origin. A view whose camera does not see that point inside
the object's outline shows something else, and is refused by name.

Camera rows are ``Cameras.to_array``'s: a rotation from world to camera (rows: the camera's
right, up and backward axes), the camera's position, its focal length and principal point in
units of half the picture's longest side (focal = 1 / tan(fov / 2) for the field of view across
that side). Pictures of other shapes are padded to a square around their centre, as framing does.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.cameras import ARRAY_WIDTH, Cameras
from ..models.views import ViewSet
from ..wire.views import MAX_VIEWS
from .framing import frame, object_mask
from .observation import Prepared, UserFrame, read_picture, resize_square
from .outlines import Outlines, framed_outline
from .types import InputError, Observation

SEEN_MARGIN = 0.5  # a view must see the agreed centre within its outline's box grown by this share
# the weight of the world's origin against the rays: rays 6 degrees apart or more outweigh it
RAY_PRIOR = 0.01


def _checked_cameras(cameras: object, count: int) -> Cameras:
    try:
        rows = np.asarray(cameras, np.float64)
    except (TypeError, ValueError):
        raise InputError("cameras must be numbers: one row of 15 per picture") from None
    if rows.shape != (count, ARRAY_WIDTH):
        want = f"({count}, {ARRAY_WIDTH})"
        raise InputError(f"cameras must have shape {want} for {count} picture(s), got {rows.shape}")
    if not np.isfinite(rows).all():
        raise InputError("the cameras hold NaN or infinite values")
    rotation = rows[:, :9].reshape(-1, 3, 3)
    off = np.abs(rotation @ rotation.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    if (off > 1e-3).any():
        which = int(np.argmax(off)) + 1
        raise InputError(f"camera {which}'s rotation is not a rotation (its rows must be orthonormal)")
    if (rows[:, 12] <= 0).any():
        raise InputError(f"camera {int(np.argmin(rows[:, 12])) + 1}'s focal length must be positive")
    return Cameras.from_array(rows.astype(np.float32))


def _ray(camera: Cameras, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The world ray (origin, unit direction) through picture point uv of a single camera."""
    xy = (uv - camera.principal[0].numpy()) / float(camera.focal[0])
    d = camera.rotation[0].numpy().T @ np.array([xy[0], xy[1], -1.0])
    return camera.centre[0].numpy().astype(np.float64), d / np.linalg.norm(d)


def outline_box(found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) mask's box as its (u, v) corners, low and high, in picture coordinates."""
    rows, cols = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
    h, w = found.shape
    half = max(h, w) / 2.0
    low = np.array([(cols[0] - w / 2) / half, -(rows[-1] + 1 - h / 2) / half])
    high = np.array([(cols[-1] + 1 - w / 2) / half, -(rows[0] - h / 2) / half])
    return low, high


def _sees(camera: Cameras, box: tuple[np.ndarray, np.ndarray], point: np.ndarray) -> bool:
    """Whether ``camera`` sees ``point`` in front of it, within its outline's box (grown a little)."""
    uv, depth = camera.project(torch.tensor(point, dtype=torch.float32)[None, None])
    lo, hi = box
    at, grow = uv[0, 0].numpy(), SEEN_MARGIN * (hi - lo) / 2
    return float(depth) > 0 and bool(((at >= lo - grow) & (at <= hi + grow)).all())


def _check_common_object(
    centre: np.ndarray,
    rays: list[tuple[np.ndarray, np.ndarray]],
    boxes: list[tuple[np.ndarray, np.ndarray]],
    cameras: list[Cameras],
) -> None:
    """InputError unless every view sees ``centre`` inside its outline. With three views or more,
    the odd one out is named: the one without which the others' rays meet most closely, if they
    see where they meet and it does not."""
    if all(_sees(c, b, centre) for c, b in zip(cameras, boxes, strict=True)):
        return
    if len(cameras) >= 3:
        candidates = []
        for i in range(len(cameras)):
            others = [rays[j] for j in range(len(cameras)) if j != i]
            point = _meeting_point(others)
            candidates.append((max(_distance(ray, point) for ray in others), i, point))
        _, odd, point = min(candidates, key=lambda c: c[0])
        rest = [j for j in range(len(cameras)) if j != odd]
        agreed = all(_sees(cameras[j], boxes[j], point) for j in rest)
        if agreed and not _sees(cameras[odd], boxes[odd], point):
            raise InputError(
                f"picture {odd + 1} does not show the object the other pictures agree on: its "
                "camera does not see the point where their outlines meet (check its camera)"
            )
    raise InputError(
        "the pictures do not show one object: no point lies inside every picture's outline as its "
        "camera sees it (check the cameras)"
    )


def _distance(ray: tuple[np.ndarray, np.ndarray], point: np.ndarray) -> float:
    """How far ``point`` lies from the line of ``ray``."""
    origin, d = ray
    offset = point - origin
    return float(np.linalg.norm(offset - (offset @ d) * d))


def _meeting_point(rays: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """The point nearest all rays (least squares), held lightly (``RAY_PRIOR``) to where the rays
    pass nearest the world's origin. Rays that cross settle it alone; along rays that do not (one
    view, or views from almost one direction, whose depth they cannot tell) the prior decides."""
    nearest = [origin + max(float(-origin @ d), 1e-3) * d for origin, d in rays]
    a, b = RAY_PRIOR * np.eye(3), RAY_PRIOR * np.mean(nearest, axis=0)
    for origin, d in rays:
        across = np.eye(3) - np.outer(d, d)
        a += across
        b += across @ origin
    return np.linalg.solve(a, b)


def object_frame(boxes: list[tuple[np.ndarray, np.ndarray]], cameras: Cameras) -> tuple[np.ndarray, float]:
    """Where the object is and how large, from its outlines' boxes in each picture (``outline_box``)
    and the pictures' cameras: the point where the rays through the boxes' centres meet, and the
    widest box's width at that distance. Training shows the views model its shapes in this same
    frame (``kinds/views.py``), so it learns to predict in the frame the engine will give it.
    InputError when the views do not show one object."""
    single = [cameras.one(i) for i in range(len(boxes))]
    rays = [_ray(camera, (lo + hi) / 2) for (lo, hi), camera in zip(boxes, single, strict=True)]
    centre = _meeting_point(rays)
    _check_common_object(centre, rays, boxes, single)
    extent = 0.0
    for (lo, hi), camera in zip(boxes, single, strict=True):
        _, depth = camera.project(torch.tensor(centre, dtype=torch.float32)[None, None])
        extent = max(extent, float((hi - lo).max()) / 2 * float(depth) / float(camera.focal[0]))
    return centre, 2.0 * extent


def picture_as_view(observation: Observation) -> Observation:
    """One plain picture (an image observation) as a views model's single view, seen through the
    image models' camera (``Cameras.canonical``: a 40° lens across the picture's longest side,
    looking down -z). The result lands in that camera's frame, as an image model's does. On 100
    held-out user-style pictures the views model read so scores IoU 0.368 against the image
    model's 0.322 (``bench/single_picture.py``)."""
    assert observation.image is not None
    return Observation(
        views=np.asarray(observation.image)[None],
        cameras=Cameras.canonical(1).to_array(),
        mask=observation.mask,
    )


def prepare_views(
    pictures: object, cameras: object, size: int, outlines: bool = True, mask: object = None
) -> Prepared:
    """Pictures (V, H, W, 3 or 4) of one object and their cameras (V, 15) -> the views model's
    input (a ViewSet of one object), the frame that maps its prediction to the world and, with
    ``outlines``, the views' outlines for the field to respect (``outlines.py``). ``mask``: the
    object's mask in a single picture, as for an image model."""
    try:
        count = len(pictures)  # type: ignore[arg-type]
    except TypeError:
        raise InputError("views must be a sequence of pictures") from None
    if not 1 <= count <= MAX_VIEWS:
        raise InputError(f"a views model takes 1 to {MAX_VIEWS} pictures of one object, got {count}")
    given = _checked_cameras(cameras, count)
    if mask is not None and count != 1:
        raise InputError("a mask goes with a single picture; several views are found by alpha or backdrop")
    images, crops, boxes, masks = [], [], [], []
    for i in range(count):
        try:
            rgb, alpha = read_picture(pictures[i])  # type: ignore[index]
            weights = object_mask(rgb, alpha, None if mask is None else np.asarray(mask))
            square, framing = frame(rgb, weights)
        except InputError as e:
            raise InputError(f"picture {i + 1}: {e}") from None
        images.append(resize_square(square, size))
        crops.append(given.one(i).framed(framing))
        boxes.append(outline_box(weights > 0.5))
        if outlines:
            masks.append(framed_outline(weights, framing))
    centre, scale = object_frame(boxes, given)
    origin = torch.tensor(centre, dtype=torch.float32)
    to_unit = [Cameras(c.rotation, (c.centre - origin) / scale, c.focal, c.principal) for c in crops]
    stacked = torch.cat([c.to_rows() for c in to_unit])[None]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()[None] / 255.0
    views = ViewSet(pixels, stacked, torch.tensor([count]))
    known = Outlines(torch.from_numpy(np.stack(masks)), stacked[0]) if outlines else None
    return Prepared(views, UserFrame(centre, scale), [], outlines=known)
