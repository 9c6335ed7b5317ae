"""Starting ``python -m backend ...`` in the backend interpreter."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


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


def backend_version(python: Path, root: Path, timeout: float = 60.0) -> str:
    """Version string that ``python -m backend --version`` reports."""
    words = run_backend(python, root, ["--version"], timeout).split()
    if not words:
        raise BackendCommandError(f"python -m backend --version printed nothing with {python}")
    return words[-1]


# Run in the backend interpreter: report torch's version and the devices it can use, as JSON.
TORCH_PROBE = """
import json
import torch
cuda = torch.cuda.is_available()
names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
print(json.dumps({"torch": torch.__version__, "cuda": cuda, "gpus": names}))
"""


@dataclass(frozen=True)
class TorchInfo:
    version: str
    cuda: bool
    gpus: tuple[str, ...]

    def device_text(self, preference: str = "auto") -> str:
        """The device the backend will use with the device ``preference``, in words."""
        if preference == "cpu" or not self.cuda:
            return "CPU" if preference != "cuda" else "CUDA asked for, but this torch sees no GPU"
        return f"CUDA ({self.gpus[0]})" if self.gpus else "CUDA"


def probe_torch(python: Path, root: Path, timeout: float = 120.0) -> TorchInfo:
    """Import torch in the backend interpreter and report its version and GPUs."""
    too_slow = f"importing torch with {python} took more than {timeout:g} s"
    done = _run([str(python), "-c", TORCH_PROBE], root, timeout, too_slow)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise BackendCommandError(f"torch cannot be imported with {python}: {_last_error(done)}")
    info = json.loads(lines[-1])
    return TorchInfo(str(info["torch"]), bool(info["cuda"]), tuple(str(n) for n in info["gpus"]))


def serve_arguments(weights_dir: Path, device: str, cache_mb: int) -> list[str]:
    """Arguments of ``python -m backend serve`` for the add-on's settings (its log goes to stderr,
    which the client keeps: the last lines explain a crash)."""
    return ["serve", "--weights-dir", str(weights_dir), "--device", device, "--cache-mb", str(cache_mb)]
