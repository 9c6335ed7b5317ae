"""Locating the backend package and loading its wire package by file path."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from occupancy_addon import backend_link
from occupancy_addon.backend_link import BackendMissingError, backend_root, load_protocol

PROTOCOL_SOURCE = """
from dataclasses import dataclass

from .version import VERSION


@dataclass
class Request:
    kind: str
"""


def make_backend(folder: Path, protocol: str | None = PROTOCOL_SOURCE) -> Path:
    (folder / "backend").mkdir(parents=True)
    (folder / "backend" / "__init__.py").write_text("")
    if protocol is not None:
        (folder / "backend" / "wire").mkdir()
        (folder / "backend" / "wire" / "__init__.py").write_text(protocol)
        (folder / "backend" / "wire" / "version.py").write_text("VERSION = 7\n")
    return folder


def loaded_names() -> dict[str, ModuleType]:
    """The wire package and its submodules as registered in ``sys.modules``."""
    name = backend_link.PROTOCOL_MODULE_NAME
    return {n: m for n, m in sys.modules.items() if n == name or n.startswith(name + ".")}


@pytest.fixture
def clean_protocol_module() -> Iterator[None]:
    """Forget a wire package loaded by a test, so tests don't see each other's."""
    saved = loaded_names()
    for name in saved:
        del sys.modules[name]
    yield
    for name in loaded_names():
        del sys.modules[name]
    sys.modules.update(saved)


def test_repository_layout_finds_the_sibling_backend(repo_root: Path) -> None:
    assert backend_root() == repo_root


def test_installed_layout_finds_backend_inside_the_extension(tmp_path: Path) -> None:
    extension = make_backend(tmp_path / "extensions" / "occupancy_reconstruct")
    # a backend next to the extension folder must not win over the bundled one
    make_backend(tmp_path / "extensions")
    assert backend_root(extension) == extension


def test_missing_backend_names_both_places(tmp_path: Path) -> None:
    addon = tmp_path / "addon"
    addon.mkdir()
    with pytest.raises(BackendMissingError) as error:
        backend_root(addon)
    assert str(addon) in str(error.value) and str(tmp_path) in str(error.value)


@pytest.mark.usefixtures("clean_protocol_module")
def test_protocol_loads_under_a_private_name(tmp_path: Path) -> None:
    root = make_backend(tmp_path)
    protocol = load_protocol(root)
    assert protocol.VERSION == 7
    assert protocol.__name__ == backend_link.PROTOCOL_MODULE_NAME
    assert not protocol.__name__.startswith("backend")
    # its relative imports resolve inside the package, under the private name
    assert f"{backend_link.PROTOCOL_MODULE_NAME}.version" in sys.modules
    # dataclasses resolve their module through sys.modules, so this only works when registered
    assert protocol.Request(kind="pointcloud").kind == "pointcloud"
    # later calls without a root reuse the loaded module
    assert load_protocol() is protocol


@pytest.mark.usefixtures("clean_protocol_module")
def test_missing_protocol_file_is_reported_with_its_path(tmp_path: Path) -> None:
    root = make_backend(tmp_path, protocol=None)
    with pytest.raises(BackendMissingError, match=re.escape(str(root / "backend" / "wire" / "__init__.py"))):
        load_protocol(root)
    assert backend_link.PROTOCOL_MODULE_NAME not in sys.modules


@pytest.mark.usefixtures("clean_protocol_module")
def test_protocol_that_fails_to_import_leaves_nothing_behind(tmp_path: Path) -> None:
    root = make_backend(tmp_path, protocol="raise ImportError('needs torch')\n")
    with pytest.raises(ImportError, match="needs torch"):
        load_protocol(root)
    assert backend_link.PROTOCOL_MODULE_NAME not in sys.modules
    assert not loaded_names()
