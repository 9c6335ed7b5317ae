"""Where the add-on may write files.

Never into the extension folder: system repositories can be read-only and upgrades replace the
folder. Blender gives every extension a user folder that survives upgrades and is removed on
uninstall; this module is the one place that asks for it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy

# Used when the package was imported directly rather than as an extension (bl_ext.<repo>.<id>);
# Blender then has no user folder for it and extension_path_user raises.
FALLBACK_ROOT = Path(tempfile.gettempdir()) / "occupancy_reconstruct"


def is_extension_package(package: str) -> bool:
    return package.startswith("bl_ext.") and package.count(".") >= 2


def user_dir(package: str, subpath: str = "", create: bool = True) -> Path:
    """The add-on's own storage folder, or ``subpath`` inside it."""
    if is_extension_package(package):
        return Path(bpy.utils.extension_path_user(package, path=subpath, create=create))
    folder = FALLBACK_ROOT / subpath if subpath else FALLBACK_ROOT
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    return folder
