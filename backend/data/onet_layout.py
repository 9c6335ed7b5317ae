"""The original Occupancy Networks' preprocessed ShapeNet layout: read directly, and written from
this project's procedural shapes (to test with, and to try the layout without the 73 GB download).

::

    ROOT/
      metadata.yaml              optional: {"<class>": {"id": "<class>", "name": "chair,..."}} (JSON text)
      <class>/                   e.g. 03001627
        train.lst val.lst test.lst   the split: object folder names, one a line
        <object>/
          points.npz             points (N, 3) float16 uniform in [-0.55, 0.55]^3,
                                 occupancies (packbits of N bools), loc, scale
          pointcloud.npz         points, normals (N, 3): surface samples, loc, scale
          model.binvox           32^3 voxels over [-0.5, 0.5]^3
          img_choy2016/          000.jpg 001.jpg ... renderings, cameras.npz with world_mat_i
                                 (3 x 4, world to camera) and camera_mat_i (3 x 3, pixels)

Everything is in the normalised object frame (longest bounding-box side 1), the prediction
frame of every kind: image models predict the object in its own frame, as the original's do.
Objects are read when a batch needs them (the set does not fit in memory); training uses the
original's settings (``ORIGINAL_SETTINGS``): its query points are drawn with replacement from
points.npz and jittered by 1e-4 (float16 positions), its clouds are 300 points of pointcloud.npz
with noise 0.005, its image is a random view (view 0 for validation and tests).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..config import DataConfig
from ..engine.binvox import read_binvox, write_binvox
from ..engine.types import InputError
from ..kinds import kind as input_kind
from ..models.views import ModelInput
from ..wire.constants import FOV_DEGREES, VOXEL_RES
from .dataset import Batch, DataError, ShapePool, validation_set
from .shapes import Frame

POINTS, POINTCLOUD, VOXELS, IMAGES, CAMERAS = (
    "points.npz",
    "pointcloud.npz",
    "model.binvox",
    "img_choy2016",
    "cameras.npz",
)
METADATA = "metadata.yaml"
SPLITS = ("train", "val", "test")
PADDING = 0.1  # points.npz spans [-(1 + PADDING) / 2, (1 + PADDING) / 2]^3
JITTER = 1e-4  # the original's noise on float16 query points, which breaks their grid symmetry
CHOY_IMAGE_PX = 137  # the size of Choy et al.'s renderings


def original_settings(kind: str) -> dict[str, Any]:
    """The original's data settings for a model of ``kind`` (configs/*/onet.yaml): a config's
    ``[data]`` keys override them."""
    return {
        "query_points": 1024 if kind == "voxels" else 2048,  # points_subsample
        "near_surface_ratio": 0.0,  # points.npz holds uniform points only
        "n_points": 300,  # pointcloud_n
        "noise": 0.005,  # pointcloud_noise
        "views": 24,  # n_views: a random one of them per step
        "padding": PADDING,
    }


def is_onet_layout(source: str | Path) -> bool:
    """Does ``source`` look like the original's dataset folder (class folders with split lists)?"""
    root = Path(source)
    if not root.is_dir() or (root / "dataset.json").exists():  # a prepare-meshes folder
        return False
    if (root / METADATA).is_file():
        return True
    return any(c.is_dir() and any((c / f"{s}.lst").is_file() for s in SPLITS) for c in root.iterdir())


@dataclass(frozen=True)
class Entry:
    category: str
    model: str


