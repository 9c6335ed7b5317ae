"""Installing the backend's packages into a virtual environment of its own (no bpy).

The environment goes into the extension's user folder; Blender's own Python is only used to create
it and never gets a package installed. The commands run on a worker thread; the main thread polls
``fraction``/``text`` to show progress and reads ``error`` at the end.
"""

from __future__ import annotations

import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .backend_python import venv_python
from .torch_build import LABELS, record_script, torch_install_arguments

# The backend's dependencies (pyproject.toml's [project.dependencies]; a test keeps them in step).
REQUIREMENTS = (
    "torch>=2.2",
    "numpy>=1.26",
    "scipy>=1.11",
    "pykdtree>=1.3.10",
    "trimesh>=4.0",
    "PyMCubes>=0.1.4",
    "tqdm>=4.60",
    "safetensors>=0.4",
    "pillow>=10.0",
    "fast-simplification>=0.1.7",
)


@dataclass(frozen=True)
class Step:
    label: str
    command: list[str]
    share: float  # of the whole installation's progress bar


def install_steps(
    base_python: Path, venv: Path, build: str = "DEFAULT", packages: tuple[str, ...] = REQUIREMENTS
) -> list[Step]:
    """Create ``venv`` with ``base_python``, install torch as ``build`` (see ``torch_build``), then
    the other ``packages`` from PyPI, then check that torch imports and record its build."""
    python = str(venv_python(venv))
    install = [python, "-m", "pip", "--disable-pip-version-check", "--no-input", "install"]
    install += ["--progress-bar", "off"]
    torch = next(p for p in packages if p.startswith("torch"))
    others = [p for p in packages if p != torch]
    return [
        Step("Creating the environment", [str(base_python), "-m", "venv", str(venv)], 0.05),
        Step(f"Installing torch ({LABELS[build]})", [*install, *torch_install_arguments(build, torch)], 0.6),
        Step("Installing packages", [*install, *others], 0.3),
        Step("Checking torch", [python, "-c", record_script(venv, build)], 0.05),
    ]


class InstallJob:
    """Runs the steps one after the other on a worker thread."""

    def __init__(self, steps: list[Step], package_count: int = len(REQUIREMENTS)) -> None:
        self.steps = steps
        self.package_count = max(package_count, 1)
        self.fraction = 0.0
        self.text = "Waiting"
        self.error = ""
        self.finished = False
        self.log: deque[str] = deque(maxlen=200)
        self._process: subprocess.Popen[str] | None = None
        self._cancelled = False
        self._thread = threading.Thread(target=self._run, name="occupancy-install", daemon=True)

    def start(self) -> InstallJob:
        self._thread.start()
        return self

    def cancel(self) -> None:
        self._cancelled = True
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job ends; True when it finished within ``timeout``."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        done = 0.0
        try:
            for step in self.steps:
                if self._cancelled:
                    raise RuntimeError("cancelled")
                self.text = step.label
                self._run_step(step, done)
                done += step.share
                self.fraction = min(done, 1.0)
            self.text = "Installed"
        except (OSError, RuntimeError) as error:
            self.error = f"Installing the backend failed: {error}"
            self.text = "Failed"
        finally:
            self.finished = True

    def _run_step(self, step: Step, done: float) -> None:
        collected = 0
        self._process = process = subprocess.Popen(
            step.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
        )
        assert process.stdout is not None
        if self._cancelled:  # cancelled while the process was starting
            process.terminate()
        for raw in process.stdout:
            line = raw.rstrip()
            self.log.append(line)
            # pip names each package as it resolves it; installing is the last ~20% of the step
            if line.startswith("Collecting "):
                collected += 1
                within = 0.8 * min(collected / self.package_count, 1.0)
                self.fraction = done + step.share * within
                self.text = f"{step.label}: {line.split()[1]}"
            elif line.startswith("Installing collected packages"):
                self.fraction = done + step.share * 0.8
                self.text = f"{step.label}: installing"
        status = process.wait()
        if self._cancelled:
            raise RuntimeError("cancelled")
        if status != 0:
            last = next((line for line in reversed(self.log) if line.strip()), f"exit status {status}")
            raise RuntimeError(f"{step.label.lower()} failed: {last}")
