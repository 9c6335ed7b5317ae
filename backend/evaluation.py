"""Evaluation of a model on held-out shapes, with the metrics of the original ONet code.

Every shape is reconstructed by the engine (``Reconstructor``, the model's own tau unless
another is given) from the kind of observation the model was trained on, then compared
with the ground truth in the normalised frame, where the longest side of the object's
bounding box is 1 (the camera-aligned frame for image models):

- IoU: occupancy at ``iou_points`` points uniform in the padded box [-0.55, 0.55]^3. The
  ground truth is exact (the procedural shapes' CSG, or the labels stored with a mesh
  dataset); the prediction is containment in the extracted (closed) mesh, by ray parity.
- accuracy / completeness: mean distance from each of ``surface_points`` samples on the
  predicted mesh to the nearest ground-truth surface sample, and the reverse.
  Chamfer-L1 = (accuracy + completeness) / 2, with Euclidean distances. The paper reports
  10x these values (1/10 of the box edge as unit); here the unit is the box edge.
- normal consistency: the mean |cos| between the normal at a sample and at its nearest
  neighbour on the other surface, averaged over both directions.
- F-score at 1% of the box edge: harmonic mean of the share of predicted samples within
  0.01 of the ground truth (precision) and the share of ground-truth samples within 0.01
  of the prediction (recall), as in ConvONet.
- An empty mesh scores IoU 0, accuracy = completeness = Chamfer-L1 = sqrt(3), normal
  consistency -1 and F-score 0, the original's defaults.

For the voxel model the input grid itself is scored as a baseline (its IoU from the grid,
its surface from the exposed voxel faces). The unconditional model has no ground truth:
N samples are drawn and the share of non-empty closed meshes is reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial import cKDTree

from .checkpoint import ModelMeta
from .config import DataConfig
from .containment import ray_parity
from .data.cameras import Cameras
from .data.dataset import ShapePool
from .data.generate import SPLITS
from .data.onet_layout import OnetPool, spread
from .data.sources import open_split
from .engine.extract import check_tau
from .engine.grid import check_resolution
from .engine.reconstructor import Reconstructor
from .engine.types import InputError, MeshResult, Observation, ReconstructOptions
from .engine.views import MAX_VIEWS
from .kinds import kind as input_kind
from .limits import MAX_EVAL_SHAPES, MAX_POINTS
from .wire.views import VIEW_SETS

DEFAULT_POINTS, DEFAULT_NOISE = 300, 0.005  # the original's point-cloud setting
PADDING = 0.1
EMPTY = {
    "accuracy": math.sqrt(3),
    "completeness": math.sqrt(3),
    "chamfer_l1": math.sqrt(3),
    "normal_consistency": -1.0,
    "fscore": 0.0,
}
METRICS = ("iou", "chamfer_l1", "normal_consistency", "fscore", "accuracy", "completeness")
# image and views models also: the predicted surface's silhouette through each input camera
# against the object's, each splatted from 100k surface samples at the input picture's resolution
# (the mean over the views)
SILHOUETTE = "silhouette_iou"
EVAL_CAMERAS = ("random", "outside", *VIEW_SETS)  # how a views model's held-out shapes are shot


@dataclass
class EvalSettings:
    split: str = "test"
    n: int = 256
    resolution: int = 128
    tau: float | None = None  # None: the model's own threshold
    seed: int = 0  # data seed of the held-out split (the same for every model)
    iou_points: int = 100_000
    surface_points: int = 100_000
    fscore_threshold: float = 0.01
    source: str = "procedural"  # or a folder made by prepare-meshes, or one in the original's layout
    classes: list[str] = field(default_factory=list)  # the original's layout: these classes (all)
    data_dir: Path = Path(".data")
    # point clouds: observed points and noise std (None: the model's fixed training setting, or
    # the original's 300 points with noise 0.005 for models of any density), and viewpoints of a
    # partial scan (0: the whole surface)
    points: int | None = None
    noise: float | None = None
    views: int = 0  # views models: the first this many views (0: all of them)
    # views models: "random" views, views shot and lit "outside" the training ranges, or a named
    # set (wire.views.VIEW_SETS)
    cameras: str = "random"
    fit_points: bool = True  # point clouds: the surface fitted to the points (engine/fit.py), as by default
    outlines: bool = True  # views: the field blended with the views' outlines (engine/outlines.py)
    open_cavities: bool = True  # point clouds: filled open cavities carved (engine/cavities.py)
    hollow: float = 0.0  # procedural shapes: the share made thin-walled and cut open (a split of its own)

    def reconstruct_options(self) -> ReconstructOptions:
        """How every test shape is reconstructed (the engine's defaults otherwise)."""
        return ReconstructOptions(
            tau=self.tau,
            resolution=self.resolution,
            fit_points=self.fit_points,
            outlines=self.outlines,
            open_cavities=self.open_cavities,
            keep_field=False,
        )

    def check(self) -> None:
        for name in ("n", "iou_points", "surface_points"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
            limit = MAX_EVAL_SHAPES if name == "n" else MAX_POINTS
            if value > limit:
                raise InputError(f"{name} may be at most {limit:,}, got {value:,}")
        if self.points is not None and not 1 <= self.points <= MAX_POINTS:
            raise InputError(f"points must be 1 to {MAX_POINTS:,}, got {self.points}")
        if self.noise is not None and not 0 <= self.noise < 0.5:
            raise InputError(f"noise must lie in [0, 0.5), got {self.noise}")
        if not 0 <= self.hollow <= 1:
            raise InputError(f"hollow must lie in [0, 1], got {self.hollow}")
        if not 0 <= self.views <= 16:
            raise InputError(f"views must be 0 (the whole surface) to 16, got {self.views}")
        if self.cameras not in EVAL_CAMERAS:
            raise InputError(f"cameras must be one of {', '.join(EVAL_CAMERAS)}, got {self.cameras!r}")
        if not (0 < self.fscore_threshold < 1):
            raise InputError(f"the F-score threshold must lie in (0, 1), got {self.fscore_threshold}")
        check_resolution(self.resolution)
        if self.tau is not None:
            check_tau(self.tau)
        if self.split not in SPLITS:
            raise InputError(f"unknown split {self.split!r}: use one of {', '.join(SPLITS)}")


@dataclass
class ShapeResult:
    index: int
    name: str
    metrics: dict[str, float]
    baseline: dict[str, float] | None = None  # input voxels scored as a prediction
    faces: int = 0
    seconds: float = 0.0
    category: str | None = None  # the class folder, in the original's layout
    category_name: str | None = None


@dataclass
class SampleResult:
    seed: int
    faces: int
    closed: bool
    volume: float
    seconds: float = 0.0


@dataclass
class Report:
    model: str
    kind: str
    tau: float
    settings: dict[str, Any]
    shapes: list[ShapeResult] = field(default_factory=list)
    samples: list[SampleResult] = field(default_factory=list)

    def mean(self) -> dict[str, float]:
        return _mean([s.metrics for s in self.shapes])

    def class_means(self) -> dict[str, dict[str, Any]]:
        """Per class (the original's layout): its name, shape count and mean metrics."""
        out: dict[str, dict[str, Any]] = {}
        for c in dict.fromkeys(s.category for s in self.shapes if s.category is not None):
            rows = [s for s in self.shapes if s.category == c]
            out[c] = {"name": rows[0].category_name, "shapes": len(rows), **_mean([s.metrics for s in rows])}
        return out

    def mean_of_classes(self) -> dict[str, float]:
        """The mean of the class means: the original's ``mean`` row."""
        return _mean([{k: m[k] for k in METRICS} for m in self.class_means().values()])

    def baseline_mean(self) -> dict[str, float] | None:
        rows = [s.baseline for s in self.shapes if s.baseline is not None]
        return _mean(rows) if rows else None

    def closed_fraction(self) -> float:
        good = [s.faces > 0 and s.closed for s in self.samples]
        return float(np.mean(good)) if good else 0.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "kind": self.kind,
            "tau": self.tau,
            "settings": self.settings,
        }
        if self.kind == "unconditional":
            out["closed_fraction"] = self.closed_fraction()
            out["samples"] = [asdict(s) for s in self.samples]
            return out
        out["mean"] = self.mean()
        baseline = self.baseline_mean()
        if baseline is not None:
            out["input_voxels_mean"] = baseline
        classes = self.class_means()
        if classes:
            out["units"] = "chamfer_l1, accuracy, completeness: box edges; the paper prints Chamfer-L1 x 10"
            out["classes"] = classes
            out["mean_of_classes"] = self.mean_of_classes()
        out["empty_meshes"] = sum(s.faces == 0 for s in self.shapes)
        out["seconds_per_shape"] = float(np.mean([s.seconds for s in self.shapes])) if self.shapes else 0.0
        out["shapes"] = [asdict(s) for s in self.shapes]
        return out


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} if rows else {}


