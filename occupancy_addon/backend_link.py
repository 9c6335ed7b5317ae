"""Where the backend package lives, and access to its wire protocol.

In the installed extension ``backend/`` sits inside the extension folder; in the repository it is
the sibling of ``occupancy_addon/``. The add-on never puts that folder on ``sys.path`` (a package
called ``backend`` could clash with anything else Blender loads). It hands the folder to the backend
process as its working directory and ``PYTHONPATH``, and loads ``backend/protocol.py`` by file path
under a private module name, so both sides share one protocol definition.

``backend/protocol.py`` must therefore be self-contained: standard library and numpy only, no
relative imports.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ADDON_DIR = Path(__file__).resolve().parent

# Registered in sys.modules under the add-on's own namespace (dataclasses and pickle look classes
# up there), never as a top-level "backend" module.
PROTOCOL_MODULE_NAME = f"{__package__}._backend_protocol"


class BackendMissingError(RuntimeError):
    """The backend package (or one of its files) is not where the add-on expects it."""


def backend_root(addon_dir: Path = ADDON_DIR) -> Path:
    """Return the folder that contains the ``backend`` package.

    Looks inside ``addon_dir`` first (installed extension), then next to it (repository checkout).
    """
    for candidate in (addon_dir, addon_dir.parent):
        if (candidate / "backend" / "__init__.py").is_file():
            return candidate
    raise BackendMissingError(
        f"no 'backend' package found in {addon_dir} or {addon_dir.parent}; "
        "the extension zip must contain a backend/ folder"
    )


def load_module_from_file(path: Path, module_name: str) -> ModuleType:
    """Import the single file ``path`` as ``module_name`` and register it in ``sys.modules``."""
    if not path.is_file():
        raise BackendMissingError(f"backend file not found: {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise BackendMissingError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_protocol(root: Path | None = None) -> ModuleType:
    """Return the backend's ``protocol`` module, loading it on first use.

    Loaded lazily so the add-on registers even before the protocol exists or when the backend
    folder is broken; the error then surfaces in the operator that needs it. Passing ``root``
    loads (and caches) the protocol of that folder instead of the add-on's own backend.
    """
    cached = sys.modules.get(PROTOCOL_MODULE_NAME)
    if cached is not None and root is None:
        return cached
    folder = backend_root() if root is None else root
    return load_module_from_file(folder / "backend" / "protocol.py", PROTOCOL_MODULE_NAME)
