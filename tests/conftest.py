"""Test-wide set-up, loaded before any test module.

Blender reads ``BLENDER_USER_RESOURCES`` once, when ``bpy`` is first imported, and keeps its
preferences, extensions and caches there. Pointing it at a throwaway folder here, before any test
imports bpy, keeps the tests away from the machine's own Blender configuration.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

if "bpy" in sys.modules:
    raise RuntimeError("bpy was imported before tests/conftest.py could give Blender a throwaway user folder")

if os.environ.get("PYTEST_XDIST_WORKER"):  # the workers share the cores: one torch thread each
    os.environ.setdefault("OMP_NUM_THREADS", "1")

BLENDER_USER = Path(tempfile.mkdtemp(prefix="occ-test-blender-user-"))
os.environ["BLENDER_USER_RESOURCES"] = str(BLENDER_USER)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(BLENDER_USER, ignore_errors=True)


def _load_script(path: Path, name: str) -> ModuleType:
    """Import a file that is not part of a package (build.py, scripts/*.py) as module ``name``."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def build_script() -> ModuleType:
    """The repository's build.py, imported as a module."""
    return _load_script(REPO_ROOT / "build.py", "occ_build_script")


@pytest.fixture(scope="session")
def blender_scene_script() -> ModuleType:
    """scripts/blender_scene.py (the demo's Blender steps), imported as a module; imports bpy."""
    return _load_script(REPO_ROOT / "scripts" / "blender_scene.py", "occ_blender_scene_script")


@pytest.fixture(scope="session")
def gpu_check_script() -> ModuleType:
    """scripts/gpu_check.py, imported as a module."""
    return _load_script(REPO_ROOT / "scripts" / "gpu_check.py", "occ_gpu_check_script")
