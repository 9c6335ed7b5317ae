"""Which torch build Install Backend installs: CUDA, CPU-only or PyPI's default (no bpy, no torch).

PyPI's torch is a CPU-only build on Windows and a large CUDA build on Linux; PyTorch's own package
indexes carry the CUDA and the CPU-only builds for both. On macOS PyPI's build is the one with
Metal (MPS), and there is no CUDA. The GPU is detected without torch, which is not installed yet.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

# One CUDA index for every NVIDIA user: CUDA 12.8 wheels run on current drivers and cover the
# GPUs from Maxwell to Blackwell.
CUDA_INDEX = "https://download.pytorch.org/whl/cu128"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROC_DRIVER = Path("/proc/driver/nvidia")  # present while Linux's NVIDIA driver is loaded
RECORD_NAME = "torch-build.json"  # in the installed environment's folder

# the preference's choices; "AUTO" resolves to one of the others
CHOICES = ("AUTO", "CUDA", "CPU", "DEFAULT")
INDEXES = {"CUDA": CUDA_INDEX, "CPU": CPU_INDEX, "DEFAULT": None}
LABELS = {"CUDA": "CUDA build", "CPU": "CPU build", "DEFAULT": "PyPI's default build"}


class TorchBuildError(ValueError):
    """The chosen build does not exist for this platform; the message says what to choose."""


def has_nvidia_gpu(platform: str, path: str | None = None, proc_driver: Path = PROC_DRIVER) -> bool:
    """Whether an NVIDIA driver is installed: ``nvidia-smi`` on the ``PATH`` (it comes with the
    driver on Windows and Linux), or Linux's driver folder in /proc."""
    if platform == "darwin":
        return False
    if shutil.which("nvidia-smi", path=path) is not None:
        return True
    return platform.startswith("linux") and proc_driver.is_dir()


def choose_build(choice: str, platform: str, nvidia_gpu: bool) -> str:
    """The build to install ("CUDA", "CPU" or "DEFAULT") for the preference ``choice``."""
    if choice not in CHOICES:
        raise TorchBuildError(f"unknown torch build {choice!r}: use one of {', '.join(CHOICES)}")
    mac = platform == "darwin"
    if choice == "AUTO":
        return "DEFAULT" if mac else "CUDA" if nvidia_gpu else "CPU"
    if mac and choice == "CUDA":
        raise TorchBuildError("there is no CUDA build of torch for macOS: choose Auto (Metal) or CPU")
    if mac and choice == "CPU":
        return "DEFAULT"  # PyPI's macOS build runs on the CPU and adds Metal
    return choice


def torch_install_arguments(build: str, requirement: str) -> list[str]:
    """pip arguments that install ``requirement`` (torch) as ``build``.

    ``--index-url`` takes torch and its own dependencies from PyTorch's index; the backend's other
    packages are installed from PyPI in a step of their own.
    """
    index = INDEXES[build]
    return [requirement] if index is None else [requirement, "--index-url", index]


def describe_version(version: str) -> str:
    """The build in words from torch's version suffix ("2.6.0+cu126" -> "CUDA 12.6 build")."""
    _, _, local = version.partition("+")
    if cuda := re.fullmatch(r"cu(\d+)(\d)", local):
        return f"CUDA {cuda[1]}.{cuda[2]} build"
    if local == "cpu":
        return "CPU build"
    if local.startswith("rocm"):
        return f"ROCm {local[4:]} build"
    return "PyPI build" if not local else f"{local} build"


def record_script(venv: Path, build: str) -> str:
    """Python, run by the installed environment, that imports torch (so a broken install fails
    here) and records the build next to it for the preferences."""
    record = str(venv / RECORD_NAME)
    fields = f"{{'build': {build!r}, 'index': {INDEXES[build]!r}, 'torch': torch.__version__}}"
    return (
        f"import json, torch; json.dump({fields}, open({record!r}, 'w', encoding='utf-8')); "
        "print('torch', torch.__version__)"
    )


def read_record(venv: Path) -> str:
    """What the last Install Backend put into ``venv``, in words; "" when nothing is recorded."""
    try:
        record = json.loads((venv / RECORD_NAME).read_text(encoding="utf-8"))
        return f"{LABELS[record['build']]}, torch {record['torch']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""
