"""Resolving the backend interpreter: preference, then OCC_BACKEND_PYTHON, then known venvs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from occupancy_addon.backend_python import (
    ENV_VAR,
    BackendPython,
    BackendPythonNotFoundError,
    find_backend_python,
    venv_python,
)


def make_interpreter(path: Path) -> Path:
    """A real executable file standing where an interpreter would."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def venv_a(tmp_path: Path) -> Path:
    venv = tmp_path / "a" / ".venv"
    make_interpreter(venv_python(venv))
    return venv


def test_preference_wins_over_environment_and_venvs(tmp_path: Path, venv_a: Path) -> None:
    chosen = make_interpreter(tmp_path / "chosen" / "python")
    other = make_interpreter(tmp_path / "other" / "python")
    found = find_backend_python(str(chosen), {ENV_VAR: str(other)}, [venv_a])
    assert found.path == chosen
    assert found.source == "preferences"


def test_environment_used_when_preference_empty(tmp_path: Path, venv_a: Path) -> None:
    from_env = make_interpreter(tmp_path / "env" / "python")
    found = find_backend_python("  ", {ENV_VAR: str(from_env)}, [venv_a])
    assert (found.path, found.source) == (from_env, ENV_VAR)


def test_first_existing_venv_used_last(tmp_path: Path, venv_a: Path) -> None:
    missing_venv = tmp_path / "missing" / ".venv"
    found = find_backend_python("", {}, [missing_venv, venv_a])
    assert found.path == venv_python(venv_a)
    assert found.source == str(venv_a)


def test_nothing_found_says_what_to_do_and_where_it_looked(tmp_path: Path) -> None:
    missing_venv = tmp_path / "nothing" / ".venv"
    with pytest.raises(BackendPythonNotFoundError) as error:
        find_backend_python("", {}, [missing_venv])
    message = str(error.value)
    assert "Backend Python" in message and ENV_VAR in message
    assert str(venv_python(missing_venv)) in message


def test_broken_preference_is_an_error_not_skipped(tmp_path: Path, venv_a: Path) -> None:
    missing = tmp_path / "no" / "python"
    with pytest.raises(BackendPythonNotFoundError, match="from preferences does not exist") as error:
        find_backend_python(str(missing), {}, [venv_a])
    assert str(missing) in str(error.value)


def test_broken_environment_variable_is_an_error(tmp_path: Path, venv_a: Path) -> None:
    with pytest.raises(BackendPythonNotFoundError, match=f"from {ENV_VAR} does not exist"):
        find_backend_python("", {ENV_VAR: str(tmp_path / "gone")}, [venv_a])


def test_folder_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(BackendPythonNotFoundError, match="is a folder"):
        find_backend_python(str(tmp_path), {}, [])


@pytest.mark.skipif(sys.platform == "win32", reason="Windows has no execute permission bit")
def test_non_executable_file_is_rejected(tmp_path: Path) -> None:
    plain = tmp_path / "python"
    plain.write_text("")
    plain.chmod(0o644)
    with pytest.raises(BackendPythonNotFoundError, match="not executable"):
        find_backend_python(str(plain), {}, [])


def test_user_home_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    interpreter = make_interpreter(tmp_path / "bin" / "python")
    assert find_backend_python("~/bin/python", {}, []).path == interpreter


def test_blender_python_is_the_last_resort(tmp_path: Path, venv_a: Path) -> None:
    fallback = BackendPython(path=Path(sys.executable), source="Blender's Python")
    assert find_backend_python("", {}, [tmp_path / "missing"], fallback) == fallback
    assert find_backend_python("", {}, [venv_a], fallback).path == venv_python(venv_a)


def test_blender_python_is_offered_only_with_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    from occupancy_addon import backend_python

    monkeypatch.setattr(backend_python, "torch_in_blender_python", lambda: False)
    assert backend_python.blender_python() is None
    monkeypatch.setattr(backend_python, "torch_in_blender_python", lambda: True)
    found = backend_python.blender_python()
    assert found is not None and found.path == Path(sys.executable)