# ------------------------------------------------------------------------------------------- metrics
def volume_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """|pred & gt| / |pred | gt| of boolean arrays; 1 when both are empty."""
    union = np.logical_or(pred, gt).sum()
    return float(np.logical_and(pred, gt).sum() / union) if union else 1.0


def sample_mesh(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform by area on a triangle mesh and the unit normals of their faces."""
    tri = np.asarray(vertices, np.float64)[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    if not area.sum() > 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    u, v = rng.random((2, n, 1))
    flip = u + v > 1  # fold the unit square onto the triangle
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    t = tri[face]
    points = t[:, 0] + u * (t[:, 1] - t[:, 0]) + v * (t[:, 2] - t[:, 0])
    return points, cross[face] / np.maximum(area[face, None], 1e-30)


def surface_tree(points: np.ndarray) -> cKDTree:
    """A k-d tree built for nearest-neighbour queries against surface samples.

    Midpoint splits without shrunk boxes and large leaves answer queries far from the
    surface (a poor prediction) 4-6x faster than scipy's defaults, at the same speed near it.
    """
    return cKDTree(points, leafsize=64, balanced_tree=False, compact_nodes=False)


def nearest(tree: cKDTree, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance to and index of the nearest tree point, for each query (queried in a cache-friendly order)."""
    lo = queries.min(axis=0)
    cell = np.clip(
        ((queries - lo) / max(float(np.ptp(queries, axis=0).max()), 1e-12) * 16).astype(np.int64), 0, 15
    )
    order = np.argsort((cell[:, 0] * 16 + cell[:, 1]) * 16 + cell[:, 2], kind="stable")
    dist, index = np.empty(len(queries)), np.empty(len(queries), np.int64)
    dist[order], index[order] = tree.query(queries[order])
    return dist, index


def surface_metrics(
    pred_points: np.ndarray,
    pred_normals: np.ndarray,
    gt_points: np.ndarray,
    gt_normals: np.ndarray,
    threshold: float = 0.01,
    gt_tree: cKDTree | None = None,
) -> dict[str, float]:
    """Accuracy, completeness, Chamfer-L1, normal consistency and F-score of two sampled surfaces."""
    if len(pred_points) == 0:
        return dict(EMPTY)
    gt_tree = surface_tree(gt_points) if gt_tree is None else gt_tree
    d_pred, to_gt = nearest(gt_tree, pred_points)  # accuracy side: predicted -> ground truth
    d_gt, to_pred = nearest(surface_tree(pred_points), gt_points)  # completeness side
    nc_pred = np.abs((pred_normals * gt_normals[to_gt]).sum(-1)).mean()
    nc_gt = np.abs((gt_normals * pred_normals[to_pred]).sum(-1)).mean()
    precision = float((d_pred < threshold).mean())
    recall = float((d_gt < threshold).mean())
    accuracy, completeness = float(d_pred.mean()), float(d_gt.mean())
    return {
        "accuracy": accuracy,
        "completeness": completeness,
        "chamfer_l1": 0.5 * (accuracy + completeness),
        "normal_consistency": float(0.5 * (nc_pred + nc_gt)),
        "fscore": 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0,
    }


def mesh_metrics(
    vertices: np.ndarray,
    faces: np.ndarray,
    iou_points: np.ndarray,
    iou_gt: np.ndarray,
    gt_points: np.ndarray,
    gt_normals: np.ndarray,
    gt_tree: cKDTree,
    n_samples: int,
    threshold: float,
    rng: np.random.Generator,
    gt_silhouettes: tuple[Cameras, np.ndarray] | None = None,
) -> dict[str, float]:
    """All metrics of one predicted mesh against one ground-truth shape (and, given the input
    cameras and the shape's (V, S, S) masks through them, its silhouettes)."""
    outline = {} if gt_silhouettes is None else {SILHOUETTE: 0.0}
    if len(faces) == 0:
        return {"iou": 0.0, **EMPTY, **outline}
    iou = volume_iou(ray_parity(vertices, faces, iou_points), iou_gt)
    points, normals = sample_mesh(vertices, faces, n_samples, rng)
    if gt_silhouettes is not None:
        cameras, masks = gt_silhouettes
        seen = cameras.silhouettes(points, masks.shape[-1])
        outline[SILHOUETTE] = float(np.mean([volume_iou(p, g) for p, g in zip(seen, masks, strict=True)]))
    metrics = surface_metrics(points, normals, gt_points, gt_normals, threshold, gt_tree)
    return {"iou": iou, **metrics, **outline}


def voxel_occupancy(grid: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Occupancy of points under a grid over [-0.5, 0.5]^3 (outside the grid: empty)."""
    res = np.array(grid.shape)
    cell = np.floor((points + 0.5) * res).astype(np.int64)
    inside = ((cell >= 0) & (cell < res)).all(axis=1)
    cell = np.clip(cell, 0, res - 1)
    return inside & grid[cell[:, 0], cell[:, 1], cell[:, 2]].astype(bool)


def sample_voxel_surface(grid: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform on the exposed faces of the occupied voxels, with the faces' normals."""
    res = grid.shape[0]
    occ = np.pad(grid.astype(bool), 1)
    centers, normals = [], []
    for axis in range(3):
        for step in (-1, 1):
            exposed = occ & ~np.roll(occ, -step, axis=axis)  # the neighbour along +-axis is empty
            ijk = np.argwhere(exposed[1:-1, 1:-1, 1:-1])
            normal = np.zeros(3)
            normal[axis] = step
            centers.append((ijk + 0.5) / res - 0.5 + normal * (0.5 / res))
            normals.append(np.broadcast_to(normal, (len(ijk), 3)))
    c, nrm = np.concatenate(centers), np.concatenate(normals)
    if len(c) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3))
    pick = rng.integers(len(c), size=n)
    offset = (rng.random((n, 3)) - 0.5) / res * (1 - np.abs(nrm[pick]))  # spread within the face
    return c[pick] + offset, nrm[pick]


