"""Where an image reconstruction goes: the image model's camera frame in an image empty's frame."""

from __future__ import annotations

import math

import numpy as np

from backend.data import render
from backend.engine.grid import PADDING
from occupancy_addon import placement


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def test_camera_constants_match_the_backend() -> None:
    assert placement.CAMERA_DISTANCE == render.CAMERA_DISTANCE
    assert placement.FOV_DEGREES == render.FOV_DEGREES
    assert placement.HALF_BOX == (1 + PADDING) / 2


def test_the_view_covers_the_picture_and_the_cube_stands_in_front() -> None:
    matrix = placement.image_result_matrix(display_size=4.0, width_px=200, height_px=100)
    view = placement.VIEW_WIDTH
    assert view == math.tan(math.radians(20)) * 4
    # the edge of the camera's view at the object's depth lands on the picture's long edge
    edge = apply(matrix, np.array([[view / 2, 0.0, 0.0]]))[0]
    assert np.allclose(edge[:2], [2.0, 0.0])
    # the padded unit cube lies entirely in front of the picture plane, touching it
    cube = np.array([[x, y, z] for x in (-0.55, 0.55) for y in (-0.55, 0.55) for z in (-0.55, 0.55)])
    depth = apply(matrix, cube)[:, 2]
    assert np.isclose(depth.min(), 0.0) and depth.max() > 0


def test_image_offset_moves_the_result_with_the_picture() -> None:
    centred = placement.image_result_matrix(2.0, 100, 50)
    corner = placement.image_result_matrix(2.0, 100, 50, offset=(0.0, 0.0))  # lower-left on the origin
    assert np.allclose(corner[:3, 3] - centred[:3, 3], [1.0, 0.5, 0.0])


def test_front_view_faces_the_viewer_on_minus_y() -> None:
    matrix = placement.front_view_matrix((1.0, 2.0, 3.0))
    up, towards_viewer = matrix[:3, 1], matrix[:3, 2]
    assert np.allclose(up / np.linalg.norm(up), [0, 0, 1]) and np.allclose(
        towards_viewer / np.linalg.norm(towards_viewer), [0, -1, 0]
    )
