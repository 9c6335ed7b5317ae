"""``python -m backend reconstruct-many IN_DIR -o OUT_DIR``: a mesh for every observation in a folder.

Each file goes through exactly what ``reconstruct`` does (``reconstruct.reconstruct_file``), in
worker processes that keep their models loaded (``backend.batch``). A mesh is written aside and
renamed, so an output that exists is complete: a second run skips it, and an interrupted run
resumes where it stopped. Bad files are reported at the end and do not stop the others.

Exit status: 0 when every file has its mesh, 1 when some failed, 2 for a usage error (nothing is
reconstructed then).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..batch import Job, Outcome, Slot, plan_slots, run_job, start_worker, usable_cores
from ..engine.types import InputError
from .reconstruct import add_model_arguments, options_from

FORMATS = ("ply", "obj", "stl", "off", "glb")
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
CRASHED = "the worker process stopped unexpectedly while this file was in progress; run again to retry it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input_dir", type=Path, help="folder of point clouds, voxel grids and images")
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the meshes")
    p.add_argument("--format", choices=FORMATS, default="ply", help="mesh file format (default ply)")
    p.add_argument(
        "--workers",
        type=int,
        help="worker processes (default: one per GPU on CUDA, else one per two CPU cores)",
    )
    p.add_argument("--recursive", action="store_true", help="also read the subfolders (kept in OUT_DIR)")
    p.add_argument("--overwrite", action="store_true", help="reconstruct files whose mesh exists too")
    add_model_arguments(p)


def find_inputs(folder: Path, recursive: bool, skip: Path) -> list[Path]:
    """The observation files in ``folder``, sorted; hidden files and anything under ``skip`` (the
    output folder) are left out."""
    from ..engine.inputs import SUFFIXES

    pattern = "**/*" if recursive else "*"
    found = []
    for path in folder.glob(pattern):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in SUFFIXES:
            continue
        if path.is_file() and not path.resolve().is_relative_to(skip):
            found.append(path)
    return sorted(found)


def output_paths(inputs: list[Path], in_dir: Path, out_dir: Path, fmt: str) -> dict[Path, Path]:
    """Input -> its mesh: the same name and subfolder with the format's suffix; inputs that
    would share a mesh (``chair.ply``, ``chair.npy``) keep their own suffix in it
    (``chair.ply.obj``, ``chair.npy.obj``)."""
    plain = {source: out_dir / source.relative_to(in_dir).with_suffix(f".{fmt}") for source in inputs}
    counts: dict[Path, int] = {}
    for target in plain.values():
        counts[target] = counts.get(target, 0) + 1
    return {
        source: target if counts[target] == 1 else target.with_name(f"{source.name}.{fmt}")
        for source, target in plain.items()
    }


@dataclass
class Tally:
    """What happened to each file, for the progress bar and the summary."""

    total: int
    written: int = 0
    skipped: int = 0
    failures: list[tuple[Path, str]] = field(default_factory=list)


def check_usage(args: argparse.Namespace) -> tuple[str, int | None, int]:
    """The device's type, index and GPU count; InputError for anything that would fail every file."""
    from ..engine.reconstructor import Reconstructor

    if not args.input_dir.is_dir():
        raise InputError(f"input folder not found: {args.input_dir}")
    if args.output_dir.resolve() == args.input_dir.resolve():
        raise InputError("the output folder is the input folder; choose another one")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"workers must be at least 1, got {args.workers}")
    # a probe engine checks the device, half precision and the weights folder; it loads nothing
    probe = Reconstructor(args.device, args.weights_dir, half=args.half)
    probe.check(options_from(args))
    if args.model:
        probe.model_meta(args.model)
    device = probe.device
    gpu_count = 0
    if device.type == "cuda":
        import torch

        gpu_count = torch.cuda.device_count()
    return device.type, device.index, gpu_count


