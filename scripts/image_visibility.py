"""Where an image model's errors lie: in what its view shows, or in what the view hides.

    python scripts/image_visibility.py backend/weights/image.safetensors [--n 32]

For view 0 of each validation shape (the split training makes), points uniform in the padded box
(as for the IoU) are split into those the image shows to be empty (outside the silhouette, or in
front of the visible surface) and the hidden ones behind the visible surface
(``backend/data/visibility.py``). Prints the model's accuracy on each, its IoU, and the IoU it
would reach if it were right on either part; and, for scale, the IoU of the largest shape the
view allows (every hidden point inside).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from backend.checkpoint import load_checkpoint  # noqa: E402
from backend.config import DataConfig  # noqa: E402
from backend.data.dataset import ShapePool  # noqa: E402
from backend.data.generate import build_split  # noqa: E402
from backend.data.visibility import HIDDEN, IN_FRONT, OUTSIDE_SILHOUETTE, classify  # noqa: E402
from backend.models.onet import OccupancyNetwork  # noqa: E402
from backend.training import iou  # noqa: E402


@torch.inference_mode()
def analyse(model: OccupancyNetwork, tau: float, pool: ShapePool, n: int, points: int) -> dict[str, float]:
    """Means over the first ``n`` shapes of ``pool`` (view 0)."""
    assert pool.shapes is not None
    gen = torch.Generator().manual_seed(0)
    rows: dict[str, list[float]] = {}
    for i in range(min(n, len(pool))):
        idx, views = torch.tensor([i]), torch.zeros(1, dtype=torch.long)
        pts, occ = pool.uniform_labelled(idx, points, 0.1, gen, views)
        gt = occ > 0.5
        shapes = pool.shapes.select(idx)
        frame = pool.frame(idx, views, shapes)
        assert frame is not None  # the camera frame of view 0
        where = classify(shapes, frame, pts)
        unseen = where == HIDDEN
        image = pool.images[idx, 0].permute(0, 3, 1, 2).float() / 255.0
        c, obs = model.encode_local(image)
        pred = torch.sigmoid(model.decode(pts, None, c, obs)) >= tau
        right = pred == gt
        values = {
            "share_outside_silhouette": (where == OUTSIDE_SILHOUETTE).float().mean(),
            "share_in_front": (where == IN_FRONT).float().mean(),
            "share_hidden": unseen.float().mean(),
            "accuracy_outside_silhouette": right[where == OUTSIDE_SILHOUETTE].float().mean(),
            "accuracy_in_front": right[where == IN_FRONT].float().mean(),
            "accuracy_hidden": right[unseen].float().mean(),
            "iou": iou(pred, gt),
            "iou_if_right_where_seen": iou(torch.where(unseen, pred, gt), gt),
            "iou_if_right_where_hidden": iou(torch.where(unseen, gt, pred), gt),
            "iou_all_hidden_inside": iou(unseen, gt),
        }
        for k, v in values.items():
            rows.setdefault(k, []).append(float(v))
    # a shape may have no points of a class: its accuracy there is NaN and left out
    return {k: float(torch.tensor(v).nanmean()) for k, v in rows.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--size", type=int, default=128, help="the validation split's size (data.n_val)")
    ap.add_argument("--n", type=int, default=32, help="shapes to analyse")
    ap.add_argument("--points", type=int, default=10000)
    ap.add_argument("--data-dir", type=Path, default=REPO / ".data")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, meta = load_checkpoint(args.model)
    if meta.kind != "image":
        raise SystemExit(f"{args.model} is a {meta.kind} model: this analysis is for image models")
    # the validation split as training makes it, so that a cached one is reused
    cfg = DataConfig(image_size=meta.model_config().image_size)
    pool = ShapePool(build_split(cfg, "val", args.size, args.data_dir / "procedural"))
    result = analyse(model, meta.tau, pool, args.n, args.points)
    for k, v in result.items():
        print(f"{k:28s} {v:.4f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
