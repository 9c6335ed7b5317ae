"""Where a reconstruction from an image goes in the scene (numpy only, no bpy).

The image model returns its mesh in its camera frame (backend/wire/constants.py): the camera sits at
(0, 0, CAMERA_DISTANCE) and looks down -z, x to the right and y up, and the object fills a unit cube
around the origin. An image empty shows its picture in its local xy plane, seen from +z, which is
the same convention. So the mesh goes into the empty's local frame scaled so that the camera's view
at the object's distance covers the picture, and moved forward by half the (padded) unit cube so
that it stands in front of the picture instead of cutting through it.
"""

from __future__ import annotations

import numpy as np

from .backend_link import load_protocol

CAMERA_DISTANCE = load_protocol().CAMERA_DISTANCE  # the image models' camera, one definition for both sides
FOV_DEGREES = load_protocol().FOV_DEGREES
VIEW_WIDTH = load_protocol().VIEW_WIDTH  # the camera's view at the object's centre
# Half the side of the cube the backend extracts in: the unit cube plus its padding
# (backend/engine/grid.py). Moving the mesh forward by this much keeps all of it in front.
HALF_BOX = 0.55


def image_extent(display_size: float, width_px: int, height_px: int) -> tuple[float, float]:
    """Width and height of an image empty's picture in its local units (longest side = size)."""
    longest = max(width_px, height_px, 1)
    return display_size * width_px / longest, display_size * height_px / longest


def image_result_matrix(
    display_size: float, width_px: int, height_px: int, offset: tuple[float, float] = (-0.5, -0.5)
) -> np.ndarray:
    """4x4 matrix from the image model's camera frame to an image empty's local frame.

    ``offset`` is the empty's image offset (Blender's ``empty_image_offset``): the picture's
    lower-left corner in units of its own size, (-0.5, -0.5) when centred on the empty.
    """
    width, height = image_extent(display_size, width_px, height_px)
    centre = np.array([(offset[0] + 0.5) * width, (offset[1] + 0.5) * height, 0.0])
    # The model pads a non-square image to a square before it looks at it: the view covers the
    # longest side.
    scale = max(width, height) / VIEW_WIDTH
    matrix = np.eye(4)
    matrix[:3, :3] *= scale
    matrix[:3, 3] = centre + np.array([0.0, 0.0, HALF_BOX * scale])
    return matrix


def front_view_matrix(location: tuple[float, float, float], display_size: float = 1.0) -> np.ndarray:
    """Local frame of a picture seen from Blender's front view (looking along +y, z up) at
    ``location``: used for an image chosen in the panel, which has no empty of its own."""
    rotation = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # x by +90 degrees
    frame = np.eye(4)
    frame[:3, :3] = rotation
    frame[:3, 3] = location
    return frame @ image_result_matrix(display_size, 1, 1)
