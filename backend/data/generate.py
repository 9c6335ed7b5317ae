"""Build a split of procedural shapes with their observations, deterministically from a seed.

Per shape it stores the CSG description (for exact occupancy of any query point),
area-uniform surface samples with normals, a 32^3 occupancy grid and rendered views.
Shape i of a split is drawn from ``np.random.default_rng([seed, split_id, i])``, so a
split regenerates identically, in any order and with any number of workers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import socket
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..config import DataConfig
from ..interrupts import ignore_interrupts
from .meshes import prepared_split, voxel_probe_points
from .render import render
from .shapes import NO_CUT, Frame, ShapeSet, random_opening, random_rotation, random_shape
from .surface import grid_points, sample_surface
from .views import reference_views

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "val": 1, "test": 2}
FORMAT_VERSION = 1
SOLID = {"shell": np.asarray(0.0, np.float32), "cut": NO_CUT}


def _single(spec: dict[str, np.ndarray], center: np.ndarray, scale: float) -> ShapeSet:
    def batched(key: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(spec[key])[None])

    return ShapeSet(
        kind=batched("kind"),
        op=batched("op"),
        params=batched("params"),
        rot=batched("rot"),
        trans=batched("trans"),
        center=torch.from_numpy(center.astype(np.float32)[None]),
        scale=torch.tensor([scale], dtype=torch.float32),
        shell=torch.tensor([float(spec.get("shell", 0.0))], dtype=torch.float32),
        cut=torch.from_numpy(np.asarray(spec.get("cut", NO_CUT), np.float32)[None]),
    )


def _sdf_single(shape: ShapeSet, p: torch.Tensor) -> torch.Tensor:
    return shape.sdf_shape_frame(p[None])[0]


def voxelize(shape: ShapeSet, res: int, frame: Frame | None = None) -> np.ndarray:
    """(res, res, res) bool grid over [-0.5, 0.5]^3, indexed [x, y, z].

    A voxel is occupied when its centre or any of 8 points at a quarter of the voxel
    size from the centre is inside: close to "the solid touches this voxel", like
    surface-plus-fill voxelisers, without inflating the shape by a whole voxel.
    """
    pts = voxel_probe_points(res)[None]
    occ = shape.sdf(torch.from_numpy(pts), frame) <= 0
    return occ.reshape(res, res, res, 9).any(-1).numpy()


def make_shape(seed: int, split_id: int, index: int, cfg: DataConfig) -> dict[str, np.ndarray]:
    """Generate shape ``index`` of a split, with its observations, in the unit-cube frame."""
    rng = np.random.default_rng([seed, split_id, index])
    # openings draw from a stream of their own, so the solids of a split stay as they were
    opening_rng = np.random.default_rng([seed, split_id, index, 1])
    lo, hi = np.full(3, -1.6), np.full(3, 1.6)
    coarse = torch.from_numpy(grid_points(lo, hi, 40))[None]
    while True:
        spec = random_shape(rng)
        raw = _single(spec, np.zeros(3), 1.0)
        inside = (raw.sdf_shape_frame(coarse)[0] <= 0).numpy()
        if inside.sum() < 8:  # cut away almost entirely: draw again
            continue
        cell = (hi - lo) / 39
        pts_in = coarse[0].numpy()[inside]
        box_lo, box_hi = pts_in.min(0) - 1.5 * cell, pts_in.max(0) + 1.5 * cell
        if cfg.hollow > 0:  # every shape of such a split stores walls and a cut, solid or not
            opened = opening_rng.random() < cfg.hollow
            spec |= random_opening(opening_rng, box_lo, box_hi) if opened else SOLID
            raw = _single(spec, np.zeros(3), 1.0)
        surface, normals = sample_surface(
            partial(_sdf_single, raw), box_lo, box_hi, 80, cfg.surface_points, rng
        )
        if len(surface) == 0:
            continue
        center = 0.5 * (surface.min(0) + surface.max(0))
        scale = float((surface.max(0) - surface.min(0)).max())
        break
    shape = _single(spec, center, scale)
    out: dict[str, np.ndarray] = {k: np.asarray(v) for k, v in spec.items()}
    out["center"] = center.astype(np.float32)
    out["scale"] = np.asarray(scale, np.float32)
    unit_surface = (surface - center) / scale
    out["surface"] = unit_surface.astype(np.float16)
    out["normals"] = normals.astype(np.float16)
    out["voxels"] = np.packbits(voxelize(shape, cfg.voxel_res))
    if cfg.cameras != "fixed":  # reference pictures, each with its camera in the unit frame
        views = shape.select([0] * cfg.views)
        images, cameras = reference_views(
            views.sdf, unit_surface, cfg.views, cfg.image_size, rng, cfg.cameras
        )
        out["images"], out["view_cameras"] = images, cameras
        out["view_rot"] = np.tile(np.eye(3, dtype=np.float32), (cfg.views, 1, 1))
        out["view_center"] = np.zeros((cfg.views, 3), np.float32)
        out["view_scale"] = np.ones(cfg.views, np.float32)
        return out
    # camera views: a random rotation into the camera frame, then renormalised to the unit box
    rots, centers, scales = [], [], []
    for _ in range(cfg.views):
        rot = random_rotation(rng).astype(np.float32)
        q = unit_surface @ rot.T
        rots.append(rot)
        centers.append(0.5 * (q.min(0) + q.max(0)))
        scales.append((q.max(0) - q.min(0)).max())
    out["view_rot"] = np.asarray(rots, np.float32).reshape(-1, 3, 3)
    out["view_center"] = np.asarray(centers, np.float32).reshape(-1, 3)
    out["view_scale"] = np.asarray(scales, np.float32)
    if cfg.views > 0:
        views = shape.select([0] * cfg.views)
        frame = Frame.view(
            views,
            torch.from_numpy(out["view_rot"]),
            torch.from_numpy(out["view_center"]),
            torch.from_numpy(out["view_scale"]),
        )
        out["images"] = render(lambda p: views.sdf(p, frame), cfg.views, cfg.image_size, rng)
    else:
        out["images"] = np.zeros((0, cfg.image_size, cfg.image_size, 3), np.uint8)
    return out


def _worker(args: tuple[int, int, list[int], DataConfig]) -> list[dict[str, np.ndarray]]:
    torch.set_num_threads(1)
    seed, split_id, indices, cfg = args
    return [make_shape(seed, split_id, i, cfg) for i in indices]


def split_key(cfg: DataConfig, split: str, n: int) -> str:
    fields = {
        "v": FORMAT_VERSION,
        "seed": cfg.seed,
        "split": split,
        "n": n,
        "surface_points": cfg.surface_points,
        "voxel_res": cfg.voxel_res,
        "image_size": cfg.image_size,
        "views": cfg.views,
    }
    if cfg.cameras != "fixed":  # the fixed camera's splits keep the names they were cached under
        fields["cameras"] = cfg.cameras
    if cfg.hollow > 0:  # likewise splits of solids only
        fields["hollow"] = cfg.hollow
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def _split_path(cfg: DataConfig, split: str, n: int, cache_dir: Path) -> Path:
    return cache_dir / f"{split}-{n}-{split_key(cfg, split, n)}.npz"


def build_split(cfg: DataConfig, split: str, n: int, cache_dir: Path, workers: int | None = None) -> Path:
    """Generate (or reuse) a split; returns the path of its .npz file.

    For a mesh source (``cfg.source`` names a folder made by ``prepare-meshes``) the prepared
    split is returned as it is; ``n`` and ``cache_dir`` do not apply.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    if cfg.source != "procedural":
        return prepared_split(cfg.source, split)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a split needs at least one shape, got n={n!r}")
    path = _split_path(cfg, split, n, cache_dir)
    if path.exists():
        return path
    cache_dir.mkdir(parents=True, exist_ok=True)
    start, arrays = _cached_prefix(cfg, split, n, cache_dir)
    if start < n:
        new = _generate(cfg, split, range(start, n), workers or min(os.cpu_count() or 1, 8))
        fresh = {k: np.stack([s[k] for s in new]) for k in new[0]}
        arrays = {k: np.concatenate([arrays[k], v]) for k, v in fresh.items()} if arrays else fresh
    tmp = path.with_suffix(f".{socket.gethostname()}-{os.getpid()}.tmp.npz")  # one per writer
    np.savez(tmp, **arrays)
    tmp.replace(path)  # atomic: a half-written split is never picked up
    return path


