"""Copy a training run's best model into ``backend/weights`` and write its model card.

    python scripts/publish_model.py runs/pointcloud --name pointcloud [--eval runs/pointcloud/eval.json ...]

The weights keep the metadata written by training (config, tau, validation IoU, steps); the test-set
metrics from ``python -m backend evaluate --json`` are added to it and to the card, so that the card
and the file never disagree. Several ``--eval`` files (say, one per input density) give one table each.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.checkpoint import WEIGHTS_DIR, load_checkpoint, save_weights  # noqa: E402

OBSERVATION = {
    "pointcloud": "{n_points} surface points with Gaussian noise (std {noise}), in the unit cube",
    "voxels": "a 32^3 occupancy grid over the unit cube [-0.5, 0.5]^3, indexed [x, y, z]",
    "image": "one 64x64 RGB rendering from a random viewpoint; the prediction is in the camera-aligned frame",
    "unconditional": "none: a latent z ~ N(0, I) (a VAE trained with a PointNet latent encoder)",
    "views": "1 to 4 pictures of one object with their cameras, shot as users shoot reference pictures"
    " (backend/data/views.py) and framed by the engine to 64x64 RGB; the prediction is in the object's"
    " frame where the views' outlines meet",
}


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _table(rows: dict[str, Any], baseline: dict[str, Any] | None = None) -> str:
    """Metric table; ``baseline`` (the voxel model's input grid) adds a column."""
    head = "| metric | model |" + (" input voxels |" if baseline else "")
    lines = [head, "| --- | --- |" + (" --- |" if baseline else "")]
    for k, v in rows.items():
        extra = f" {_fmt(baseline.get(k))} |" if baseline else ""
        lines.append(f"| {k} | {_fmt(v)} |{extra}")
    return "\n".join(lines)


def _run_of(stage: dict[str, Any]) -> str:
    """ " (runs/x)" for a stage that recorded its run folder: stages of one chain share a name."""
    return f" ({stage['run']})" if stage.get("run") else ""


def _earlier(stage: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """The stage a run or stage came from, and how: fine-tuned from it, or distilled from it."""
    if stage.get("started_from"):
        return "started from", stage["started_from"]
    if stage.get("distilled_from"):
        return "was distilled from", stage["distilled_from"]
    return "", None


def _started_from_lines(training: dict[str, Any]) -> list[str]:
    """The card's line on the stages a fine-tuned or distilled run came from (none for a run from
    scratch); the totals count every stage, a distilled model's teacher's included."""
    chain: list[tuple[str, dict[str, Any]]] = []  # (how, stage): the model it came from, and so on
    how, src = _earlier(training)
    while src is not None:
        chain.append((how, src))
        how, src = _earlier(src)
    if not chain:
        return []
    stages = [stage for _, stage in chain]
    total_steps = sum(s.get("steps") or 0 for s in stages) + (training.get("steps") or 0)
    total_min = sum(s.get("wall_time_min") or 0 for s in stages) + (training.get("wall_time_min") or 0)
    described = [
        f"`{s.get('name')}`{_run_of(s)} ({s.get('steps')} steps on {s.get('n_train')} shapes,"
        f" {s.get('wall_time_min')} min, validation IoU {s.get('val_iou')})"
        for s in stages
    ]
    text = described[0] + "".join(
        f", which {how} {d}" for (how, _), d in zip(chain[1:], described[1:], strict=True)
    )
    first = "Started from the weights of" if chain[0][0] == "started from" else "Distilled from"
    return [f"- {first} {text}; {total_steps} steps and {round(total_min, 1)} min in all."]


def _automatic_lines(meta: Any) -> list[str]:
    if meta.automatic_points is None:
        return []
    low, high = meta.automatic_points
    span = f"clouds of {low:,} to {high - 1:,} points"
    return [f"- Automatic takes it for {span}, ahead of the kind's general model."]


def model_card(
    name: str,
    meta: Any,
    n_params: int,
    size_mb: float,
    evaluations: list[dict[str, Any]],
    note: str = "",
    reproduce: str = "",
    run: str = "",
) -> str:
    """The markdown model card; ``reproduce`` is the training command(s), ``run`` the run folder."""
    reproduce = reproduce or f"`python -m backend train backend/configs/{name}.toml`"
    run = run or f"runs/{name}"
    t = meta.training
    data = t.get("data", {})
    observation = OBSERVATION[meta.kind].format(n_points=data.get("n_points", 300), noise=data.get("noise"))
    if data.get("n_points_max"):  # a model for scans of any density
        observation = (
            f"{data['n_points']} to {data['n_points_max']} surface points (log-uniform), noise std"
            f" {data.get('noise')} to {data.get('noise_max')}, up to {data.get('outliers', 0):.0%} outliers,"
            f" density varying over the surface (gain {data.get('density_gain')}), and a share of"
            f" {data.get('partial_scans')} of partial scans seen from 1-4 viewpoints; in the unit cube"
        )
    if data.get("hollow"):
        observation += (
            f"; a share of {data['hollow']} of the shapes thin-walled and cut open (cups, bowls, open"
            " boxes, pipes: data/shapes.random_opening)"
        )
    val = meta.metrics.get("val_iou_by_tau", {})
    card = [
        f"# Model card: `{name}`",
        "",
        f"- Kind: **{meta.kind}**. Input: {observation}.",
        f"- Architecture: {json.dumps(meta.config)}",
        f"- Parameters: {n_params / 1e6:.2f} M; file: {size_mb:.1f} MB (float16 safetensors).",
        f"- Threshold tau = **{meta.tau}**, chosen on the validation set"
        " (IoU on 20k uniform points per shape, for tau in 0.1..0.9).",
        *_automatic_lines(meta),
        "",
        "## Data",
        "",
        f"Procedural CSG shapes generated by `backend/data/generate.py` (seed {data.get('seed')}):"
        f" {data.get('n_train')} training shapes, 128 validation shapes, a separate test split."
        " Query points: half uniform in the unit cube padded by 0.1, half near the surface (sigma 0.05),"
        f" near-surface ratio {data.get('near_surface_ratio')}. Nothing was downloaded.",
        "",
        "## Training",
        "",
        f"- Steps: {t.get('steps')}"
        f" (batch {t.get('batch_size')} shapes x {t.get('query_points')} query points),"
        f" Adam, cosine learning-rate decay. Wall time: {t.get('wall_time_min')} min on {t.get('device')}"
        " (a 2-core CPU).",
        *_started_from_lines(t),
        *([f"- {note}"] if note else []),
        f"- Reproduce: {reproduce} then `python scripts/publish_model.py {run} --name {name}`.",
        "",
        "## Validation (model selection)",
        "",
        f"Best validation IoU: {meta.metrics.get('val_iou')}."
        + (
            " (For this model it scores a random sample of the prior against each validation shape:"
            " it only tracks whether samples have a plausible size, and tau maximises it.)"
            if meta.kind == "unconditional"
            else ""
        ),
        "",
        "| tau | " + " | ".join(val) + " |",
        "| --- |" + " --- |" * len(val),
        "| IoU | " + " | ".join(f"{v:.3f}" for v in val.values()) + " |",
    ]
    for evaluation in evaluations:
        settings = {k: v for k, v in evaluation.get("settings", {}).items() if k != "data_dir"}
        observed = ", ".join(
            f"{k} {settings[k]}" for k in ("points", "noise", "views", "hollow") if settings.get(k)
        )
        if settings.get("cameras", "random") != "random":  # views models: outside the ranges, or a named set
            observed = ", ".join(filter(None, [observed, f"cameras {settings['cameras']}"]))
        if settings.get("source", "procedural") != "procedural":  # another test set, e.g. the unfamiliar one
            observed = f"{settings['source']}, {observed}" if observed else str(settings["source"])
        card += [
            "",
            f"## Test set (`python -m backend evaluate`){f': {observed}' if observed else ''}",
            "",
            f"Settings: {json.dumps(settings)}. Distances are in units of the unit cube's edge"
            " (the paper's Chamfer figures are 10x these).",
            "",
        ]
        if evaluation.get("mean"):
            card += [_table(evaluation["mean"], evaluation.get("input_voxels_mean"))]
        keys = ("closed_fraction", "empty_meshes", "seconds_per_shape")
        extra = {k: v for k, v in evaluation.items() if k in keys}
        if extra:
            card += ["", ", ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in extra.items()) + "."]
    return "\n".join(card) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="training run folder (holds best.safetensors)")
    parser.add_argument("--name", required=True, help="published model name (file stem)")
    parser.add_argument(
        "--eval",
        type=Path,
        action="append",
        default=[],
        help="JSON written by `python -m backend evaluate --json` (repeat for several settings)",
    )
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--note", default="", help="a remark on how the run went, for the card")
    parser.add_argument(
        "--reproduce",
        default="",
        help="the training command(s) for the card, in markdown (default: train configs/NAME.toml)",
    )
    parser.add_argument(
        "--automatic-points",
        type=int,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="point-cloud models: Automatic takes this model for clouds of LOW to HIGH-1 points, ahead "
        "of the kind's general model (for a sparse model that measured better there)",
    )
    args = parser.parse_args()

    model, meta = load_checkpoint(args.run / "best.safetensors")
    meta.name = args.name
    if args.automatic_points is not None:
        low, high = args.automatic_points
        if not 0 <= low < high:
            parser.error(f"--automatic-points needs 0 <= LOW < HIGH, got {low} {high}")
        meta.automatic_points = [low, high]
    evaluations = [json.loads(path.read_text()) for path in args.eval]
    if evaluations:
        meta.metrics["test"] = evaluations[0].get("mean", {})
    if len(evaluations) > 1:
        meta.metrics["tests"] = [
            {"settings": e.get("settings", {}), "mean": e.get("mean", {})} for e in evaluations
        ]
    args.weights_dir.mkdir(parents=True, exist_ok=True)
    out = args.weights_dir / f"{args.name}.safetensors"
    save_weights(out, model, meta)
    n_params = sum(p.numel() for p in model.parameters())
    card = model_card(
        args.name,
        meta,
        n_params,
        out.stat().st_size / 1e6,
        evaluations,
        args.note,
        args.reproduce,
        args.run.as_posix(),
    )
    (args.weights_dir / f"{args.name}.md").write_text(card)
    print(f"published {out} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
