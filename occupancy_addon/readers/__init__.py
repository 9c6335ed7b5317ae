"""One reader per kind of input: how the add-on finds it in the scene and reads it for the backend.

Each module defines a reader with the kind's name (the backend's ``backend/kinds`` has the same
names), its entry in the panel's Input menu, whether it claims an object on Auto, and its
``detect`` and ``read``. ``READERS`` lists them in the order Auto asks them; a new kind is a new
module here and one in ``backend/kinds``.
"""

from __future__ import annotations

from .base import Reader
from .image import ImageReader
from .pointcloud import PointCloudReader
from .views import ViewsReader
from .voxels import VoxelsReader

# Auto asks in this order: several selected views before one image empty
READERS: tuple[Reader, ...] = (ViewsReader(), ImageReader(), VoxelsReader(), PointCloudReader())
BY_KIND = {reader.kind: reader for reader in READERS}
BY_MODE = {reader.mode[0]: reader for reader in READERS}

__all__ = ["BY_KIND", "BY_MODE", "READERS", "Reader"]
