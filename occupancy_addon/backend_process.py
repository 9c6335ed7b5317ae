"""Starting ``python -m backend ...`` in the backend interpreter."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .torch_build import describe_version


class BackendCommandError(RuntimeError):
    """A backend command could not start, failed or did not answer in time."""


def backend_environment(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Environment for a backend process whose ``backend`` package lies in ``root``.

    ``PYTHONPATH`` is replaced, not extended: entries meant for Blender's Python must not leak into
    the backend interpreter. ``PYTHONHOME`` would point the interpreter at another installation.
    """
    env = {key: value for key, value in environ.items() if key not in ("PYTHONPATH", "PYTHONHOME")}
    env["PYTHONPATH"] = str(root)
    env["PYTHONUNBUFFERED"] = "1"  # the add-on reads progress line by line
    return env


def backend_command(python: Path, args: Sequence[str]) -> list[str]:
    return [str(python), "-m", "backend", *args]


def _run(command: list[str], root: Path, timeout: float, too_slow: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the backend's environment; starting failures become BackendCommandError."""
    try:
        return subprocess.run(
            command,
            cwd=root,
            env=backend_environment(root, os.environ),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BackendCommandError(too_slow) from error
    except OSError as error:
        raise BackendCommandError(f"cannot start {command[0]}: {error.strerror or error}") from error


def _last_error(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def run_backend(python: Path, root: Path, args: Sequence[str], timeout: float) -> str:
    """Run one short backend command to completion and return its standard output."""
    command = backend_command(python, args)
    done = _run(command, root, timeout, f"{' '.join(command)} did not finish within {timeout:g} s")
    if done.returncode != 0:
        raise BackendCommandError(f"backend command failed with {python}: {_last_error(done)}")
    return done.stdout


@dataclass(frozen=True)
class TorchInfo:
    version: str
    cuda: bool
    gpus: tuple[str, ...]

    def build_text(self) -> str:
        """Which build of torch this is ("CUDA 12.8 build", "CPU build", ...)."""
        return describe_version(self.version)

    def device_text(self, preference: str = "auto") -> str:
        """The device the backend will use with the device ``preference``, in words."""
        if preference == "cpu" or not self.cuda:
            return "CPU" if preference != "cuda" else "CUDA asked for, but this torch sees no GPU"
        return f"CUDA ({self.gpus[0]})" if self.gpus else "CUDA"


@dataclass(frozen=True)
class BackendInfo:
    version: str  # the backend package's
    torch: TorchInfo


def probe_backend(python: Path, root: Path, timeout: float = 120.0) -> BackendInfo:
    """Run ``python -m backend info``: the backend's version, and torch's version and GPUs as the
    backend interpreter sees them (torch is imported there, never in Blender)."""
    lines = [
        line for line in run_backend(python, root, ["info"], timeout).splitlines() if line.startswith("{")
    ]
    if not lines:
        raise BackendCommandError(f"python -m backend info printed nothing with {python}")
    try:
        info = json.loads(lines[-1])
        torch = TorchInfo(str(info["torch"]), bool(info["cuda"]), tuple(str(n) for n in info["gpus"]))
        return BackendInfo(str(info["backend"]), torch)
    except (ValueError, KeyError, TypeError) as error:
        raise BackendCommandError(
            f"python -m backend info gave an unreadable answer with {python}"
        ) from error


def serve_arguments(weights_dir: Path, device: str, cache_mb: int, half: bool = False) -> list[str]:
    """Arguments of ``python -m backend serve`` for the add-on's settings (its log goes to stderr,
    which the client keeps: the last lines explain a crash)."""
    args = ["serve", "--weights-dir", str(weights_dir), "--device", device, "--cache-mb", str(cache_mb)]
    return [*args, "--half"] if half else args
