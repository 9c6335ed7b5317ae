"""Install Backend's choice of torch build, for each platform and preference (no network)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from occupancy_addon.backend_python import venv_python
from occupancy_addon.installer import REQUIREMENTS, install_steps
from occupancy_addon.torch_build import (
    CHOICES,
    CPU_INDEX,
    CUDA_INDEX,
    TorchBuildError,
    choose_build,
    describe_version,
    has_nvidia_gpu,
    read_record,
    record_script,
)

PLATFORMS = ("win32", "linux", "darwin")
# (platform, preference, NVIDIA GPU) -> build; macOS never has CUDA
EXPECTED = {
    **{(p, "AUTO", True): "CUDA" for p in ("win32", "linux")},
    **{(p, "AUTO", False): "CPU" for p in ("win32", "linux")},
    **{("darwin", "AUTO", gpu): "DEFAULT" for gpu in (True, False)},
    **{(p, "CUDA", gpu): "CUDA" for p in ("win32", "linux") for gpu in (True, False)},
    **{(p, "CPU", gpu): "CPU" for p in ("win32", "linux") for gpu in (True, False)},
    **{("darwin", "CPU", gpu): "DEFAULT" for gpu in (True, False)},
    **{(p, "DEFAULT", gpu): "DEFAULT" for p in PLATFORMS for gpu in (True, False)},
}
INDEX_ARGS = {"CUDA": ["--index-url", CUDA_INDEX], "CPU": ["--index-url", CPU_INDEX], "DEFAULT": []}


@pytest.mark.parametrize(("platform", "choice", "gpu"), sorted(EXPECTED))
def test_each_platform_and_preference_installs_its_build(
    tmp_path: Path, platform: str, choice: str, gpu: bool
) -> None:
    build = choose_build(choice, platform, gpu)
    assert build == EXPECTED[platform, choice, gpu]
    venv = tmp_path / "venv"
    create, torch, others, check = install_steps(Path("/opt/blender/python"), venv, build)
    assert create.command == ["/opt/blender/python", "-m", "venv", str(venv)]
    pip = [str(venv_python(venv)), "-m", "pip", "--disable-pip-version-check", "--no-input", "install"]
    assert torch.command == [*pip, "--progress-bar", "off", "torch>=2.2", *INDEX_ARGS[build]]
    # the other packages come from PyPI, and never bring another torch
    assert others.command == [*pip, "--progress-bar", "off", *REQUIREMENTS[1:]]
    assert check.command[0] == str(venv_python(venv))  # never Blender's own Python
    assert sum(step.share for step in (create, torch, others, check)) == pytest.approx(1.0)


def test_cuda_on_macos_and_unknown_choices_are_refused() -> None:
    with pytest.raises(TorchBuildError, match="no CUDA build of torch for macOS"):
        choose_build("CUDA", "darwin", False)
    with pytest.raises(TorchBuildError, match="unknown torch build 'ROCM'"):
        choose_build("ROCM", "linux", True)
    assert set(CHOICES) == {"AUTO", "CUDA", "CPU", "DEFAULT"}


def test_an_nvidia_driver_is_found_without_torch(tmp_path: Path) -> None:
    bin_dir, proc = tmp_path / "bin", tmp_path / "proc-driver-nvidia"
    bin_dir.mkdir()
    assert not has_nvidia_gpu("linux", path=str(bin_dir), proc_driver=proc)
    proc.mkdir()  # Linux's driver is loaded
    assert has_nvidia_gpu("linux", path=str(bin_dir), proc_driver=proc)
    assert not has_nvidia_gpu("win32", path=str(bin_dir), proc_driver=proc)  # /proc is Linux's only
    tool = bin_dir / ("nvidia-smi.exe" if os.name == "nt" else "nvidia-smi")
    tool.write_text("#!/bin/sh\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    assert has_nvidia_gpu("win32", path=str(bin_dir), proc_driver=proc)
    assert not has_nvidia_gpu("darwin", path=str(bin_dir), proc_driver=proc)


@pytest.mark.parametrize(
    ("version", "words"),
    [
        ("2.7.1+cu128", "CUDA 12.8 build"),
        ("2.5.0+cu118", "CUDA 11.8 build"),
        ("2.9.0+cu130", "CUDA 13.0 build"),
        ("2.13.0+cpu", "CPU build"),
        ("2.6.0+rocm6.2.4", "ROCm 6.2.4 build"),
        ("2.6.0", "PyPI build"),
    ],
)
def test_the_build_is_read_from_torchs_version(version: str, words: str) -> None:
    assert describe_version(version) == words


def test_the_check_step_imports_torch_and_records_the_build(tmp_path: Path) -> None:
    assert read_record(tmp_path) == ""
    subprocess.run([sys.executable, "-c", record_script(tmp_path, "CPU")], check=True, timeout=120)
    import torch

    assert read_record(tmp_path) == f"CPU build, torch {torch.__version__}"
