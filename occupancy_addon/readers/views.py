"""Reference views: 2 to 4 selected image empties or cameras with a background image, read with
the cameras that took them, so that the result lands in the world where the views agree.

A camera is read as Blender models it: its place and orientation, its lens and sensor (the
sensor's fit decides which side the field of view spans) and its shift. An image empty is a
reference picture seen straight on, as in an orthographic front, side or top view: it becomes a
camera far behind the picture (``FAR``), looking through it, which sees the object almost as
the orthographic view does. Camera rows follow ``backend/engine/views.py``: a world-to-camera
rotation, the camera's position, then focal length and principal point in units of half the
picture's longest side.

Pictures go on the wire as one stack (``backend/wire/views.py``: each padded to the largest one's
square, its camera adjusted to the padded picture exactly).
"""

from __future__ import annotations

from typing import Any

import bpy
import numpy as np

from .. import settings
from ..backend_link import load_protocol
from ..errors import UserError
from ..placement import image_extent
from ..scene_data import InputChoice, InputData, image_size, is_image_empty, world_matrix
from .base import Context, MaybeImage, MaybeObject, Reader
from .image import check_image_size, kept_extent, read_image

FAR = 100.0  # an image empty's camera stands this many picture sizes behind it


def background_image(obj: bpy.types.Object) -> bpy.types.Image | None:
    """The first shown background image of a camera object, if any."""
    camera = obj.data
    if not isinstance(camera, bpy.types.Camera):
        return None
    for entry in camera.background_images:
        if entry.show_background_image and entry.source == "IMAGE" and entry.image is not None:
            image: bpy.types.Image = entry.image
            return image
    return None


def view_picture(obj: bpy.types.Object) -> bpy.types.Image | None:
    """The picture ``obj`` holds as a reference view: an image empty's image, a camera's background."""
    if is_image_empty(obj):
        return obj.data if isinstance(obj.data, bpy.types.Image) else None
    return background_image(obj)


def selected_views(context: Context) -> list[bpy.types.Object]:
    """The selected objects that hold a reference picture, by name."""
    chosen = getattr(context, "selected_objects", None) or []
    return sorted((o for o in chosen if view_picture(o) is not None), key=lambda o: o.name)


class ViewsReader(Reader):
    kind = "views"
    mode = (
        "VIEWS",
        "Views",
        "Use the selected image empties and cameras with a background image: 1 to 4 views of one object",
    )

    def claims(self, obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> bool:
        """On Auto: two or more selected views, the active object one of them, and a views model
        to read them (without one, an active image empty stays a single picture)."""
        views = selected_views(context)
        if len(views) < 2 or obj not in views:
            return False
        models, _ = settings.available_models(context)
        return any(m.kind == self.kind for m in models)

    def detect(self, obj: MaybeObject, context: Context, evaluated: bool, image: MaybeImage) -> InputChoice:
        views = selected_views(context)
        if not views:
            raise UserError(
                "No reference views selected: select image empties or cameras with a background image"
            )
        most = load_protocol().MAX_VIEWS
        if len(views) > most:
            raise UserError(f"Select at most {most} reference views: {len(views)} are selected")
        for view in views:
            picture = view_picture(view)
            assert picture is not None
            check_image_size(picture)
        names = ", ".join(v.name for v in views)
        owner = obj if obj in views else views[0]
        return InputChoice(
            self.kind,
            f"Views: {len(views)} ({names})",
            owner.name,
            obj=owner,
            sources=[v.name for v in views],
        )

    def read(self, context: bpy.types.Context, choice: InputChoice, evaluated: bool) -> InputData:
        views = [bpy.data.objects[name] for name in choice.sources]
        protocol = load_protocol()
        pictures, cameras = [], []
        for view in views:
            picture = view_picture(view)
            if picture is None:
                raise UserError(f"'{view.name}' no longer holds a picture")
            pictures.append(read_image(picture))
            width, height = image_size(picture)
            kept = (0, 0, *kept_extent(width, height))  # the part of the picture read
            cameras.append(protocol.crop_rows(camera_row(view, width, height), (width, height), kept)[0])
        stacked, rows = protocol.pad_views(pictures, np.stack(cameras))
        return InputData(choice, {"views": stacked, "cameras": rows}, np.eye(4))


def camera_row(obj: bpy.types.Object, width: int, height: int) -> np.ndarray:
    """The 15 numbers of ``obj``'s view of its picture (width x height pixels)."""
    matrix = world_matrix(obj.matrix_world)
    axes = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)  # columns: right, up, backward
    longest = max(width, height, 1)
    if obj.type == "CAMERA":
        data: Any = obj.data
        if data.type != "PERSP":
            raise UserError(f"The camera '{obj.name}' is not a perspective camera: use a perspective one")
        fit = data.sensor_fit
        if fit == "HORIZONTAL" or (fit == "AUTO" and width >= height):
            spans, sensor = width, data.sensor_width
        elif fit == "VERTICAL":
            spans, sensor = height, data.sensor_height
        else:  # AUTO on a tall picture: the sensor's width spans the longest side, its height
            spans, sensor = height, data.sensor_width
        focal = 2.0 * data.lens / sensor * spans / longest  # the sensor spans `spans` pixels
        principal = -2.0 * np.array([data.shift_x, data.shift_y]) * spans / longest  # in sensor sizes
        centre = matrix[:3, 3]
    else:  # an image empty: its picture seen straight on, from far behind its plane
        local_w, local_h = image_extent(float(obj.empty_display_size), width, height)
        offset: Any = obj.empty_image_offset
        local = np.array([(offset[0] + 0.5) * local_w, (offset[1] + 0.5) * local_h, 0.0])
        middle = matrix[:3, :3] @ local + matrix[:3, 3]
        size = max(local_w, local_h) * float(np.linalg.norm(matrix[:3, 0]))  # its longest side, in the world
        distance = FAR * size
        centre = middle + axes[:, 2] * distance
        focal = distance / (size / 2.0)
        principal = np.zeros(2)
    return np.concatenate([axes.T.reshape(-1), centre, [focal], principal])
