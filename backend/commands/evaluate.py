"""``python -m backend evaluate WEIGHTS``: score a model on held-out shapes (see ``backend.evaluation``).

Prints a per-shape table and the means to stdout (a progress bar goes to stderr) and,
with ``--json``, writes everything to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..wire.views import VIEW_SETS
from .reconstruct import add_fit_argument

if TYPE_CHECKING:
    from ..evaluation import EvalSettings

PAPER_CHAMFER_SCALE = 10  # the paper's unit is 1/10 of the box edge (occupancy_networks#61)
COLUMNS = (
    ("iou", "IoU"),
    ("chamfer_l1", "Chamfer-L1"),
    ("normal_consistency", "normals"),
    ("fscore", "F@1%"),
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="a .safetensors model file or the name of a shipped model")
    p.add_argument("--split", default="test", choices=("test", "val", "train"), help="default: test")
    p.add_argument("--n", type=int, default=256, help="shapes to evaluate, or samples to draw (default 256)")
    p.add_argument("--resolution", type=int, default=128, help="extraction grid: 32 ... 512 (default 128)")
    p.add_argument("--tau", type=float, help="occupancy threshold (default: the model's own)")
    p.add_argument("--seed", type=int, default=0, help="data seed of the held-out split (default 0)")
    p.add_argument("--iou-points", type=int, default=100_000, help="uniform points for IoU (default 100000)")
    p.add_argument(
        "--surface-points", type=int, default=100_000, help="surface samples per mesh (default 100000)"
    )
    p.add_argument(
        "--points", type=int, help="point clouds: observed points (default: the model's own, or 300)"
    )
    p.add_argument("--noise", type=float, help="point clouds: noise std (default: the model's own, or 0.005)")
    p.add_argument(
        "--views",
        type=int,
        default=0,
        help="point clouds: a partial scan from this many viewpoints (0: all); views models: the "
        "first this many of each shape's views (0: all)",
    )
    p.add_argument(
        "--cameras",
        default="random",
        help="views models: how the held-out shapes are shot: 'random' (4 views within the training "
        "ranges), 'outside' (4 views shot and lit outside them), or a named set: " + ", ".join(VIEW_SETS),
    )
    add_fit_argument(p)
    p.add_argument(
        "--hollow",
        type=float,
        default=0.0,
        help="procedural shapes: the share made thin-walled and cut open, as cups and bowls are "
        "(default 0: the usual test split of solids)",
    )
    p.add_argument(
        "--source",
        default="procedural",
        help="'procedural', a folder made by prepare-meshes, or a dataset in the original's layout "
        "(per-class tables in the paper's units; --n objects spread over its classes)",
    )
    p.add_argument("--classes", nargs="+", default=[], help="the original's layout: only these classes")
    p.add_argument("--data-dir", type=Path, default=Path(".data"), help="where generated data is cached")
    p.add_argument("--json", type=Path, help="write the full results to this JSON file")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps (default cpu)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    p.add_argument("--half", action="store_true", help="16-bit network evaluation: CUDA, or a CPU with AMX")
    p.add_argument("--quiet", action="store_true", help="no per-shape table, only the means")


def _row(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True))


def _metric_cells(metrics: dict[str, float] | None) -> list[str]:
    if metrics is None:
        return [""] * len(COLUMNS)
    return [f"{metrics[k]:.4f}" for k, _ in COLUMNS]


def print_report(report: Any, per_shape: bool) -> None:
    """The per-shape table and the means, as plain text."""
    from ..evaluation import SILHOUETTE

    if report.kind == "unconditional":
        widths = [6, 8, 7, 9]
        if per_shape:
            print(_row(["seed", "faces", "closed", "volume"], widths))
            for s in report.samples:
                print(
                    _row([str(s.seed), str(s.faces), "yes" if s.closed else "no", f"{s.volume:.4f}"], widths)
                )
        good = sum(s.faces > 0 and s.closed for s in report.samples)
        print(
            f"\n{report.kind} model {report.model} (tau {report.tau:g}): {good} of {len(report.samples)} "
            f"samples are non-empty closed meshes ({100 * report.closed_fraction():.1f}%)"
        )
        return
    baseline_mean = report.baseline_mean()
    baseline = baseline_mean is not None
    head = ["shape", *[t for _, t in COLUMNS]]
    if baseline:
        head += [f"input {t}" for _, t in COLUMNS]
    head += ["faces", "s"]
    widths = [max(len(h), 10) for h in head]
    widths[0] = max(12, *(len(s.name) for s in report.shapes)) if report.shapes else 12
    if per_shape:
        print(_row(head, widths))
        for s in report.shapes:
            cells = [s.name, *_metric_cells(s.metrics)]
            if baseline:
                cells += _metric_cells(s.baseline)
            print(_row([*cells, str(s.faces), f"{s.seconds:.2f}"], widths))
        print()
    print(f"{report.kind} model {report.model}, tau {report.tau:g}, {len(report.shapes)} shapes:")
    extra = ["accuracy", "completeness"] + ([SILHOUETTE] if SILHOUETTE in report.mean() else [])
    mean_head = ["", *[t for _, t in COLUMNS], *extra]
    mean_widths = [14, *[max(len(t), 10) for t in mean_head[1:]]]
    print(_row(mean_head, mean_widths))
    rows = [("model", report.mean())]
    if baseline:
        rows.append(("input voxels", baseline_mean))
    for label, m in rows:
        print(_row([label, *_metric_cells(m), *(f"{m[k]:.4f}" for k in extra)], mean_widths))
    classes = report.class_means()
    if classes:
        print_class_table(classes, report.mean_of_classes())
    empty = sum(s.faces == 0 for s in report.shapes)
    if empty:
        print(f"{empty} empty mesh(es), scored with the original's defaults")


def print_class_table(classes: dict[str, dict[str, Any]], mean: dict[str, float]) -> None:
    """Per class and the mean of the classes, in the units the paper prints: Chamfer-L1 times 10."""
    print(f"\nper class; Chamfer-L1 x{PAPER_CHAMFER_SCALE} (1/10 of the box edge as unit), as in the paper:")
    head = ["class", "shapes", "IoU", f"Chamfer-L1 x{PAPER_CHAMFER_SCALE}", "normals", "F@1%"]
    width = max(14, *(len(f"{c} {m['name'] or ''}") for c, m in classes.items()))
    widths = [width, 6, 8, len(head[3]), 8, 8]
    print(_row(head, widths))

    def cells(m: dict[str, Any]) -> list[str]:
        return [
            f"{m['iou']:.3f}",
            f"{PAPER_CHAMFER_SCALE * m['chamfer_l1']:.3f}",
            f"{m['normal_consistency']:.3f}",
            f"{m['fscore']:.3f}",
        ]

    for c, m in classes.items():
        label = f"{c} {m['name']}" if m["name"] and m["name"] != c else c
        print(_row([label, str(m["shapes"]), *cells(m)], widths))
    print(_row(["mean", str(sum(m["shapes"] for m in classes.values())), *cells(mean)], widths))


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def settings_from_args(args: argparse.Namespace) -> EvalSettings:
    """The evaluation settings that ``add_arguments``' options ask for (also used by bench/)."""
    from ..evaluation import EvalSettings

    return EvalSettings(
        split=args.split,
        n=args.n,
        resolution=args.resolution,
        tau=args.tau,
        seed=args.seed,
        iou_points=args.iou_points,
        surface_points=args.surface_points,
        source=args.source,
        classes=args.classes,
        data_dir=args.data_dir,
        points=args.points,
        noise=args.noise,
        views=args.views,
        cameras=args.cameras,
        fit_points=args.fit,
        outlines=args.outlines,
        open_cavities=args.open_cavities,
        hollow=args.hollow,
    )


def run(args: argparse.Namespace) -> int:
    from ..engine.reconstructor import Reconstructor
    from ..engine.types import InputError
    from ..evaluation import evaluate

    try:
        if args.json is not None and not args.json.parent.is_dir():
            raise InputError(f"folder for --json does not exist: {args.json.parent}")
        if args.json is not None and args.json.is_dir():
            raise InputError(f"--json {args.json} is an existing folder; give a file name")
        settings = settings_from_args(args)
        engine = Reconstructor(args.device, half=args.half, threads=args.threads)
        report = evaluate(engine, args.weights, settings)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_report(report, per_shape=not args.quiet)
    if args.json is not None:
        write_json(args.json, report.to_json())
        print(f"wrote {args.json}")
    return 0
