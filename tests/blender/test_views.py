"""Reference views in real Blender: cameras with background images and image empties, read with
the cameras that took them, checked against Blender's own projection."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

TARGET = Vector((1.0, 2.0, 0.5))  # where the cameras look, and where the object stands
WIDTH, HEIGHT = 64, 48


def project(row: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Picture coordinates (u, v) of world points through a camera row (backend/engine/views.py)."""
    rotation, centre, focal, principal = row[:9].reshape(3, 3), row[9:12], row[12], row[13:15]
    q = (points - centre) @ rotation.T
    return q[:, :2] / -q[:, 2:3] * focal + principal


def add_camera(name: str, location: tuple[float, float, float], **lens: object) -> bpy.types.Object:
    camera = bpy.data.objects.new(name, bpy.data.cameras.new(name))
    for key, value in lens.items():
        setattr(camera.data, key, value)
    camera.location = location
    camera.rotation_euler = (TARGET - Vector(location)).to_track_quat("-Z", "Y").to_euler()
    bpy.context.scene.collection.objects.link(camera)
    return camera


def picture(
    name: str, width: int = WIDTH, height: int = HEIGHT, disc_at: tuple[float, float] | None = None
) -> bpy.types.Image:
    """A white picture, with a dark disc centred at (x, y) in [0, 1] across it (y up) when given."""
    image = bpy.data.images.new(name, width, height)
    pixels = np.ones((height, width, 4), np.float32)
    if disc_at is not None:
        ys, xs = np.mgrid[0:height, 0:width]
        inside = (xs + 0.5 - disc_at[0] * width) ** 2 + (ys + 0.5 - disc_at[1] * height) ** 2 < (
            0.2 * height
        ) ** 2
        pixels[inside, :3] = (0.2, 0.3, 0.6)
    image.pixels.foreach_set(pixels.ravel())  # bottom row first, as Blender stores them
    return image


def with_background(camera: bpy.types.Object, image: bpy.types.Image) -> None:
    entry = camera.data.background_images.new()
    entry.image = image


def three_cameras() -> list[bpy.types.Object]:
    scene = bpy.context.scene
    scene.render.resolution_x, scene.render.resolution_y = WIDTH, HEIGHT
    cameras = [
        add_camera("A", (7.0, -4.0, 3.0), lens=35.0),
        add_camera(
            "B",
            (-5.0, -3.0, 1.0),
            lens=50.0,
            sensor_fit="VERTICAL",
            sensor_height=20.0,
            shift_x=0.1,
            shift_y=-0.05,
        ),
        add_camera("C", (2.0, 9.0, 6.0), lens=24.0, sensor_fit="HORIZONTAL", sensor_width=30.0),
    ]
    bpy.context.view_layer.update()  # their world matrices, for Blender's own projection
    return cameras


def test_camera_rows_project_as_blender_does(addon: ModuleType) -> None:
    cameras = three_cameras()
    cameras[2].scale = (2.0, 2.0, 2.0)  # a scaled camera sees the same
    bpy.context.view_layer.update()
    rng = np.random.default_rng(0)
    points = np.asarray(TARGET) + rng.uniform(-1.0, 1.0, (50, 3))
    longest = max(WIDTH, HEIGHT)
    for camera in cameras:
        row = addon.readers.views.camera_row(camera, WIDTH, HEIGHT)
        ours = project(row, points)
        theirs = np.array(
            [tuple(world_to_camera_view(bpy.context.scene, camera, Vector(p)))[:2] for p in points]
        )
        expected = (theirs - 0.5) * 2 * np.array([WIDTH, HEIGHT]) / longest
        np.testing.assert_allclose(ours, expected, atol=1e-4, err_msg=camera.name)


