"""Finding the external Python interpreter that runs the backend.

The backend needs torch, so it runs in a Python the user chooses (CPU or CUDA build), never in
Blender's own interpreter: installing torch there breaks on Blender upgrades and loads torch's
native libraries into Blender's process.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "OCC_BACKEND_PYTHON"


class BackendPythonNotFoundError(RuntimeError):
    """No usable backend interpreter; the message says where it looked and what to do."""


@dataclass(frozen=True)
class BackendPython:
    path: Path
    source: str  # where it came from, for messages: "preferences", "OCC_BACKEND_PYTHON", a venv path


def venv_python(venv: Path) -> Path:
    """The interpreter inside the virtual environment ``venv`` (which may not exist)."""
    if sys.platform == "win32":
        return venv / "Scripts" / "python.exe"
    return venv / "bin" / "python"


def _checked(path: Path, source: str) -> BackendPython:
    if not path.exists():
        raise BackendPythonNotFoundError(f"backend Python from {source} does not exist: {path}")
    if path.is_dir():
        raise BackendPythonNotFoundError(
            f"backend Python from {source} is a folder, expected an interpreter file: {path}"
        )
    if not os.access(path, os.X_OK):
        raise BackendPythonNotFoundError(f"backend Python from {source} is not executable: {path}")
    return BackendPython(path=path, source=source)


def torch_in_blender_python() -> bool:
    """Whether Blender's own interpreter could import torch, checked without importing it (torch's
    native libraries must never load into Blender's process)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def blender_python() -> BackendPython | None:
    """Blender's own interpreter as a backend candidate, when torch is installed there."""
    executable = Path(sys.executable) if sys.executable else None
    if executable is None or not executable.is_file() or not torch_in_blender_python():
        return None
    return BackendPython(path=executable, source="Blender's Python")


def find_backend_python(
    preference: str,
    environ: Mapping[str, str],
    venvs: Iterable[Path],
    fallback: BackendPython | None = None,
) -> BackendPython:
    """Resolve the backend interpreter.

    Order: the add-on preference (an absolute path), else the ``OCC_BACKEND_PYTHON`` variable in
    ``environ``, else the first of ``venvs`` that holds an interpreter, else ``fallback`` (Blender's
    own Python when torch is installed there). An explicit choice that is broken is an error
    rather than silently skipped, so the user learns their setting is wrong.
    """
    if preference.strip():
        return _checked(Path(preference.strip()).expanduser(), "preferences")
    from_env = environ.get(ENV_VAR, "").strip()
    if from_env:
        return _checked(Path(from_env).expanduser(), ENV_VAR)
    searched = []
    for venv in venvs:
        candidate = venv_python(venv)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return BackendPython(path=candidate, source=str(venv))
        searched.append(str(candidate))
    if fallback is not None:
        return fallback
    raise BackendPythonNotFoundError(
        "no backend Python configured: set 'Backend Python' in the add-on preferences to a Python "
        f"with torch installed, or set {ENV_VAR} (also looked for: {', '.join(searched) or 'nothing'})"
    )