def _cached_prefix(cfg: DataConfig, split: str, n: int, cache_dir: Path) -> tuple[int, dict[str, np.ndarray]]:
    """The first shapes of the split from the largest cached split of it with other settings equal.

    Shape i depends only on (seed, split, i), so a split of m shapes is the first m shapes of
    any larger one: growing a training pool only generates the shapes it lacks.
    """
    sizes = {int(c) for f in cache_dir.glob(f"{split}-*-*.npz") if (c := f.name.split("-")[1]).isdigit()}
    cached = [m for m in sizes if _split_path(cfg, split, m, cache_dir).exists()]
    if not cached:
        return 0, {}
    source = _split_path(cfg, split, max(cached), cache_dir)
    m = min(max(cached), n)
    log.info("reusing the first %d shapes of %s", m, source.name)
    with np.load(source) as z:
        return m, {k: z[k][:m] for k in z.files}


def _generate(cfg: DataConfig, split: str, indices: range, workers: int) -> list[dict[str, np.ndarray]]:
    """Generate the given shapes of a split, in a pool of worker processes when it pays."""
    chunk = 16
    jobs = [
        (cfg.seed, SPLITS[split], list(indices[i : i + chunk]), cfg) for i in range(0, len(indices), chunk)
    ]
    shapes: list[dict[str, np.ndarray]] = []
    with tqdm(total=len(indices), desc=f"shapes ({split})") as bar:
        if workers == 1 or len(jobs) == 1:  # no process pool to start for a few shapes
            for seed, split_id, job_indices, job_cfg in jobs:
                for i in job_indices:
                    shapes.append(make_shape(seed, split_id, i, job_cfg))
                    bar.update(1)
        else:
            with mp.get_context("spawn").Pool(min(workers, len(jobs)), initializer=ignore_interrupts) as pool:
                for part in pool.imap(_worker, jobs):
                    shapes.extend(part)
                    bar.update(len(part))
    return shapes
