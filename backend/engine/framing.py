"""Framing a user's picture the way the image model's training renders are framed.

A picture is shot and cropped however its owner likes: the object may fill a tenth of it or all
of it, off centre, on a coloured backdrop. The image model only ever saw its own renders: the
object near the centre, its silhouette's longest side between TRAINING_FILL's bounds of the
picture, on a plain light background. So before the model looks at a picture, the object is found
(alpha, a mask the user gives, or the backdrop's colour read from the picture's border), cut out
onto white, and cropped to the square nearest the whole picture that frames it as in training. A
picture already framed so is left whole: how much of it the object fills is evidence of its depth,
which the model learnt to read (on the procedural test renders, cropping every picture to one
fill cost 0.11 IoU).

The crop decides the result's place and size: the model predicts in the crop's camera frame, and
``Framing.frame`` maps that back to the camera frame of the whole picture (padded to a square), as
if the crop were a smaller sensor on the same camera. This treats the crop as if it were on the
optical axis (exact for a centred object, a small rotation otherwise), the usual weak-perspective
approximation for a reference picture whose real camera is unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..wire.constants import VIEW_WIDTH
from .types import InputError

# The silhouette box's longest side as a fraction of the picture's, over procedural training
# renders: 0.36 to 0.80, median 0.69, these the 5th and 95th percentiles (the 3D box's longest
# side is 1, which the silhouette shows whole or foreshortened).
TRAINING_FILL = (0.45, 0.80)
TRAINING_OFFSET = 0.06  # the silhouette box's centre lies this near the picture's (of its side)
BORDER_TOLERANCE = 0.1  # a pixel this far from the backdrop's colour (max over channels) is object
MIN_PLAIN_BORDER = 0.6  # the share of border pixels that must match the backdrop's colour
MIN_OBJECT_PIXELS = 4


@dataclass(frozen=True)
class Framing:
    """The model's square crop of a picture, in units of the picture's longest side.

    ``centre`` is measured from the picture's centre, x to the right and y up; ``side`` is the
    crop's side (1: the whole picture, padded to a square, as without framing).
    """

    centre: tuple[float, float]
    side: float

    @staticmethod
    def whole() -> Framing:
        return Framing((0.0, 0.0), 1.0)

    def to_picture(self) -> tuple[np.ndarray, float]:
        """(centre, scale) of the map from the crop's camera frame to the whole picture's."""
        return np.array([self.centre[0] * VIEW_WIDTH, self.centre[1] * VIEW_WIDTH, 0.0]), self.side


def object_mask(
    rgb: np.ndarray, alpha: np.ndarray | None = None, mask: np.ndarray | None = None
) -> np.ndarray:
    """Where the object is in an (H, W, 3) float picture in [0, 1], as (H, W) weights in [0, 1].

    A mask the user gives wins; then alpha, unless the picture is opaque everywhere; otherwise the
    backdrop's colour is the median colour of the picture's border, which most of the border must
    share.
    """
    if mask is not None:
        return mask_weights(mask, rgb.shape[:2])
    if alpha is not None and float(alpha.min()) < 0.99:
        return alpha.astype(np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    backdrop = np.median(border, axis=0)
    plain = (np.abs(border - backdrop).max(axis=1) <= BORDER_TOLERANCE).mean()
    if plain < MIN_PLAIN_BORDER:
        raise InputError(
            "no plain background along the picture's border to tell the object from: "
            "use a picture with transparency, a plain backdrop with some space around the object, or a mask"
        )
    distance = np.abs(rgb - backdrop).max(axis=2)
    # soft edges: anti-aliased pixels between backdrop and object get partial weight
    return np.clip((distance - BORDER_TOLERANCE / 2) / (BORDER_TOLERANCE / 2), 0.0, 1.0)


def mask_weights(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A mask the user gives for a picture of ``shape`` (H, W) -> weights in [0, 1] (its brightest
    value is the object). InputError if it does not fit the picture, marks nothing, or marks
    everything: a mask is the user's word on where the object is, so it is never second-guessed."""
    weights = np.asarray(mask, np.float32)
    if weights.shape != tuple(shape):
        raise InputError(f"the mask is {weights.shape[::-1]} pixels but the picture is {tuple(shape)[::-1]}")
    if not np.isfinite(weights).all():
        raise InputError("the mask holds NaN or infinite values")
    found = weights > 0.5 * float(weights.max())
    if float(weights.max()) <= 0 or int(found.sum()) < MIN_OBJECT_PIXELS:
        raise InputError("the mask is empty: it marks no object (white or opaque marks the object)")
    if found.all():
        raise InputError("the mask covers the whole picture: it must leave background around the object")
    return np.clip(weights / float(weights.max()), 0.0, 1.0)


def frame(rgb: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, Framing]:
    """The object cut out onto white, in the square crop nearest the whole (padded) picture that
    frames it as the training renders do: its fill clamped to TRAINING_FILL, its offset from the
    centre to TRAINING_OFFSET.

    Returns the square crop, (S, S, 3) float32 (S is the crop's side in the picture's pixels, at
    least 1), and its ``Framing``. Raises InputError if no object, or nothing but object, is found.
    """
    h, w = weights.shape
    found = weights > 0.5
    count = int(found.sum())
    if count < MIN_OBJECT_PIXELS:
        raise InputError("no object found in the picture: it looks like its background everywhere")
    if count == found.size:
        raise InputError("the object covers the whole picture: leave background around it, or give a mask")
    rows, cols = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    longest = float(max(h, w))
    extent = max(bottom - top, right - left)
    side = max(int(round(extent / np.clip(extent / longest, *TRAINING_FILL))), 1)
    cy, cx = (top + bottom) / 2.0, (left + right) / 2.0  # the object's box centre, then the crop's:
    cy += np.clip(h / 2.0 - cy, -TRAINING_OFFSET * side, TRAINING_OFFSET * side)
    cx += np.clip(w / 2.0 - cx, -TRAINING_OFFSET * side, TRAINING_OFFSET * side)
    y0, x0 = int(round(cy - side / 2.0)), int(round(cx - side / 2.0))
    centre = ((x0 + side / 2.0 - w / 2.0) / longest, -(y0 + side / 2.0 - h / 2.0) / longest)
    framing = Framing(centre, side / longest)
    cut = rgb * weights[..., None] + (1.0 - weights[..., None])  # onto white, like training's backdrop
    return crop(cut, framing, 1.0), framing


def crop(values: np.ndarray, framing: Framing, fill: float) -> np.ndarray:
    """The square ``framing`` cuts from a picture's (H, W, ...) values, as float32, ``fill``
    where it reaches past the picture's edges: the picture itself, or its object's weights."""
    h, w = values.shape[:2]
    longest = float(max(h, w))
    side = max(int(round(framing.side * longest)), 1)
    x0 = int(round(framing.centre[0] * longest + w / 2.0 - side / 2.0))
    y0 = int(round(-framing.centre[1] * longest + h / 2.0 - side / 2.0))
    square = np.full((side, side, *values.shape[2:]), fill, np.float32)
    ys, xs = slice(max(y0, 0), min(y0 + side, h)), slice(max(x0, 0), min(x0 + side, w))
    square[ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0] = values[ys, xs]
    return square
