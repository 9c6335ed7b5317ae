"""Harness for tests that run in real Blender (the ``bpy`` module).

All tests here share one Blender session whose user folder is a throwaway one (tests/conftest.py).
Each test starts from an empty factory scene with factory preferences, which also disables any
add-on an earlier test enabled. Tests that install the extension uninstall it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import bpy
import pytest

EXTENSION_ID = "occupancy_reconstruct"
REPO_MODULE = "user_default"
ADDON_MODULE = f"bl_ext.{REPO_MODULE}.{EXTENSION_ID}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.blender)


@pytest.fixture(autouse=True)
def factory_scene() -> Iterator[None]:
    assert bpy.ops.wm.read_factory_settings(use_empty=True) == {"FINISHED"}
    yield


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """The extension zip, built the way a developer does: ``python build.py``."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, str(repo_root / "build.py"), "--output-dir", str(out)], check=True, cwd=repo_root
    )
    (zip_path,) = out.glob("*.zip")
    return zip_path


def user_repo_directory() -> Path:
    (repo,) = (repo for repo in bpy.context.preferences.extensions.repos if repo.module == REPO_MODULE)
    return Path(repo.directory)


@pytest.fixture
def installed_extension(extension_zip: Path) -> Iterator[str]:
    """Install and enable the zip like Preferences > Install from Disk does; yield the module name."""
    result = bpy.ops.extensions.package_install_files(
        filepath=str(extension_zip), repo=REPO_MODULE, enable_on_install=True
    )
    assert result == {"FINISHED"}
    yield ADDON_MODULE
    result = bpy.ops.extensions.package_uninstall(
        repo_directory=str(user_repo_directory()), pkg_id=EXTENSION_ID
    )
    assert result == {"FINISHED"}
    assert not (user_repo_directory() / EXTENSION_ID).exists()


@pytest.fixture
def backend_python_env(monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the add-on at this interpreter (it has the backend's dependencies) via the environment."""
    monkeypatch.setenv("OCC_BACKEND_PYTHON", sys.executable)
    return sys.executable


@pytest.fixture
def blender_user_folder() -> Path:
    """The throwaway folder Blender uses instead of ~/.config/blender."""
    return Path(os.environ["BLENDER_USER_RESOURCES"])


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory, repo_root: Path) -> Path:
    """A folder with a tiny random model of every kind, written by a separate process so that
    torch never loads into the process that holds Blender."""
    folder = tmp_path_factory.mktemp("tiny-weights")
    script = repo_root / "tests" / "blender" / "make_models.py"
    subprocess.run([sys.executable, str(script), str(folder)], check=True, cwd=repo_root)
    return folder


@pytest.fixture
def addon(
    installed_extension: str, backend_python_env: str, tiny_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The installed add-on's package, its backend running this Python with the tiny models.

    The backend process is stopped when the add-on is uninstalled after the test.
    """
    monkeypatch.setenv("OCC_WEIGHTS_DIR", str(tiny_weights))
    module = sys.modules[installed_extension]
    yield module
    module.runtime.shutdown()


def shipped_model(kind: str) -> Path:
    """The shipped model of ``kind`` inside the installed extension; skips the test without it
    (the shipped weights come from training runs and may not exist yet in a fresh checkout)."""
    path = user_repo_directory() / EXTENSION_ID / "backend" / "weights" / f"{kind}.safetensors"
    if not path.is_file():
        pytest.skip(f"no shipped {kind} model was packed into the extension ({path.name} missing)")
    return path


Interrupt = Callable[[Callable[[], object], Callable[[object], None]], object]


@pytest.fixture
def run_and_interrupt(addon: ModuleType) -> Interrupt:
    """``run(action, when_busy)``: run ``action`` (a blocking operator call) while another thread
    calls ``when_busy(task)`` once the backend reports progress."""

    def run(action: Callable[[], object], when_busy: Callable[[object], None]) -> object:
        def watch() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                task = addon.runtime.task
                if task is not None and task.job.pending.progress is not None:
                    when_busy(task)
                    return
                time.sleep(0.005)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            return action()
        finally:
            watcher.join(5)

    return run