def run(args: argparse.Namespace) -> int:
    try:
        device_type, index, gpu_count = check_usage(args)
        inputs = find_inputs(args.input_dir, args.recursive, args.output_dir.resolve())
        if not inputs:
            hint = "" if args.recursive else " (--recursive reads subfolders)"
            raise InputError(f"no observation files in {args.input_dir}{hint}")
        args.output_dir.mkdir(parents=True, exist_ok=True)
    except (InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    targets = output_paths(inputs, args.input_dir, args.output_dir, args.format)
    tally = Tally(len(inputs))
    todo = []
    for source in inputs:
        if targets[source].exists() and not args.overwrite:
            tally.skipped += 1
        else:
            targets[source].parent.mkdir(parents=True, exist_ok=True)
            todo.append(Job(source, targets[source], args.model, options_from(args)))
    slots = plan_slots(device_type, index, gpu_count, args.workers, usable_cores())
    if 0 < len(todo) < len(slots):  # no idle workers: the ones there are get the cores
        slots = plan_slots(device_type, index, gpu_count, len(todo), usable_cores())
    started = time.perf_counter()
    from tqdm import tqdm

    # disable=None: a bar on a terminal only, as reconstruct's
    with tqdm(total=tally.total, initial=tally.skipped, unit="file", disable=None) as bar:
        try:
            _run_jobs(todo, slots, args, tally, bar)
        except KeyboardInterrupt:
            bar.close()
            print("interrupted: the meshes written so far are kept; run again to resume", file=sys.stderr)
            return 130
    _summarise(tally, args.input_dir, time.perf_counter() - started, len(slots))
    return EXIT_FAILED if tally.failures else EXIT_OK


def _run_jobs(todo: list[Job], slots: list[Slot], args: argparse.Namespace, tally: Tally, bar: Any) -> None:
    """Feed the jobs to a pool of workers, a few ahead of them; a pool whose worker died is
    replaced, and the files it had in progress are counted as failed."""
    jobs = iter(todo)
    while _run_pool(jobs, slots, args, tally, bar):
        pass


def _run_pool(
    jobs: Iterator[Job], slots: list[Slot], args: argparse.Namespace, tally: Tally, bar: Any
) -> bool:
    """Run jobs until they are all done (False) or a worker died (True: start a new pool)."""
    import multiprocessing

    if (first := next(jobs, None)) is None:
        return False
    context = multiprocessing.get_context("spawn")
    free_slots = context.Queue()
    for slot in slots:
        free_slots.put(slot)
    ahead = 2 * len(slots)  # enough queued that no worker waits, few enough to stream a large folder
    with ProcessPoolExecutor(
        len(slots),
        mp_context=context,
        initializer=start_worker,
        initargs=(free_slots, args.weights_dir, args.half),
    ) as pool:
        running: dict[Future[Outcome], Job] = {pool.submit(run_job, first): first}
        try:
            while running:
                while len(running) < ahead and (job := next(jobs, None)) is not None:
                    running[pool.submit(run_job, job)] = job
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job = running.pop(future)
                    try:
                        outcome = future.result()
                    except BrokenProcessPool:
                        outcome = Outcome(job.source, CRASHED)
                    _record(outcome, tally, bar, args.input_dir)
                if any(isinstance(f.exception(), BrokenProcessPool) for f in done):
                    for job in running.values():
                        _record(Outcome(job.source, CRASHED), tally, bar, args.input_dir)
                    return True
        except KeyboardInterrupt:
            pool.shutdown(cancel_futures=True)  # the files in progress finish; the queued never start
            raise
    return False


def _record(outcome: Outcome, tally: Tally, bar: Any, in_dir: Path) -> None:
    name = outcome.source.relative_to(in_dir)
    if outcome.error is None:
        tally.written += 1
        for warning in outcome.warnings:
            bar.write(f"warning: {name}: {warning}", file=sys.stderr)
    else:
        tally.failures.append((outcome.source, outcome.error))
        if not bar.disable:  # without a bar the summary alone lists them
            bar.write(f"failed: {name}: {outcome.error}", file=sys.stderr)
    bar.update(1)


def _summarise(tally: Tally, in_dir: Path, seconds: float, workers: int) -> None:
    rate = 60.0 * tally.written / seconds if seconds > 0 and tally.written else 0.0
    print(
        f"{tally.written} written, {tally.skipped} already done, {len(tally.failures)} failed "
        f"of {tally.total} files in {seconds:.1f} s with {workers} worker(s) ({rate:.1f} files/min)"
    )
    if tally.failures:
        print(f"failed ({len(tally.failures)}):", file=sys.stderr)
        for source, reason in tally.failures:
            print(f"  {source.relative_to(in_dir)}: {reason}", file=sys.stderr)
