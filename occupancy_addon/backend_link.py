"""Where the backend package lives, and access to what the add-on shares with it.

In the installed extension ``backend/`` sits inside the extension folder; in the repository it is
the sibling of ``occupancy_addon/``. The add-on never puts that folder on ``sys.path`` (a package
called ``backend`` could clash with anything else Blender loads). It hands the folder to the backend
process as its working directory and ``PYTHONPATH``, and loads the package ``backend/wire`` (the
wire protocol, the shared constants and the model-header reader) by file path under a private
module name, so both sides share one definition.

``backend/wire`` must therefore be self-contained: standard library and numpy only, relative
imports within the package, no torch.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ADDON_DIR = Path(__file__).resolve().parent

# Registered in sys.modules under the add-on's own namespace (dataclasses and pickle look classes
# up there), never as a top-level "backend" module; its submodules live under this name too.
PROTOCOL_MODULE_NAME = f"{__package__}._backend_wire"


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


def _forget(module_name: str) -> None:
    """Drop a package loaded under ``module_name`` and its submodules from ``sys.modules``."""
    for name in [n for n in sys.modules if n == module_name or n.startswith(module_name + ".")]:
        del sys.modules[name]


def load_package_from_folder(folder: Path, module_name: str) -> ModuleType:
    """Import the package in ``folder`` as ``module_name`` and register it in ``sys.modules``.

    Its relative imports resolve inside ``folder``, under ``module_name``. A package loaded before
    under that name is forgotten first, so that none of its submodules mixes with the new ones.
    """
    init = folder / "__init__.py"
    if not init.is_file():
        raise BackendMissingError(f"backend file not found: {init}")
    spec = importlib.util.spec_from_file_location(module_name, init, submodule_search_locations=[str(folder)])
    if spec is None or spec.loader is None:
        raise BackendMissingError(f"cannot load {folder} as a Python package")
    module = importlib.util.module_from_spec(spec)
    _forget(module_name)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        _forget(module_name)
        raise
    return module


def load_protocol(root: Path | None = None) -> ModuleType:
    """Return the backend's ``wire`` package, loading it on first use.

    Passing ``root`` loads (and caches) the package of that folder instead of the add-on's own
    backend.
    """
    cached = sys.modules.get(PROTOCOL_MODULE_NAME)
    if cached is not None and root is None:
        return cached
    folder = backend_root() if root is None else root
    return load_package_from_folder(folder / "backend" / "wire", PROTOCOL_MODULE_NAME)
