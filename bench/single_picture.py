"""One plain picture: the image model against the views model, like for like.

A user's single picture can go to the image model (one fixed camera, the object framed in the
picture), to the views model with the picture's camera, or, as a plain picture whose camera is not
known, to the views model through the image models' camera (``engine.views.picture_as_view``).
This scores all three on the same held-out pictures, shot as users shoot them (the views test
split: ``--cameras random`` or ``outside``), in the same frame: the image model predicts in the
camera's axes around the object's centre, so its unit-frame mesh is turned into the world by the
picture's camera and placed and sized where the views engine places the object from that one
picture (``engine.views.prepare_views``). The plain picture's mesh is turned the same way, so that
only what the model makes of the picture differs, not where the unknown camera puts it. All
meshes are then scored against the ground truth by ``backend.evaluation.score``.

    python bench/single_picture.py --n 100
    python bench/single_picture.py --n 100 --cameras outside --json single.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.allocator import ensure_fast_allocator  # noqa: E402

ensure_fast_allocator(sys.argv)

from backend.engine.observation import UserFrame, prepare_image  # noqa: E402
from backend.engine.reconstructor import Reconstructor  # noqa: E402
from backend.engine.types import Observation  # noqa: E402
from backend.engine.views import picture_as_view, prepare_views  # noqa: E402
from backend.evaluation import EVAL_CAMERAS, METRICS, EvalSettings, score, test_cases  # noqa: E402

SHOWN = ("iou", "chamfer_l1", "fscore", "silhouette_iou")


def camera_axes_to_world(unit: np.ndarray, camera: np.ndarray, place: UserFrame) -> np.ndarray:
    """A mesh in a camera's axes around the object's centre, its size the unit frame's -> the
    world, through ``camera``'s rotation and the views engine's placement ``place`` of the object."""
    rotation = np.asarray(camera, np.float64)[:9].reshape(3, 3)  # world -> camera
    return place.to_user(np.asarray(unit, np.float64) @ rotation)


def image_in_world(
    vertices: np.ndarray, picture: np.ndarray, camera: np.ndarray, place: UserFrame
) -> np.ndarray:
    """The image model's mesh (in its picture's frame) -> the world, through the picture's camera
    and the views engine's placement ``place`` (a UserFrame) of the object seen in it."""
    crop = prepare_image(picture, 64).frame
    return camera_axes_to_world((np.asarray(vertices, np.float64) - crop.center) / crop.scale, camera, place)


def assumed_in_world(
    vertices: np.ndarray, picture: np.ndarray, camera: np.ndarray, place: UserFrame
) -> np.ndarray:
    """The views model's mesh of a plain picture, made through the camera the engine assumes for it
    (``picture_as_view``) -> the world of the picture's true ``camera``: into the assumed camera's
    axes, then as ``camera_axes_to_world``."""
    view = picture_as_view(Observation(image=picture))
    assert view.views is not None and view.cameras is not None
    assumed = prepare_views(view.views, view.cameras, 64, outlines=False).frame
    rotation = np.asarray(view.cameras, np.float64)[0, :9].reshape(3, 3)
    return camera_axes_to_world(assumed.to_unit(vertices).astype(np.float64) @ rotation.T, camera, place)


def compare(settings: EvalSettings, image_model: str, views_model: str, progress: bool = True) -> dict:
    engine = Reconstructor("cpu")
    _, meta = engine.load(views_model)
    options = settings.reconstruct_options()
    rows: dict[str, list[dict[str, float]]] = {"image": [], "views": [], "assumed": []}
    for case in test_cases(meta.kind, meta, settings, progress):
        obs = case.observation
        assert obs.views is not None and obs.cameras is not None
        views = engine.reconstruct(views_model, obs, options)
        rows["views"].append(score(case, views.vertices, views.faces, settings))
        picture, camera = obs.views[0], obs.cameras[0]
        image = engine.reconstruct(image_model, Observation(image=picture), options)
        place = prepare_views(obs.views[:1], obs.cameras[:1], 64, outlines=False).frame
        world = image_in_world(image.vertices, picture, camera, place)
        rows["image"].append(score(case, world, image.faces, settings))
        plain = engine.reconstruct(views_model, Observation(image=picture), options)  # a plain picture
        world = assumed_in_world(plain.vertices, picture, camera, place)
        rows["assumed"].append(score(case, world, plain.faces, settings))
    keys = [k for k in (*METRICS, "silhouette_iou") if k in rows["views"][0]]
    return {
        "settings": {k: str(v) for k, v in vars(settings).items()},
        "mean": {m: {k: float(np.mean([r[k] for r in rs])) for k in keys} for m, rs in rows.items()},
        "shapes": rows,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100, help="held-out shapes")
    p.add_argument("--cameras", default="random", choices=EVAL_CAMERAS[:2], help="how they are shot")
    p.add_argument("--image-model", default="image")
    p.add_argument("--views-model", default="views")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    settings = EvalSettings(n=args.n, views=1, cameras=args.cameras)
    settings.check()
    result = compare(settings, args.image_model, args.views_model)
    print(f"{args.n} shapes, one picture each, cameras {args.cameras}")
    print(f"{'model':>8}" + "".join(f"{k:>16}" for k in SHOWN))
    for name, mean in result["mean"].items():
        print(f"{name:>8}" + "".join(f"{mean.get(k, float('nan')):>16.4f}" for k in SHOWN))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
