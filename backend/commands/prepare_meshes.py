"""``python -m backend prepare-meshes MESHES [OUT]``: a folder of meshes -> a training dataset.

See ``backend.data.meshes``. Train on the result with ``[data] source = "OUT"`` in a config.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..data.meshes import MeshSettings

    d = MeshSettings()
    p.add_argument("meshes", type=Path, help="folder of .obj, .ply, .stl or .off files")
    p.add_argument(
        "output", type=Path, nargs="?", help="where to write the dataset (default: MESHES/prepared)"
    )
    p.add_argument("--surface-points", type=int, default=d.surface_points, help="surface samples per mesh")
    p.add_argument("--uniform-points", type=int, default=d.uniform_points, help="labelled points in the box")
    p.add_argument("--near-points", type=int, default=d.near_points, help="labelled points near the surface")
    p.add_argument("--near-sigma", type=float, default=d.near_sigma, help="their distance scale")
    p.add_argument(
        "--val-fraction", type=float, default=d.val_fraction, help="share of meshes for validation"
    )
    p.add_argument("--test-fraction", type=float, default=d.test_fraction, help="share of meshes for testing")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for the split and the samples")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")


def run(args: argparse.Namespace) -> int:
    from ..data.meshes import MeshDataError, MeshSettings, prepare_meshes

    settings = MeshSettings(
        surface_points=args.surface_points,
        uniform_points=args.uniform_points,
        near_points=args.near_points,
        near_sigma=args.near_sigma,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
    )
    output = args.output or args.meshes / "prepared"
    try:
        if args.workers < 1:
            raise MeshDataError(f"--workers must be at least 1, got {args.workers}")
        manifest = prepare_meshes(args.meshes, output, settings, workers=args.workers)
    except MeshDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    splits = manifest["splits"]
    skipped = manifest["skipped"]
    assert isinstance(splits, dict) and isinstance(skipped, dict)
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}", file=sys.stderr)
    counts = ", ".join(f"{len(v)} {k}" for k, v in splits.items() if v)
    print(f"wrote {output}: {counts} meshes ({len(skipped)} skipped)")
    print(f'train on it with [data] source = "{output}"')
    return 0
