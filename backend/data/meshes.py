"""A folder of the user's own meshes -> training splits in the layout of the procedural ones.

``python -m backend prepare-meshes MESHES [OUT]`` reads every .obj, .ply, .stl and .off file
in MESHES, normalises each into the unit cube (bounding-box centre at the origin, longest
side 1, as the procedural shapes and the original's ShapeNet data), and writes to OUT
(default MESHES/prepared):

- ``train.npz``, ``val.npz`` (and ``test.npz`` if asked for; a test-only dataset, made with
  ``test_fraction = 1``, has ``test.npz`` alone): per mesh the same surface
  samples, normals, packed 32^3 voxel grid and (empty) camera-view arrays as a procedural
  split, plus labelled query points: ``uniform_points`` in the padded box and
  ``near_points`` around the surface, with packed occupancy bits (``*_occ``).
- ``dataset.json``: the settings, which file went to which split, and which files were
  skipped and why.

A config trains on it with ``[data] source = "OUT"``. The occupancy of the stored query
points is precomputed here, once, with generalized winding numbers (inside = winding
number > 0.5): robust to holes, gaps and flipped faces, so meshes need no watertight
repair step. Training then draws its query points from the stored ones (with
replacement, as the original does), which costs no more per step than the procedural
pool. Images are not rendered for meshes: image models train on procedural data only.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..containment import WindingNumber
from ..interrupts import ignore_interrupts

log = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".ply", ".stl", ".off")
FORMAT = "occupancy-reconstruct-meshes"
FORMAT_VERSION = 1
MANIFEST = "dataset.json"
SPLIT_NAMES = ("train", "val", "test")


class MeshDataError(ValueError):
    """A mesh file or a prepared mesh dataset cannot be used; the message says why."""


@dataclass
class MeshSettings:
    surface_points: int = 10000  # surface samples per mesh (point-cloud inputs are drawn from them)
    uniform_points: int = 50000  # labelled query points uniform in the padded box
    near_points: int = 50000  # labelled query points near the surface
    near_sigma: float = 0.05  # std of their offset from the surface
    padding: float = 0.1  # the box is [-(1 + padding) / 2, (1 + padding) / 2]^3
    voxel_res: int = 32
    val_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        for name in ("surface_points", "uniform_points", "near_points", "voxel_res"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise MeshDataError(f"{name} must be a positive integer, got {value!r}")
        for name in ("near_sigma", "padding"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise MeshDataError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise MeshDataError(f"{name} must lie in [0, 1], got {value!r}")
        if self.test_only:
            if self.val_fraction != 0:
                raise MeshDataError("a test-only dataset (test_fraction 1) takes val_fraction 0")
        elif self.val_fraction + self.test_fraction >= 1:
            raise MeshDataError(
                "val_fraction + test_fraction must leave meshes for training (or set test_fraction 1 "
                "and val_fraction 0 for a test-only dataset)"
            )

    @property
    def test_only(self) -> bool:
        """Every mesh goes to the test split: a set to evaluate on that nothing trains or selects on."""
        return self.test_fraction == 1


# ------------------------------------------------------------------------------------------ reading
def find_meshes(folder: Path) -> list[Path]:
    """The mesh files directly inside ``folder``, sorted by name."""
    if not folder.is_dir():
        raise MeshDataError(f"mesh folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)


def load_mesh(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(vertices (V, 3) float64, faces (F, 3) int64) of a mesh file; MeshDataError if unusable."""
    import trimesh  # imported here: loading it costs ~0.3 s

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except MemoryError:
        raise
    except Exception as e:  # trimesh raises many kinds of errors for malformed files
        raise MeshDataError(f"cannot read it as a mesh: {type(e).__name__}: {e}") from None
    faces = np.asarray(getattr(mesh, "faces", np.zeros((0, 3))), np.int64).reshape(-1, 3)
    vertices = np.asarray(getattr(mesh, "vertices", np.zeros((0, 3))), np.float64).reshape(-1, 3)
    if len(faces) == 0:
        raise MeshDataError("it holds no triangles")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise MeshDataError("its faces refer to vertices that do not exist")
    used = np.unique(faces)
    if not np.isfinite(vertices[used]).all():
        raise MeshDataError("it has vertices with NaN or infinite coordinates")
    tri = vertices[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        raise MeshDataError("all its triangles have zero area")
    return vertices, faces


def normalise(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Vertices in the unit frame (bounding box of the used vertices centred, longest side 1)."""
    used = vertices[np.unique(faces)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    center = 0.5 * (lo + hi)
    scale = float((hi - lo).max())
    return (vertices - center) / scale, center, scale


# ------------------------------------------------------------------------------------------ sampling
def sample_surface(
    vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n points uniform by area on the triangles, with their (unit) face normals."""
    tri = vertices[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = np.linalg.norm(cross, axis=1)
    face = rng.choice(len(faces), size=n, p=area / area.sum())
    r1, r2 = rng.random((2, n, 1))
    s1 = np.sqrt(r1)
    t = tri[face]
    points = (1 - s1) * t[:, 0] + s1 * (1 - r2) * t[:, 1] + s1 * r2 * t[:, 2]
    return points, cross[face] / area[face, None]


def voxel_probe_points(res: int) -> np.ndarray:
    """(res^3 * 9, 3) points: each voxel's centre and 8 points a quarter voxel from it.

    A voxel is occupied when any of its 9 points is inside (the procedural shapes' rule).
    """
    centers = np.linspace(0.5 / res - 0.5, 0.5 - 0.5 / res, res, dtype=np.float32)
    grid = np.stack(np.meshgrid(centers, centers, centers, indexing="ij"), -1).reshape(-1, 3)
    signs = [[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]
    offsets = np.array([[0, 0, 0], *signs], np.float32) * (0.25 / res)
    return (grid[:, None] + offsets[None]).reshape(-1, 3)


def voxelize(inside: WindingNumber, surface: np.ndarray, res: int) -> np.ndarray:
    """(res, res, res) bool grid over [-0.5, 0.5]^3 by the 9-probe rule of ``voxel_probe_points``.

    The 8 off-centre probes can only disagree with the centre where the surface passes
    through or next to a voxel, so they are evaluated there only (found from the surface
    samples, dilated by one voxel): a third of the winding-number work of all 9 probes.
    """
    from scipy import ndimage

    probes = voxel_probe_points(res).reshape(res**3, 9, 3)
    occ = inside(probes[:, 0]) > 0.5
    cell = np.clip(np.floor((surface + 0.5) * res), 0, res - 1).astype(np.int64)
    touched = np.zeros((res, res, res), bool)
    touched[cell[:, 0], cell[:, 1], cell[:, 2]] = True
    touched = ndimage.binary_dilation(touched, np.ones((3, 3, 3), bool)).reshape(-1)
    check = touched & ~occ
    occ[check] = (inside(probes[check, 1:].reshape(-1, 3)) > 0.5).reshape(-1, 8).any(axis=1)
    return occ.reshape(res, res, res)


def _labelled(points: np.ndarray, inside: WindingNumber) -> tuple[np.ndarray, np.ndarray]:
    """Points stored as float16 and their packed occupancy, computed at the stored positions."""
    stored = points.astype(np.float16)
    occ = inside(stored.astype(np.float64)) > 0.5
    return stored, np.packbits(occ)


def prepare_mesh(path: Path, settings: MeshSettings, index: int) -> dict[str, np.ndarray]:
    """One mesh file -> the arrays of one shape of a split (MeshDataError if unusable)."""
    vertices, faces = load_mesh(path)
    unit, center, scale = normalise(vertices, faces)
    rng = np.random.default_rng([settings.seed, index])
    inside = WindingNumber(unit, faces)
    surface, normals = sample_surface(unit, faces, settings.surface_points, rng)
    half = 0.5 * (1 + settings.padding)
    uniform = rng.uniform(-half, half, (settings.uniform_points, 3))
    near_src, _ = sample_surface(unit, faces, settings.near_points, rng)
    near = near_src + settings.near_sigma * rng.standard_normal(near_src.shape)
    voxels = voxelize(inside, np.concatenate([surface, near_src]), settings.voxel_res)
    uniform_points, uniform_occ = _labelled(uniform, inside)
    near_points, near_occ = _labelled(near, inside)
    if not (uniform_occ.any() or near_occ.any()):
        raise MeshDataError(
            "it encloses no volume: no query point has a winding number above 0.5 (a single open sheet?)"
        )
    return {
        "surface": surface.astype(np.float16),
        "normals": normals.astype(np.float16),
        "voxels": np.packbits(voxels),
        "images": np.zeros((0, 1, 1, 3), np.uint8),  # no rendered views for meshes
        "view_rot": np.zeros((0, 3, 3), np.float32),
        "view_center": np.zeros((0, 3), np.float32),
        "view_scale": np.zeros(0, np.float32),
        "center": center.astype(np.float32),
        "scale": np.asarray(scale, np.float32),
        "uniform_points": uniform_points,
        "uniform_occ": uniform_occ,
        "near_points": near_points,
        "near_occ": near_occ,
    }


# ------------------------------------------------------------------------------------------ splits
def assign_splits(names: list[str], settings: MeshSettings) -> dict[str, list[int]]:
    """Indices of the meshes in each split: a seeded shuffle, at least one training and validation mesh.

    A test-only dataset puts every mesh in the test split.
    """
    n = len(names)
    if settings.test_only:
        if n < 1:
            raise MeshDataError("need at least 1 usable mesh for a test-only dataset, got 0")
        return {"val": [], "test": list(range(n)), "train": []}
    if n < 2:
        raise MeshDataError(f"need at least 2 usable meshes (one to train on, one to validate), got {n}")
    order = np.random.default_rng(settings.seed).permutation(n)
    n_val = min(max(1, round(settings.val_fraction * n)), n - 1)
    n_test = min(round(settings.test_fraction * n), n - 1 - n_val)
    return {
        "val": sorted(order[:n_val].tolist()),
        "test": sorted(order[n_val : n_val + n_test].tolist()),
        "train": sorted(order[n_val + n_test :].tolist()),
    }


def _prepare_worker(args: tuple[Path, MeshSettings, int]) -> tuple[dict[str, np.ndarray] | None, str]:
    import torch

    torch.set_num_threads(1)
    path, settings, index = args
    try:
        return prepare_mesh(path, settings, index), ""
    except MeshDataError as e:
        return None, str(e)


def prepare_meshes(
    folder: Path, out: Path, settings: MeshSettings, workers: int = 1, progress: bool = True
) -> dict[str, object]:
    """Prepare every mesh in ``folder`` into splits under ``out``; returns the manifest.

    Unreadable meshes are skipped and listed in the manifest. Nothing is written unless at
    least two meshes (one for a test-only dataset) are usable; each file appears complete or
    not at all.
    """
    from tqdm import tqdm

    settings.validate()
    check_output_folder(out)
    paths = find_meshes(folder)
    if not paths:
        raise MeshDataError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) in {folder}")
    jobs = [(p, settings, i) for i, p in enumerate(paths)]
    bar = tqdm(total=len(jobs), desc="meshes", disable=not progress)
    results: list[tuple[dict[str, np.ndarray] | None, str]] = []
    if workers <= 1:
        for job in jobs:
            results.append(_prepare_worker(job))
            bar.update(1)
    else:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=ignore_interrupts) as pool:
            for result in pool.imap(_prepare_worker, jobs):
                results.append(result)
                bar.update(1)
    bar.close()
    skipped = {p.name: reason for p, (shape, reason) in zip(paths, results, strict=True) if shape is None}
    usable = [(p.name, shape) for p, (shape, _) in zip(paths, results, strict=True) if shape is not None]
    for name, reason in skipped.items():
        log.warning("skipped %s: %s", name, reason)
    need = 1 if settings.test_only else 2
    if len(usable) < need:
        details = "; ".join(f"{k}: {v}" for k, v in skipped.items())
        raise MeshDataError(
            f"need at least {need} usable mesh{'es' if need > 1 else ''} in {folder}, got {len(usable)}"
            + (f" ({details})" if details else "")
        )
    names = [name for name, _ in usable]
    splits = assign_splits(names, settings)
    try:
        return _write_prepared(out, folder, usable, splits, skipped, settings)
    except OSError as e:  # a full disk, or the folder changed under us since the check
        raise MeshDataError(f"cannot write the dataset into {out}: {e.strerror or e}") from None


def check_output_folder(out: Path) -> None:
    """MeshDataError before any work if the dataset cannot be written to ``out``: a file there, or
    no permission to write where the folder is (or will be created)."""
    if out.exists() and not out.is_dir():
        raise MeshDataError(f"the output {out} is a file; give a folder")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise MeshDataError(f"cannot create the output folder {out}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise MeshDataError(f"cannot write into {existing}")


def _write_prepared(
    out: Path,
    folder: Path,
    usable: list[tuple[str, dict[str, np.ndarray]]],
    splits: dict[str, list[int]],
    skipped: dict[str, str],
    settings: MeshSettings,
) -> dict[str, object]:
    """The splits' arrays and the manifest, each file complete or not at all; returns the manifest."""
    names = [name for name, _ in usable]
    out.mkdir(parents=True, exist_ok=True)
    for split, indices in splits.items():
        if not indices:
            continue
        shapes = [usable[i][1] for i in indices]
        arrays = {k: np.stack([s[k] for s in shapes]) for k in shapes[0]}
        arrays["names"] = np.array([names[i] for i in indices])
        tmp = out / f".{split}.{os.getpid()}.tmp.npz"
        try:
            np.savez(tmp, **arrays)
            tmp.replace(out / f"{split}.npz")
        finally:
            tmp.unlink(missing_ok=True)
    manifest: dict[str, object] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": str(folder),
        "settings": asdict(settings),
        "splits": {k: [names[i] for i in v] for k, v in splits.items()},
        "skipped": skipped,
    }
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(manifest, indent=2))
        tmp.replace(out / MANIFEST)
    finally:
        tmp.unlink(missing_ok=True)
    return manifest


# ------------------------------------------------------------------------------------------ locating
def prepared_folder(source: str | Path) -> Path:
    """The prepared folder a config's ``data.source`` names: the folder itself or its ``prepared/``."""
    folder = Path(source)
    for candidate in (folder, folder / "prepared"):
        if (candidate / MANIFEST).is_file():
            return candidate
    raise MeshDataError(
        f"data.source {str(source)!r} is neither 'procedural' nor a folder made by prepare-meshes "
        f"(no {MANIFEST} in it or in its prepared/ subfolder); run "
        f"`python -m backend prepare-meshes {source}` first"
    )


def read_manifest(folder: Path) -> dict[str, object]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise MeshDataError(f"cannot read {folder / MANIFEST}: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise MeshDataError(f"{folder / MANIFEST} is not a prepared mesh dataset")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise MeshDataError(
            f"{folder} was prepared with format version {manifest.get('format_version')}, "
            f"this build reads {FORMAT_VERSION}: run prepare-meshes again"
        )
    return manifest


def prepared_split(source: str | Path, split: str) -> Path:
    """The .npz file of ``split`` in a prepared mesh dataset (MeshDataError if missing)."""
    folder = prepared_folder(source)
    read_manifest(folder)
    path = folder / f"{split}.npz"
    if not path.is_file():
        raise MeshDataError(f"{folder} has no {split} split ({path.name} is missing)")
    return path
