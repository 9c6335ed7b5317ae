"""State that lives for the Blender session only (never saved in a .blend): the backend process,
the task in progress, the last failure and what was detected about the backend interpreter."""

from __future__ import annotations

from dataclasses import dataclass

from .backend_process import TorchInfo
from .installer import InstallJob
from .service import BackendRequest, BackendService


@dataclass
class Task:
    """The reconstruction or generation the panel shows progress for (one at a time)."""

    label: str  # e.g. "Reconstructing 'Scan'"
    job: BackendRequest
    cancel_requested: bool = False


@dataclass
class Status:
    error: str = ""  # the last failure, shown in the panel until the next success
    crashed: bool = False  # the panel offers Restart Backend
    torch: TorchInfo | None = None  # from Check Backend
    torch_error: str = ""


service = BackendService()
status = Status()
task: Task | None = None
installer: InstallJob | None = None  # the last Install Backend run


def set_error(message: str, crashed: bool = False) -> None:
    status.error, status.crashed = message, crashed


def clear_error() -> None:
    status.error, status.crashed = "", False


def request_cancel() -> bool:
    """Cancel the task in progress; returns False when there is none. Safe from any thread."""
    current = task
    if current is None:
        return False
    current.cancel_requested = True
    current.job.cancel()
    return True


def shutdown() -> None:
    """End everything this session started (the add-on is being disabled or Blender quits)."""
    global task
    if task is not None:
        task.job.cancel()
        task = None
    service.restart()
    clear_error()
