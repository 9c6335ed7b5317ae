"""The add-on's settings turned into what the backend needs: interpreter, folders and models.

The preferences are read through ``context.preferences``, as Blender's own add-ons do, rather than
by importing the module that defines them: that module's ``draw`` shows what this one works out.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol, cast

import bpy

from . import runtime, storage
from .backend_link import BackendMissingError, backend_root
from .backend_python import BackendPython, BackendPythonNotFoundError, blender_python, find_backend_python
from .errors import UserError
from .model_files import ModelFile, from_ready, list_checkpoints, list_models, shipped_weights_dir
from .service import BackendConfig

DEFAULT_CACHE_MB = 512
_MODELS_TTL_S = 2.0  # the panel redraws often; model headers are re-read at most this often
_models_cache: dict[tuple[str, ...], tuple[float, list[ModelFile], list[str]]] = {}


class StoredPreferences(Protocol):
    """The stored preferences (``preferences.OCC_AddonPreferences``) as the add-on reads them."""

    backend_python: str
    device: str
    torch_build: str  # one of torch_build.CHOICES
    cache_mb: int
    half_precision: bool
    models_folder: str
    checkpoints: Any  # a collection of items with a ``filepath``
    checkpoint_index: int


def addon_preferences(context: bpy.types.Context) -> StoredPreferences | None:
    """This add-on's preferences, or None when the package was registered without being enabled
    as an add-on (then Blender keeps no preferences for it)."""
    if context.preferences is None or __package__ not in context.preferences.addons:
        return None
    return cast(StoredPreferences, context.preferences.addons[__package__].preferences)


def installed_venv() -> Path:
    """Where Install Backend puts the backend's environment (in the extension's user folder)."""
    return storage.user_dir(__package__, "venv", create=False)


def resolve_backend_python(context: bpy.types.Context) -> BackendPython:
    """The configured backend interpreter (see ``find_backend_python`` for the order)."""
    preferences = addon_preferences(context)
    preference = bpy.path.abspath(preferences.backend_python) if preferences else ""
    venvs = [
        backend_root() / ".venv",  # a development checkout
        installed_venv(),
    ]
    return find_backend_python(preference, os.environ, venvs, blender_python())


def backend_config(context: bpy.types.Context) -> BackendConfig:
    """How to start the backend; UserError when no interpreter is configured."""
    try:
        python = resolve_backend_python(context)
        root = backend_root()
    except BackendPythonNotFoundError as error:
        raise UserError(f"Backend not configured: {error}") from None
    except BackendMissingError as error:
        raise UserError(f"The extension is incomplete: {error}") from None
    preferences = addon_preferences(context)
    folder = bpy.path.abspath(preferences.models_folder) if preferences else ""
    log_dir = storage.user_dir(__package__, "logs")
    return BackendConfig(
        python=python.path,
        python_source=python.source,
        root=root,
        weights_dir=shipped_weights_dir(root, folder),
        device=preferences.device if preferences else "auto",
        cache_mb=preferences.cache_mb if preferences else DEFAULT_CACHE_MB,
        half=preferences.half_precision if preferences else True,
        log_path=log_dir / "backend.log",
    )


def checkpoint_paths(context: bpy.types.Context) -> list[str]:
    preferences = addon_preferences(context)
    if preferences is None:
        return []
    return [bpy.path.abspath(item.filepath) for item in preferences.checkpoints if item.filepath.strip()]


def available_models(context: bpy.types.Context) -> tuple[list[ModelFile], list[str]]:
    """The shipped models and the user's checkpoint files, with a message per unreadable file."""
    preferences = addon_preferences(context)
    try:
        root = backend_root()
    except BackendMissingError as error:
        return [], [str(error)]
    folder = bpy.path.abspath(preferences.models_folder) if preferences else ""
    weights = shipped_weights_dir(root, folder)
    checkpoints = checkpoint_paths(context)
    # Once the backend runs on this folder, its own list (from its ``ready`` message) is the truth.
    ready = runtime.service.ready_message()
    config = runtime.service.config
    reported = ready is not None and config is not None and config.weights_dir == weights
    key = (str(weights), str(reported), *checkpoints)
    now = time.monotonic()
    cached = _models_cache.get(key)
    if cached is not None and now - cached[0] < _MODELS_TTL_S:
        return cached[1], cached[2]
    if ready is not None and reported:
        users, problems = list_checkpoints(checkpoints)
        models = from_ready(weights, ready.fields["models"]) + users
    else:
        models, problems = list_models(weights, checkpoints)
    _models_cache.clear()
    _models_cache[key] = (now, models, problems)
    return models, problems


def forget_models() -> None:
    """Re-read the model files on the next look-up (after the user changed them)."""
    _models_cache.clear()