def class_names(root: Path) -> dict[str, str]:
    """Class id -> its first name in metadata.yaml ("sofa,couch,lounge" -> "sofa"); {} without one.

    The original's metadata.yaml is JSON text, read here as such.
    """
    try:
        meta = json.loads((root / METADATA).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(meta, dict):
        return {}
    return {
        str(k): str(v["name"]).split(",")[0]
        for k, v in meta.items()
        if isinstance(v, dict) and isinstance(v.get("name"), str)
    }


def spread(total: int, n: int) -> list[int]:
    """n indices evenly spread over ``range(total)`` (all of them if n >= total): a share of every
    class of a split listed class after class."""
    if n >= total:
        return list(range(total))
    return [i * total // n for i in range(n)]


class OnetPool:
    """One split of a dataset in the original's layout, read object by object."""

    def __init__(self, root: str | Path, split: str, classes: Sequence[str] = ()) -> None:
        self.root = Path(root)
        if not is_onet_layout(self.root):
            raise DataError(
                f"{self.root} is not a dataset in the original's layout (class folders with .lst files)"
            )
        found = sorted(c.name for c in self.root.iterdir() if c.is_dir() and any(c.glob("*.lst")))
        missing = [c for c in classes if c not in found]
        if missing:
            raise DataError(f"class(es) {', '.join(missing)} not in {self.root} (it has {', '.join(found)})")
        self.classes = list(classes) or found
        self.names_of_classes = class_names(self.root)
        self.entries: list[Entry] = []
        for c in self.classes:
            listing = self.root / c / f"{split}.lst"
            try:
                lines = listing.read_text().splitlines()
            except OSError as e:
                raise DataError(
                    f"cannot read the {split} split of class {c}: {listing} ({e.strerror})"
                ) from None
            self.entries += [Entry(c, line.strip()) for line in lines if line.strip()]
        if not self.entries:
            raise DataError(f"the {split} split of {self.root} lists no objects")
        self.names = [f"{e.category}/{e.model}" for e in self.entries]

    def __len__(self) -> int:
        return len(self.entries)

    def class_name(self, category: str) -> str:
        return self.names_of_classes.get(category, category)

    def folder(self, i: int) -> Path:
        e = self.entries[i]
        return self.root / e.category / e.model

    # ------------------------------------------------------------------ reading objects
    def _npz(self, i: int, file: str, keys: tuple[str, ...]) -> list[np.ndarray]:
        path = self.folder(i) / file
        try:
            with np.load(path, allow_pickle=False) as f:
                return [f[k] for k in keys]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise DataError(f"cannot read {path}: {e}") from None

    def _query_points(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        points, bits = self._npz(i, POINTS, ("points", "occupancies"))
        if points.ndim != 2 or points.shape[1] != 3:
            raise DataError(f"{self.folder(i) / POINTS}: points must be (N, 3), got {points.shape}")
        occ = np.unpackbits(bits)[: len(points)] if bits.dtype == np.uint8 else bits > 0.5
        if len(occ) != len(points):
            raise DataError(f"{self.folder(i) / POINTS}: fewer occupancies than points")
        return points, occ.astype(bool)

    def _views(self, i: int) -> list[Path]:
        return sorted((self.folder(i) / IMAGES).glob("*.jpg"))

    def _image(self, i: int, view: int, size: int) -> np.ndarray:
        views = self._views(i)
        if not views:
            raise DataError(f"{self.folder(i) / IMAGES} holds no .jpg views")
        path = views[min(view, len(views) - 1)]
        try:
            with Image.open(path) as img:
                rgb = img.convert("RGB")
        except OSError as e:
            raise DataError(f"cannot read {path}: {e}") from None
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)  # the original's Resize
        return np.asarray(rgb, np.uint8)

    def _voxels(self, i: int) -> np.ndarray:
        path = self.folder(i) / VOXELS
        try:
            grid = read_binvox(path).voxels  # its bounds are ignored, as the original does
        except InputError as e:
            raise DataError(str(e)) from None
        if grid.shape != (VOXEL_RES,) * 3:
            raise DataError(f"{path} is {grid.shape}, not the {VOXEL_RES}^3 grid voxel models take")
        return grid

    def load(
        self, rows: Sequence[int], kind: str, cfg: DataConfig, views: Sequence[int] | None, full: bool = False
    ) -> ShapePool:
        """Objects ``rows`` in memory, as a pool of len(rows) shapes; what ``kind`` observes (and
        with ``full``, the ground truth evaluation needs), and the view of each in ``views``."""
        b = len(rows)
        queries = [self._query_points(i) for i in rows]
        n = min(len(p) for p, _ in queries)  # files may hold different counts: the first n of each
        points = np.stack([p[:n] for p, _ in queries])
        arrays: dict[str, np.ndarray] = {
            "uniform_points": points,
            "uniform_occ": np.packbits(np.stack([o[:n] for _, o in queries]), axis=1),
            "near_points": np.zeros((b, 0, 3), points.dtype),
            "near_occ": np.zeros((b, 0), np.uint8),
            "names": np.array([self.names[i] for i in rows]),
        }
        if full or kind == "pointcloud":
            clouds = [self._npz(i, POINTCLOUD, ("points", "normals")) for i in rows]
            k = min(len(p) for p, _ in clouds)
            arrays["surface"] = np.stack([p[:k] for p, _ in clouds])
            arrays["normals"] = np.stack([nrm[:k] for _, nrm in clouds])
        else:
            arrays["surface"] = arrays["normals"] = np.zeros((b, 0, 3), np.float16)
        if full or kind == "voxels":
            arrays["voxels"] = np.packbits(np.stack([self._voxels(i) for i in rows]).reshape(b, -1), axis=1)
        else:
            arrays["voxels"] = np.zeros((b, VOXEL_RES**3 // 8), np.uint8)
        if views is not None:
            images = np.stack([self._image(i, v, cfg.image_size) for i, v in zip(rows, views, strict=True)])
            arrays["images"] = images[:, None]
        else:
            arrays["images"] = np.zeros((b, 0, cfg.image_size, cfg.image_size, 3), np.uint8)
        v = arrays["images"].shape[1]
        arrays["view_rot"] = np.broadcast_to(np.eye(3, dtype=np.float32), (b, v, 3, 3)).copy()
        arrays["view_center"] = np.zeros((b, v, 3), np.float32)
        arrays["view_scale"] = np.ones((b, v), np.float32)
        return ShapePool(arrays)

    # ------------------------------------------------------------------ what training and tests use
    def check_kind(self, kind: str) -> None:
        if input_kind(kind).viewed and not self._views(0):
            raise DataError(
                f"{self.folder(0) / IMAGES} holds no views, so this dataset cannot feed an image model"
            )

    def batch(self, kind: str, idx: torch.Tensor, cfg: DataConfig, gen: torch.Generator) -> Batch:
        """A training batch as the original draws it (see the module's docstring)."""
        rows = idx.tolist()
        views = None
        if input_kind(kind).viewed:
            counts = [min(len(self._views(i)), cfg.views) for i in rows]
            views = [int(torch.randint(max(c, 1), (), generator=gen)) for c in counts]
        pool = self.load(rows, kind, cfg, views)
        batch = pool.batch(kind, torch.arange(len(rows)), cfg, gen)
        if pool.queries is not None and pool.queries.uniform.dtype == torch.float16:
            batch.points = batch.points + JITTER * torch.randn(batch.points.shape, generator=gen)
        return batch

    def held_out(self, i: int, kind: str, cfg: DataConfig) -> ShapePool:
        """Object i with its ground truth and, for image models, view 0 (as the original tests)."""
        return self.load([i], kind, cfg, [0] if input_kind(kind).viewed else None, full=True)

    def validation_set(
        self, kind: str, cfg: DataConfig, n_points: int, n: int
    ) -> list[tuple[ModelInput | None, torch.Tensor, torch.Tensor]]:
        """``validation_set`` over n objects spread over the split, read one at a time."""
        out = []
        for i in spread(len(self), n):
            out += validation_set(self.held_out(i, kind, cfg), kind, cfg, n_points, seed=1234 + i)
        return out


# ---------------------------------------------------------------------------------------- writing
def look_at(azimuth: float, elevation: float) -> np.ndarray:
    """The rotation from the object frame into a camera frame (x right, y up, the camera on +z)
    that sees the object from ``azimuth`` and ``elevation`` (degrees, y up)."""
    a, e = math.radians(azimuth), math.radians(elevation)
    back = np.array([math.cos(e) * math.cos(a), math.sin(e), math.cos(e) * math.sin(a)])
    right = np.cross([0.0, 1.0, 0.0], back)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(back, right), back])


def camera_matrices(rot: np.ndarray, distance: float, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(world_mat 3 x 4, camera_mat 3 x 3) in the original's convention: x_cam = world_mat @ [p, 1]
    with the camera looking down +z and y down, pixel = camera_mat @ x_cam / z."""
    flip = np.diag([1.0, -1.0, -1.0])  # from x right, y up, looking down -z
    world = np.concatenate([flip @ rot, (flip @ np.array([0.0, 0.0, -distance]))[:, None]], axis=1)
    f = 0.5 * size / math.tan(math.radians(FOV_DEGREES) / 2)
    camera = np.array([[f, 0.0, 0.5 * size], [0.0, f, 0.5 * size], [0.0, 0.0, 1.0]])
    return world.astype(np.float32), camera.astype(np.float32)


def write_object(
    folder: Path,
    shape: dict[str, np.ndarray],
    rng: np.random.Generator,
    points: int = 100_000,
    views: int = 24,
    image_px: int = CHOY_IMAGE_PX,
) -> None:
    """One procedural shape (``generate.make_shape``, its surface samples become pointcloud.npz)
    as an object folder of the original's layout."""
    from ..wire.constants import CAMERA_DISTANCE
    from .render import render

    folder.mkdir(parents=True, exist_ok=True)
    # around the object, a little above it, as Choy et al.'s renderings
    angles = [(360.0 * k / views + rng.uniform(0, 15), rng.uniform(25, 30)) for k in range(views)]
    rots = np.stack([look_at(a, e) for a, e in angles]) if views else np.zeros((0, 3, 3))
    one = {k: np.asarray(v)[None] for k, v in shape.items()}
    one["view_rot"] = rots[None].astype(np.float32)
    one["view_center"] = np.zeros((1, views, 3), np.float32)
    one["view_scale"] = np.ones((1, views), np.float32)
    pool = ShapePool(one)
    shapes = pool.shapes
    assert shapes is not None  # a procedural shape: its CSG gives exact occupancy
    idx = torch.zeros(1, dtype=torch.long)
    half = 0.5 * (1 + PADDING)
    uniform = rng.uniform(-half, half, (points, 3)).astype(np.float16)  # labelled where stored
    occ = shapes.occupancy(torch.from_numpy(uniform.astype(np.float32))[None])[0].numpy() > 0.5
    loc, scale = np.zeros(3, np.float32), np.float32(1.0)
    np.savez(folder / POINTS, points=uniform, occupancies=np.packbits(occ), loc=loc, scale=scale)
    np.savez(
        folder / POINTCLOUD,
        points=shape["surface"].astype(np.float16),
        normals=shape["normals"].astype(np.float16),
        loc=loc,
        scale=scale,
    )
    grid = np.unpackbits(shape["voxels"])[: VOXEL_RES**3].reshape((VOXEL_RES,) * 3).astype(bool)
    write_binvox(folder / VOXELS, grid, translate=(-0.5, -0.5, -0.5), scale=1.0)
    image_dir = folder / IMAGES
    image_dir.mkdir(exist_ok=True)
    cameras: dict[str, np.ndarray] = {}
    for k in range(views):
        frame = pool.frame(idx, torch.tensor([k]), shapes)

        def sdf(p: torch.Tensor, frame: Frame | None = frame) -> torch.Tensor:
            return shapes.sdf(p, frame)

        image = render(sdf, 1, image_px, rng)[0]
        Image.fromarray(image).save(image_dir / f"{k:03d}.jpg", quality=95)
        world, camera = camera_matrices(rots[k], CAMERA_DISTANCE, image_px)
        cameras[f"world_mat_{k}"], cameras[f"camera_mat_{k}"] = world, camera
    np.savez(image_dir / CAMERAS, **cameras)


def write_procedural(
    root: Path,
    classes: int = 3,
    objects: dict[str, int] | None = None,
    points: int = 100_000,
    surface_points: int = 100_000,
    views: int = 24,
    image_px: int = CHOY_IMAGE_PX,
    seed: int = 0,
) -> list[str]:
    """A dataset of procedural shapes in the original's layout under ``root``; returns the class ids.

    ``objects``: objects per class in each split (default 4 train, 1 val, 1 test). Class c's
    shapes come from the procedural generator with data seed ``seed * 1000 + c``.
    """
    from .generate import SPLITS as SPLIT_IDS
    from .generate import make_shape

    counts = {"train": 4, "val": 1, "test": 1} if objects is None else objects
    cfg = DataConfig(surface_points=surface_points, views=0)
    ids = [f"9{c:07d}" for c in range(classes)]  # 8 digits, like ShapeNet's synset ids
    root.mkdir(parents=True, exist_ok=True)
    for c, class_id in enumerate(ids):
        for split, n in counts.items():
            names = []
            for i in range(n):
                name = f"{split}{i:04d}"
                shape = make_shape(seed * 1000 + c, SPLIT_IDS[split], i, cfg)
                rng = np.random.default_rng([seed, c, SPLIT_IDS[split], i])
                write_object(root / class_id / name, shape, rng, points, views, image_px)
                names.append(name)
            # no final newline: the original reads every line, an empty last one included
            (root / class_id / f"{split}.lst").write_text("\n".join(names))
    metadata = {i: {"id": i, "name": f"procedural {c}"} for c, i in enumerate(ids)}
    (root / METADATA).write_text(json.dumps(metadata, indent=4))
    return ids
