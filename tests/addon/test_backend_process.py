"""Running ``python -m backend`` as a real subprocess of the backend interpreter."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

import backend
from occupancy_addon.backend_process import (
    BackendCommandError,
    backend_environment,
    probe_backend,
    run_backend,
    serve_arguments,
)


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_environment_replaces_python_path_and_drops_python_home(tmp_path: Path) -> None:
    env = backend_environment(
        tmp_path, {"PYTHONPATH": "/blender/site", "PYTHONHOME": "/blender", "HOME": "/h"}
    )
    assert env["PYTHONPATH"] == str(tmp_path)
    assert "PYTHONHOME" not in env
    assert env["HOME"] == "/h"


def test_probe_reports_the_backend_torch_and_devices(repo_root: Path) -> None:
    import torch

    info = probe_backend(Path(sys.executable), repo_root)
    assert info.version == backend.__version__
    assert info.torch.version == torch.__version__ and info.torch.cuda == torch.cuda.is_available()
    assert info.torch.device_text("cpu") == "CPU"
    if not info.torch.cuda:
        assert info.torch.device_text("auto") == "CPU"
        assert info.torch.device_text("cuda") == "CUDA asked for, but this torch sees no GPU"


def test_backend_is_taken_from_the_given_root(tmp_path: Path) -> None:
    """A copied backend (as inside the installed extension) is the one that runs."""
    (tmp_path / "backend").mkdir()
    answer = '{"backend": "9.9.9", "torch": "0.0", "cuda": false, "gpus": []}'
    (tmp_path / "backend" / "__main__.py").write_text(f"print({answer!r})\n")
    (tmp_path / "backend" / "__init__.py").write_text("")
    assert probe_backend(Path(sys.executable), tmp_path).version == "9.9.9"


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_failure_reports_the_last_error_line(tmp_path: Path) -> None:
    python = script(tmp_path / "python", "echo first >&2\necho 'No module named torch' >&2\nexit 3\n")
    with pytest.raises(BackendCommandError, match="No module named torch"):
        probe_backend(python, tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_silent_failure_reports_the_exit_status(tmp_path: Path) -> None:
    python = script(tmp_path / "python", "exit 4\n")
    with pytest.raises(BackendCommandError, match="exit status 4"):
        run_backend(python, tmp_path, ["--version"], timeout=10)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_hanging_backend_times_out(tmp_path: Path) -> None:
    python = script(tmp_path / "python", "exec sleep 30\n")
    with pytest.raises(BackendCommandError, match="did not finish within 0.5 s"):
        run_backend(python, tmp_path, ["--version"], timeout=0.5)


def test_interpreter_that_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(BackendCommandError, match="cannot start"):
        run_backend(tmp_path / "missing-python", tmp_path, ["--version"], timeout=10)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_empty_or_unreadable_output_is_an_error(tmp_path: Path) -> None:
    python = script(tmp_path / "python", "exit 0\n")
    with pytest.raises(BackendCommandError, match="printed nothing"):
        probe_backend(python, tmp_path)
    python = script(tmp_path / "python", "echo '{\"backend\": 1}'\n")
    with pytest.raises(BackendCommandError, match="unreadable answer"):
        probe_backend(python, tmp_path)


@pytest.mark.skipif(sys.platform == "win32", reason="uses a shell script as the interpreter")
def test_a_backend_without_torch_says_so(repo_root: Path, tmp_path: Path) -> None:
    """The real ``info`` command in an interpreter where torch cannot be imported."""
    code = "import sys; sys.modules['torch'] = None; from backend.__main__ import main; sys.exit(main())"
    python = script(tmp_path / "python", f'shift 2\nexec "{sys.executable}" -c "{code}" "$@"\n')
    with pytest.raises(BackendCommandError, match="torch cannot be imported"):
        probe_backend(python, repo_root)


def test_serve_arguments() -> None:
    assert serve_arguments(Path("/w"), "cpu", 256) == [
        "serve",
        "--weights-dir",
        "/w",
        "--device",
        "cpu",
        "--cache-mb",
        "256",
    ]
    assert serve_arguments(Path("/w"), "auto", 512, half=True)[-3:] == ["--cache-mb", "512", "--half"]
