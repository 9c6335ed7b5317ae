"""``python -m backend reconstruct INPUT -o OUT``: a mesh from a point cloud, voxel grid or image.

The input kind follows from the file (see ``backend.engine.inputs``); the model defaults to
the shipped model of that kind. The mesh is written in the input's own frame.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine.types import InputError, MeshResult, ProgressFn, ReconstructOptions
from ..wire.model_header import pick_automatic

STAGE_ORDER = ("encode", "evaluate", "marching_cubes", "simplify", "refine", "fit", "normals")


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``reconstruct`` and ``sample``."""
    p.add_argument(
        "-o", "--output", type=Path, required=True, help="mesh file to write (.ply, .obj, .stl, .off, .glb)"
    )
    add_model_arguments(p)
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the model, the mesh and the device (also those of ``reconstruct-many``)."""
    p.add_argument(
        "--model", help="a shipped model name or a .safetensors checkpoint (default: the shipped one)"
    )
    p.add_argument("--tau", type=float, help="occupancy threshold in (0, 1) (default: the model's)")
    p.add_argument(
        "--resolution", type=int, default=128, help="final grid resolution: 32, 64, 128, 256 or 512"
    )
    p.add_argument("--refine", type=int, default=0, metavar="N", help="gradient refinement steps (default 0)")
    p.add_argument("--simplify", type=int, metavar="F", help="simplify to about F faces")
    p.add_argument("--normals", action="store_true", help="write vertex normals from the field's gradient")
    add_fit_argument(p)
    p.add_argument("--seed", type=int, default=0, help="seed for subsampling, sampling and refinement")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--half", action="store_true", help="16-bit network evaluation: CUDA, or a CPU with AMX")
    p.add_argument(
        "--weights-dir", type=Path, help="folder of *.safetensors models (default: the shipped weights)"
    )


def add_fit_argument(p: argparse.ArgumentParser) -> None:
    """The options that keep the network's own surface: unfitted to a scan, uncarved, unblended
    with outlines."""
    p.add_argument(
        "--no-fit",
        dest="fit",
        action="store_false",
        help="point clouds: keep the network's surface, not fitted to the points where they are dense",
    )
    p.add_argument(
        "--no-carve",
        dest="open_cavities",
        action="store_false",
        help="point clouds: keep cavities the network filled, even where scan points lie buried in them",
    )
    p.add_argument(
        "--no-outlines",
        dest="outlines",
        action="store_false",
        help="reference views: keep the network's surface, not blended with the views' outlines",
    )


def options_from(args: argparse.Namespace) -> ReconstructOptions:
    return ReconstructOptions(
        tau=args.tau,
        resolution=args.resolution,
        refine_steps=args.refine,
        simplify_faces=args.simplify,
        normals=args.normals,
        fit_points=args.fit,
        outlines=args.outlines,
        open_cavities=args.open_cavities,
        keep_field=False,
        seed=args.seed,
    )


class ProgressBar:
    """A tqdm bar per stage on a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.stage: str | None = None
        self.bar: Any = None

    def __call__(self, stage: str, fraction: float) -> None:
        if not self.enabled:
            return
        if stage != self.stage:
            self.close()
            from tqdm import tqdm

            self.stage = stage
            self.bar = tqdm(
                total=100, desc=f"{stage:>14}", bar_format="{desc} {bar} {percentage:3.0f}%", leave=False
            )
        target = round(100 * fraction)
        if self.bar is not None and target > self.bar.n:
            self.bar.update(target - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def run_engine(args: argparse.Namespace, call: Callable[[Any, ProgressBar], MeshResult]) -> int:
    """Build the engine, run ``call(engine, progress)``, write the mesh and report; 2 on bad input."""
    from ..engine.meshio import check_output_path, write_mesh
    from ..engine.reconstructor import Reconstructor

    progress = ProgressBar(sys.stderr.isatty())
    try:
        output = check_output_path(args.output)
        engine = Reconstructor(args.device, args.weights_dir, half=args.half, threads=args.threads)
        result = call(engine, progress)
        progress.close()
        write_mesh(output, result.vertices, result.faces, result.normals)
    except InputError as e:
        progress.close()
        print(f"error: {e}", file=sys.stderr)
        return 2
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {output}: {len(result.vertices)} vertices, {len(result.faces)} faces at tau {result.tau:g}")
    stages = [s for s in STAGE_ORDER if s in result.timings]
    print("timings: " + ", ".join(f"{s} {result.timings[s]:.3f} s" for s in [*stages, "total"]))
    return 0


def default_model(engine: Any, kind: str, count: int | None = None) -> str:
    """The installed model Automatic takes for ``kind`` (a cloud of ``count`` points: see
    ``wire.pick_automatic``)."""
    info = pick_automatic(engine.models(), kind, count)
    if info is None:
        raise InputError(
            f"no {kind} model is installed in {engine.weights_dir}; pass --model FILE.safetensors"
        )
    return str(info.name)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        type=Path,
        help="point cloud (.ply .xyz .npy), voxel grid (.npy .binvox), image (.png .jpg), or a camera "
        "file of reference views (.json; see the README)",
    )
    p.add_argument(
        "--bounds",
        type=float,
        nargs=6,
        metavar=("XMIN", "YMIN", "ZMIN", "XMAX", "YMAX", "ZMAX"),
        help="corners of a voxel grid in its frame (default: -0.5 .. 0.5 on every axis)",
    )
    p.add_argument(
        "--mask",
        type=Path,
        help="a picture's object mask: an image of its size, white (or opaque) where the object is "
        "(default: found by the picture's alpha or plain backdrop)",
    )
    add_engine_arguments(p)


def reconstruct_file(
    engine: Any,
    source: Path,
    output: Path,
    model: str | None,
    options: ReconstructOptions,
    bounds: Any = None,
    progress: ProgressFn | None = None,
    mask: Path | None = None,
) -> MeshResult:
    """The mesh of one observation file (``reconstruct`` and each file of ``reconstruct-many``).

    ``model`` None takes the installed model of the file's kind; ``output`` is only checked
    against the input here, the caller writes it.
    """
    from ..engine.inputs import read_observation
    from ..kinds import observed_kind

    if output.resolve() == source.resolve():
        raise InputError("the output would overwrite the input; choose another output file")
    observation = read_observation(source, bounds, mask)
    count = None if observation.points is None else len(observation.points)
    model = model or default_model(engine, observed_kind(observation).name, count)
    return engine.reconstruct(model, observation, options, progress=progress)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    def call(engine: Any, progress: ProgressBar) -> MeshResult:
        bounds = None if args.bounds is None else np.array(args.bounds, np.float64).reshape(2, 3)
        return reconstruct_file(
            engine, args.input, args.output, args.model, options_from(args), bounds, progress, args.mask
        )

    return run_engine(args, call)