def test_selected_views_are_detected_and_read_with_their_cameras(addon: ModuleType) -> None:
    cameras = three_cameras()
    for camera in cameras[:2]:
        with_background(camera, picture(f"{camera.name}.png"))
    with_background(cameras[2], picture("small.png", WIDTH // 2, HEIGHT // 2))
    empty = bpy.data.objects.new("Front", None)
    empty.empty_display_type, empty.empty_display_size = "IMAGE", 3.0
    empty.data = picture("front.png", 32, 64)
    empty.location, empty.rotation_euler = (1.0, -3.0, 0.5), (math.radians(90), 0.0, 0.0)
    bpy.context.scene.collection.objects.link(empty)
    for obj in [*cameras, empty]:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = cameras[1]
    bpy.context.view_layer.update()

    choice = addon.scene_inputs.detect(bpy.context, cameras[1])
    assert (choice.kind, choice.description, choice.name) == ("views", "Views: 4 (A, B, C, Front)", "B")
    data = addon.scene_inputs.read(bpy.context, choice)
    views, rows = data.arrays["views"], data.arrays["cameras"]
    assert (
        views.shape == (4, 64, 64, 4)
        and rows.shape == (4, 15)
        and np.array_equal(data.matrix_world, np.eye(4))
    )
    # the small picture is padded to the others' size: its camera sees the same points half as wide
    full = addon.readers.views.camera_row(cameras[2], WIDTH // 2, HEIGHT // 2)
    np.testing.assert_allclose(rows[2, 12], full[12] / 2, rtol=1e-6)
    # the image empty's camera sees its picture's corners at the picture's corners (3 x 1.5 units)
    corners = np.array(empty.matrix_world)[:3, :3] @ np.array([[-0.75, -1.5, 0.0], [0.75, 1.5, 0.0]]).T
    seen = project(rows[3], corners.T + np.array(empty.location))
    np.testing.assert_allclose(seen, [[-0.5, -1.0], [0.5, 1.0]], atol=1e-6)


def test_large_pictures_are_shrunk_with_their_cameras(addon: ModuleType) -> None:
    """Pictures over MAX_IMAGE_SIDE are averaged down in whole blocks, which drops a few columns
    and rows at the right and bottom: every world point still lands on its own pixel, as Blender
    projects it onto the whole picture."""
    cameras = three_cameras()[:2]
    sizes = [(1030, 700), (901, 1540)]  # blocks of 3 and 4 pixels; 1 and 2 columns, 1 and 0 rows dropped
    for camera, (width, height) in zip(cameras, sizes, strict=True):
        with_background(camera, picture(f"{camera.name}-large.png", width, height))
        camera.select_set(True)
    choice = addon.scene_inputs.detect(bpy.context, cameras[0])
    data = addon.scene_inputs.read(bpy.context, choice)
    views, rows = data.arrays["views"], data.arrays["cameras"]
    side = views.shape[1]
    points = np.asarray(TARGET) + np.random.default_rng(1).uniform(-1.0, 1.0, (50, 3))
    for camera, row, (width, height) in zip(cameras, rows, sizes, strict=True):
        step = addon.readers.image.shrink_step(width, height)
        shrunk = np.array([width // step, height // step])
        bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y = width, height
        theirs = np.array(
            [tuple(world_to_camera_view(bpy.context.scene, camera, Vector(p)))[:2] for p in points]
        )
        on_picture = np.stack([theirs[:, 0] * width, (1 - theirs[:, 1]) * height], 1)  # pixels, top-left
        expected = on_picture / step + (side - shrunk) // 2  # shrunk, then padded to the stack's square
        uv = project(row, points)
        ours = np.stack([side / 2 + uv[:, 0] * side / 2, side / 2 - uv[:, 1] * side / 2], 1)
        np.testing.assert_allclose(ours, expected, atol=1e-3, err_msg=camera.name)


def test_one_image_empty_is_an_image_and_too_many_views_are_refused(addon: ModuleType) -> None:
    cameras = three_cameras()
    images = []
    for i, camera in enumerate(cameras):
        with_background(camera, picture(f"p{i}.png"))
        camera.select_set(True)
        images.append(camera)
    for i in range(2):
        extra = add_camera(f"D{i}", (3.0 + i, -6.0, 2.0), lens=40.0)
        with_background(extra, picture(f"d{i}.png"))
        extra.select_set(True)
    bpy.context.view_layer.objects.active = cameras[0]
    with pytest.raises(addon.errors.UserError, match="Select at most 4 reference views: 5 are selected"):
        addon.scene_inputs.detect(bpy.context, cameras[0])
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    cameras[0].select_set(True)
    with pytest.raises(addon.errors.UserError, match="is a camera object, which cannot be reconstructed"):
        addon.scene_inputs.detect(bpy.context, cameras[0])  # one view alone: Auto does not take it
    choice = addon.scene_inputs.detect(bpy.context, cameras[0], mode="VIEWS")
    assert choice.description == "Views: 1 (A)"


def test_without_a_views_model_the_active_image_empty_stays_a_picture(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empties = []
    for i in range(2):
        empty = bpy.data.objects.new(f"Ref{i}", None)
        empty.empty_display_type = "IMAGE"
        empty.data = picture(f"ref{i}.png")
        bpy.context.scene.collection.objects.link(empty)
        empty.select_set(True)
        empties.append(empty)
    bpy.context.view_layer.objects.active = empties[0]
    assert addon.scene_inputs.detect(bpy.context, empties[0]).kind == "views"
    no_views = tmp_path / "weights"
    no_views.mkdir()
    for model in Path(os.environ["OCC_WEIGHTS_DIR"]).glob("*.safetensors"):
        if model.stem != "views":
            shutil.copy(model, no_views / model.name)
    monkeypatch.setenv("OCC_WEIGHTS_DIR", str(no_views))
    addon.settings.forget_models()
    assert addon.scene_inputs.detect(bpy.context, empties[0]).kind == "image"


def test_views_reconstruct_where_they_agree_and_bad_pictures_change_nothing(addon: ModuleType) -> None:
    cameras = three_cameras()
    scene = bpy.context.scene
    for camera in cameras:
        x, y = tuple(world_to_camera_view(scene, camera, TARGET))[:2]
        with_background(camera, picture(f"{camera.name}.png", disc_at=(x, y)))
        camera.select_set(True)
    bpy.context.view_layer.objects.active = cameras[0]
    before = set(bpy.data.objects)
    assert bpy.ops.occupancy.reconstruct(resolution=32, threshold=0.05) == {"FINISHED"}
    result = bpy.context.active_object
    assert result.name == "A.occupancy" and result.occupancy.kind == "views"
    assert set(bpy.data.objects) - before == {result}
    if len(result.data.vertices):  # an untrained model: its surface, if any, stands around the target
        local = np.empty(len(result.data.vertices) * 3, np.float32)
        result.data.vertices.foreach_get("co", local)
        centre = local.reshape(-1, 3).mean(0)
        assert np.linalg.norm(centre - np.asarray(TARGET)) < 3.0

    blank = picture("blank.png")
    cameras[1].data.background_images[0].image = blank
    for obj in bpy.context.selected_objects:
        obj.select_set(False)
    for camera in cameras:
        camera.select_set(True)
    bpy.context.view_layer.objects.active = cameras[0]
    before = set(bpy.data.objects)
    with pytest.raises(RuntimeError, match="picture 2: no object found"):
        bpy.ops.occupancy.reconstruct(resolution=32)
    assert set(bpy.data.objects) == before
