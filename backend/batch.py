"""The worker processes of ``reconstruct-many``: one engine per process, many files each.

Workers are spawned (never forked: torch and CUDA do not survive a fork), so each starts a fresh
interpreter. This module imports only the standard library at the top: a worker must set its
thread counts in the environment before torch or numpy load, or every worker would start one
thread per core and the processes would fight over the cores.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiprocessing.queues import Queue

    from .engine.types import ReconstructOptions

# read once, when OpenMP, MKL or OpenBLAS start (torch and numpy import them)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Slot:
    """Where one worker runs: its torch device and the CPU threads it may use."""

    device: str
    threads: int


def usable_cores() -> int:
    """The cores this process may run on (the affinity mask where there is one, e.g. in a container)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_cpu_workers(cores: int) -> int:
    """Two threads per worker: torch's kernels use both, and while one worker runs marching cubes
    or writes its file (single-threaded) the others keep the cores busy."""
    return max(1, cores // 2)


def plan_slots(
    device_type: str, index: int | None, gpu_count: int, workers: int | None, cores: int
) -> list[Slot]:
    """The workers for a device: one per GPU on CUDA (``workers`` may ask for another number; they
    take the GPUs in turn), else ``workers`` on the CPU (or MPS) with the cores shared out evenly."""
    if device_type == "cuda":
        gpus = [index] if index is not None else list(range(max(gpu_count, 1)))
        count = workers or len(gpus)
        devices = [f"cuda:{gpus[i % len(gpus)]}" for i in range(count)]
    elif device_type == "mps":
        count = workers or 1
        devices = ["mps"] * count
    else:
        count = workers or default_cpu_workers(cores)
        devices = ["cpu"] * count
    threads = max(1, cores // count)
    return [Slot(device, threads) for device in devices]


@dataclass(frozen=True)
class Job:
    source: Path
    output: Path
    model: str | None
    options: ReconstructOptions


@dataclass(frozen=True)
class Outcome:
    source: Path
    error: str | None  # why the file failed; None when its mesh was written
    vertices: int = 0
    faces: int = 0
    warnings: tuple[str, ...] = ()
    seconds: float = 0.0


_engine: Any = None  # this worker's Reconstructor: its models stay loaded from file to file


def start_worker(slots: Queue[Slot], weights_dir: Path | None, half: bool) -> None:
    """Initialise a spawned worker: take a slot, limit its threads, then import torch."""
    global _engine
    slot = slots.get()
    for name in THREAD_ENV:
        os.environ[name] = str(slot.threads)
    # Ctrl+C reaches the whole process group; the parent stops after the files in progress
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .engine.reconstructor import Reconstructor

    _engine = Reconstructor(slot.device, weights_dir, half=half, threads=slot.threads)


def run_job(job: Job) -> Outcome:
    """Reconstruct one file and write its mesh; every failure becomes the outcome's reason."""
    from .commands.reconstruct import reconstruct_file
    from .engine.meshio import write_mesh
    from .engine.types import InputError
    from .serving.requests import is_out_of_memory

    started = time.perf_counter()
    try:
        result = reconstruct_file(_engine, job.source, job.output, job.model, job.options)
        write_mesh(job.output, result.vertices, result.faces, result.normals)
    except InputError as e:
        return Outcome(job.source, str(e))
    except Exception as e:  # one bad file must not stop the others
        if not is_out_of_memory(e):
            return Outcome(job.source, f"{type(e).__name__}: {e}")
        reason = f"out of memory: {e}"
    else:
        elapsed = time.perf_counter() - started
        return Outcome(
            job.source, None, len(result.vertices), len(result.faces), tuple(result.warnings), elapsed
        )
    # out of the except block, so that the traceback's frames (and their tensors) are gone
    from .serving.server import free_device_cache

    free_device_cache()
    return Outcome(job.source, reason)
