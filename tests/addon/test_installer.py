"""Install Backend's job: real subprocesses, progress parsed from pip's output, errors kept."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from occupancy_addon.backend_python import venv_python
from occupancy_addon.installer import REQUIREMENTS, InstallJob, Step, install_steps


def test_requirements_are_the_backends_dependencies(repo_root: Path) -> None:
    project = tomllib.loads((repo_root / "pyproject.toml").read_text())["project"]
    assert list(REQUIREMENTS) == project["dependencies"]


def test_steps_create_a_venv_then_install_into_it(tmp_path: Path) -> None:
    create, torch, others, check = install_steps(Path("/opt/blender/python"), tmp_path / "venv")
    assert create.command == ["/opt/blender/python", "-m", "venv", str(tmp_path / "venv")]
    for step in (torch, others, check):
        assert step.command[0] == str(venv_python(tmp_path / "venv"))  # never Blender's own Python
    assert [*torch.command[-1:], *others.command[-len(REQUIREMENTS) + 1 :]] == list(REQUIREMENTS)


def fake_pip(lines: list[str], status: int = 0) -> list[str]:
    code = "".join(f"print({line!r}, flush=True); " for line in lines) + f"raise SystemExit({status})"
    return [sys.executable, "-c", code]


def test_progress_follows_pip_and_ends_installed() -> None:
    output = ["Collecting torch", "Collecting numpy", "Installing collected packages: numpy, torch", "ok"]
    job = InstallJob([Step("Creating", fake_pip([]), 0.1), Step("Installing", fake_pip(output), 0.9)], 2)
    assert job.start().wait(60)
    assert job.finished and job.error == "" and job.text == "Installed" and job.fraction == 1.0
    assert "Collecting numpy" in job.log


def test_a_failing_step_stops_with_its_last_line() -> None:
    job = InstallJob([Step("Installing packages", fake_pip(["ERROR: No matching distribution"], 1), 1.0)])
    assert job.start().wait(60)
    assert (
        job.error
        == "Installing the backend failed: installing packages failed: ERROR: No matching distribution"
    )


def test_a_missing_program_is_an_error_not_a_crash(tmp_path: Path) -> None:
    job = InstallJob([Step("Creating", [str(tmp_path / "no-python"), "-m", "venv"], 1.0)])
    assert job.start().wait(60)
    assert job.error.startswith("Installing the backend failed:") and job.text == "Failed"


def test_cancel_terminates_the_running_step() -> None:
    job = InstallJob([Step("Sleeping", [sys.executable, "-c", "import time; time.sleep(60)"], 1.0)])
    job.start()
    job.cancel()
    assert job.wait(30)
    assert job.error.endswith("cancelled")