def is_closed(faces: np.ndarray) -> bool:
    """Is every edge shared by exactly two faces that traverse it in opposite directions?"""
    f = np.asarray(faces, np.int64)
    if len(f) == 0:
        return False
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    n = int(f.max()) + 1
    code = edges[:, 0] * n + edges[:, 1]
    reverse = edges[:, 1] * n + edges[:, 0]
    return len(np.unique(code)) == len(code) and bool(np.isin(reverse, code).all())


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    tri = np.asarray(vertices, np.float64)[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


# ------------------------------------------------------------------------------------------- running
def observation_config(meta: ModelMeta, settings: EvalSettings) -> DataConfig:
    """The data settings of the held-out split and of the observations made from it."""
    data = meta.training.get("data", {}) if isinstance(meta.training, dict) else {}
    data = data if isinstance(data, dict) else {}
    any_density = isinstance(data.get("n_points_max"), int) and data["n_points_max"] > 0
    n_points, noise = (
        (DEFAULT_POINTS, DEFAULT_NOISE) if any_density else (data.get("n_points"), data.get("noise"))
    )
    if settings.points is not None:
        n_points = settings.points
    if settings.noise is not None:
        noise = settings.noise
    return DataConfig(
        source=settings.source,
        classes=list(settings.classes),
        seed=settings.seed,
        surface_points=settings.surface_points,
        n_points=int(n_points) if isinstance(n_points, int) and n_points > 0 else DEFAULT_POINTS,
        noise=float(noise) if isinstance(noise, int | float) and noise >= 0 else DEFAULT_NOISE,
        image_size=int(meta.config.get("image_size", 64)),
        # the original tests single-view models on view 0; a views model reads the first --views
        # of 4 random ones, or a named set
        views=_stored_views(meta, settings),
        cameras=settings.cameras if meta.kind == "views" else "fixed",
        padding=PADDING,
        hollow=settings.hollow,
    )


def _stored_views(meta: ModelMeta, settings: EvalSettings) -> int:
    """Views per held-out shape: a named set's, 4 random ones for a views model, else 1."""
    if meta.kind != "views":
        return 1
    return len(VIEW_SETS[settings.cameras]) if settings.cameras in VIEW_SETS else MAX_VIEWS


def _stream(seed: int, shape: int, purpose: int) -> int:
    """A torch seed per (data seed, shape, purpose): the same numbers for a shape whatever n is."""
    return (seed * 1_000_003 + shape) * 4 + purpose


def _ground_truth_surface(pool: ShapePool, i: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    idx = torch.tensor([i])
    points, normals = pool.surface[idx].float(), pool.normals[idx].float()
    if input_kind(kind).viewed:  # into the camera frame of view 0
        views = torch.zeros(1, dtype=torch.long)
        points = pool.to_frame(points, idx, views)
        normals = torch.einsum("bij,bmj->bmi", pool.view_rot[idx, views], normals)
    n = normals[0].numpy().astype(np.float64)
    return points[0].numpy().astype(np.float64), n / np.maximum(
        np.linalg.norm(n, axis=1, keepdims=True), 1e-12
    )


@dataclass
class TestCase:
    """One held-out shape: the observation a model gets and the ground truth it is scored on,
    all in the normalised frame."""

    index: int
    name: str
    observation: Observation
    iou_points: np.ndarray  # (n, 3) uniform in the padded box
    iou_gt: np.ndarray  # (n,) bool occupancy
    surface: np.ndarray  # (k, 3) ground-truth surface samples
    normals: np.ndarray  # (k, 3) their unit normals
    tree: cKDTree  # over ``surface``
    voxels: np.ndarray  # (32, 32, 32) the voxel input, for the voxel model's baseline
    # image and views models: the input cameras and the shape's (V, S, S) masks through them
    silhouettes: tuple[Cameras, np.ndarray] | None = None
    category: str | None = None  # the class, in the original's layout
    category_name: str | None = None


def test_cases(
    kind: str, meta: ModelMeta, settings: EvalSettings, progress: bool = True
) -> Iterator[TestCase]:
    """The first ``settings.n`` shapes of the split as a model of ``kind`` observes them (in the
    original's layout: n objects spread over the split, so that every class has its share)."""
    from tqdm import tqdm

    cfg = observation_config(meta, settings)
    try:
        pool = open_split(cfg, settings.split, settings.n, settings.data_dir / "procedural")
        pool.check_kind(kind)
    except ValueError as e:  # a missing or unusable dataset, or one without views for an image model
        raise InputError(str(e)) from None
    if isinstance(pool, OnetPool):
        for i in tqdm(spread(len(pool), settings.n), desc=f"evaluate {meta.name}", disable=not progress):
            try:
                held_out = pool.held_out(i, kind, cfg)
            except ValueError as e:
                raise InputError(str(e)) from None
            category = pool.entries[i].category
            yield _test_case(held_out, 0, i, kind, cfg, settings, category, pool.class_name(category))
        return
    for i in tqdm(range(min(settings.n, len(pool))), desc=f"evaluate {meta.name}", disable=not progress):
        yield _test_case(pool, i, i, kind, cfg, settings)


def _test_case(
    pool: ShapePool,
    j: int,
    i: int,
    kind: str,
    cfg: DataConfig,
    settings: EvalSettings,
    category: str | None = None,
    category_name: str | None = None,
) -> TestCase:
    """Shape ``j`` of ``pool``, which is shape ``i`` of the split (its random streams follow i)."""
    spec = input_kind(kind)
    idx = torch.tensor([j])
    views = torch.zeros(1, dtype=torch.long) if spec.viewed else None
    gen = torch.Generator().manual_seed(_stream(settings.seed, i, 1))
    observe_gen = torch.Generator().manual_seed(_stream(settings.seed, i, 0))
    pts_t, occ_t = pool.uniform_labelled(idx, settings.iou_points, PADDING, gen, views)
    gt_points, gt_normals = _ground_truth_surface(pool, j, kind)
    observation = spec.test_observation(pool, j, cfg, observe_gen, settings.views)
    cameras = spec.silhouette_cameras(observation)
    return TestCase(
        index=i,
        name=pool.names[j] if pool.names is not None else f"{settings.split}-{i}",
        observation=observation,
        iou_points=pts_t[0].numpy().astype(np.float64),
        iou_gt=occ_t[0].numpy() > 0.5,
        surface=gt_points,
        normals=gt_normals,
        tree=surface_tree(gt_points),
        voxels=pool.voxels[j].numpy().astype(bool),
        silhouettes=None if cameras is None else (cameras, cameras.silhouettes(gt_points, cfg.image_size)),
        category=category,
        category_name=category_name,
    )


def score(
    case: TestCase, vertices: np.ndarray, faces: np.ndarray, settings: EvalSettings
) -> dict[str, float]:
    """All metrics of a predicted mesh (normalised frame) on one test case."""
    rng = np.random.default_rng([settings.seed, case.index])
    return mesh_metrics(
        vertices,
        faces,
        case.iou_points,
        case.iou_gt,
        case.surface,
        case.normals,
        case.tree,
        settings.surface_points,
        settings.fscore_threshold,
        rng,
        case.silhouettes,
    )


def evaluate_shapes(
    engine: Reconstructor, model: str, settings: EvalSettings, progress: bool = True
) -> Iterator[ShapeResult]:
    """Reconstruct and score the first ``settings.n`` shapes of the split, one at a time."""
    _, meta = engine.load(model)
    kind = meta.kind
    options = settings.reconstruct_options()
    for case in test_cases(kind, meta, settings, progress):
        t0 = time.perf_counter()
        mesh: MeshResult = engine.reconstruct(model, case.observation, options)
        seconds = time.perf_counter() - t0
        metrics = score(case, mesh.vertices, mesh.faces, settings)
        baseline = None
        if kind == "voxels":
            rng = np.random.default_rng([settings.seed, case.index, 1])
            b_points, b_normals = sample_voxel_surface(case.voxels, settings.surface_points, rng)
            baseline = {
                "iou": volume_iou(voxel_occupancy(case.voxels, case.iou_points), case.iou_gt),
                **surface_metrics(
                    b_points, b_normals, case.surface, case.normals, settings.fscore_threshold, case.tree
                ),
            }
        yield ShapeResult(
            case.index,
            case.name,
            metrics,
            baseline,
            len(mesh.faces),
            seconds,
            case.category,
            case.category_name,
        )


def evaluate_samples(
    engine: Reconstructor, model: str, settings: EvalSettings, progress: bool = True
) -> Iterator[SampleResult]:
    """Draw ``settings.n`` shapes (seeds 0..n-1) from an unconditional model and check each mesh."""
    from tqdm import tqdm

    options = settings.reconstruct_options()
    for seed in tqdm(range(settings.n), desc="sample", disable=not progress):
        t0 = time.perf_counter()
        mesh = engine.sample(model, seed, options)
        volume = signed_volume(mesh.vertices, mesh.faces) if len(mesh.faces) else 0.0
        yield SampleResult(seed, len(mesh.faces), is_closed(mesh.faces), volume, time.perf_counter() - t0)


def evaluate(
    engine: Reconstructor,
    model: str,
    settings: EvalSettings,
    progress: bool = True,
    on_result: Callable[[ShapeResult | SampleResult], None] | None = None,
) -> Report:
    """Evaluate ``model`` (a shipped name or a .safetensors path) and return the full report."""
    settings.check()
    _, meta = engine.load(model)
    tau = float(meta.tau) if settings.tau is None else settings.tau
    report = Report(
        model, meta.kind, tau, {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    )
    results: Iterator[ShapeResult | SampleResult]
    if meta.kind == "unconditional":
        results = evaluate_samples(engine, model, settings, progress)
    else:
        results = evaluate_shapes(engine, model, settings, progress)
    for result in results:
        if isinstance(result, SampleResult):
            report.samples.append(result)
        else:
            report.shapes.append(result)
        if on_result is not None:
            on_result(result)
    return report
