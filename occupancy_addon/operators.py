"""Operators of the add-on."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import bpy

from . import storage
from .backend_link import BackendMissingError, backend_root
from .backend_process import BackendCommandError, backend_version
from .backend_python import BackendPython, BackendPythonNotFoundError, find_backend_python
from .preferences import addon_preferences

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems


def resolve_backend_python(context: bpy.types.Context) -> BackendPython:
    """The configured backend interpreter (see ``find_backend_python`` for the order)."""
    preferences = addon_preferences(context)
    preference = bpy.path.abspath(preferences.backend_python) if preferences else ""
    venvs = [
        backend_root() / ".venv",  # a development checkout
        storage.user_dir(__package__, "venv", create=False),  # where a backend install would go
    ]
    return find_backend_python(preference, os.environ, venvs)


class OCC_OT_check_backend(bpy.types.Operator):
    """Start the backend Python once and report the backend version it runs"""

    bl_idname = "occupancy.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        try:
            python = resolve_backend_python(context)
            version = backend_version(python.path, backend_root())
        except (BackendPythonNotFoundError, BackendMissingError, BackendCommandError) as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Backend {version} runs with {python.path} (from {python.source})")
        return {"FINISHED"}


CLASSES = (OCC_OT_check_backend,)
