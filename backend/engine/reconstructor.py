"""The reconstruction engine every front end uses (command line, serve process, Blender).

    engine = Reconstructor()
    mesh = engine.reconstruct("pointcloud", Observation(points=pts), ReconstructOptions())
    finer = engine.extract(mesh.field_id, tau=0.3)   # no new encoding, only new evaluations

Models are loaded once and kept; fields are kept in a bounded cache (see ``cache``).
Calls are meant to come from one thread at a time.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import WEIGHTS_DIR, CheckpointError, ModelMeta, load_checkpoint, read_meta, shipped_models
from ..kinds import kind as input_kind
from ..kinds import observed_kind
from ..limits import MAX_THREADS
from ..models import OccupancyNetwork
from ..models.patches import PointEvidence
from ..point_tree import PointTree
from ..wire.model_header import takes
from .cache import CachedField, FieldCache
from .cavities import carve_open_cavities
from .extract import check_options, check_seed, check_tau, extract_mesh, logit
from .field import Field, NetworkField
from .fit import Scan
from .grid import Grid, check_resolution
from .lattice import LatticeValues
from .marching import triangle_counts
from .observation import (
    Prepared,
    UserFrame,
)
from .outlines import OutlinedField
from .precision import HALF_UNAVAILABLE, half_dtype
from .types import (
    CancelFn,
    Cancelled,
    InputError,
    MeshResult,
    ModelInfo,
    Observation,
    ProgressFn,
    ReconstructOptions,
)
from .views import picture_as_view

log = logging.getLogger(__name__)

DEFAULT_CACHE_BYTES = 512 * 2**20


def resolve_device(device: str | torch.device) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; any other name must be usable here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InputError(f"unknown device {device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device!r} was asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device!r} was asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise InputError(f"unsupported device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    return dev


class Reconstructor:
    """Observation -> closed mesh, with cached models and cached fields."""

    def __init__(
        self,
        device: str | torch.device = "auto",
        weights_dir: str | Path | None = None,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        half: bool = False,
        threads: int | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.half = half_dtype(self.device) if half else None  # the 16-bit float, or None
        if half and self.half is None:
            raise InputError(HALF_UNAVAILABLE)
        if weights_dir is not None and not Path(weights_dir).is_dir():
            raise InputError(f"weights folder not found: {weights_dir}")
        self.weights_dir = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
        if threads is not None:
            if not 1 <= threads <= MAX_THREADS:
                raise InputError(f"threads must be 1 to {MAX_THREADS}, got {threads}")
            torch.set_num_threads(threads)
        self.cache = FieldCache(cache_bytes)
        self._loaded: dict[str, tuple[OccupancyNetwork, ModelMeta, float]] = {}

    # ---------------------------------------------------------------- models
    def models(self) -> list[ModelInfo]:
        """The models in the weights folder (unreadable files are skipped with a log message)."""
        infos = []
        for name, path in shipped_models(self.weights_dir).items():
            try:
                meta = read_meta(path)
            except CheckpointError as e:
                log.warning("skipping %s: %s", path, e)
                continue
            low_high = meta.automatic_points  # checked by read_meta
            span = None if low_high is None else (low_high[0], low_high[1])
            infos.append(ModelInfo(name, meta.kind, float(meta.tau), str(path), span))
        return infos

    def _path_of(self, model: str) -> Path:
        shipped = shipped_models(self.weights_dir)
        if model in shipped:
            return shipped[model]
        path = Path(model)
        if path.suffix == ".safetensors" or path.is_file():
            if not path.is_file():
                raise InputError(f"model file not found: {path}")
            return path
        names = ", ".join(shipped) or "none"
        raise InputError(
            f"no model named {model!r} (shipped models: {names}); give a name or a .safetensors path"
        )

    def model_meta(self, model: str) -> ModelMeta:
        """The metadata of ``model`` (a shipped name or a checkpoint path), without its weights."""
        try:
            return read_meta(self._path_of(model))
        except CheckpointError as e:
            raise InputError(str(e)) from None

    def load(self, model: str) -> tuple[OccupancyNetwork, ModelMeta]:
        """The model called ``model`` (a shipped name or a checkpoint path), loaded once."""
        path = self._path_of(model)
        key = str(path.resolve())
        mtime = path.stat().st_mtime
        cached = self._loaded.get(key)
        if cached is None or cached[2] != mtime:  # a retrained file is reloaded
            try:
                net, meta = load_checkpoint(path, self.device)
            except CheckpointError as e:
                raise InputError(str(e)) from None
            except RuntimeError as e:
                if "Error(s) in loading state_dict" not in str(e):
                    raise  # e.g. out of memory while moving the weights to the device
                first = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
                raise InputError(f"{path} does not match its config: {first}") from None
            for p in net.parameters():
                p.requires_grad_(False)  # gradients are only ever taken with respect to points
            cached = (net, meta, mtime)
            self._loaded[key] = cached
        return cached[0], cached[1]

    # ---------------------------------------------------------------- requests
    def reconstruct(
        self,
        model: str,
        observation: Observation,
        options: ReconstructOptions,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> MeshResult:
        """Reconstruct a closed mesh from an observation, in the observation's frame."""
        spec = observed_kind(observation)
        grid, tau_opt = self.check(options)
        net, meta = self.load(model)
        if not takes(meta.kind, spec.name):
            raise InputError(f"model {model!r} takes {meta.kind} input, but the observation is {spec.name}")
        if (spec.name, meta.kind) == ("image", "views"):  # one plain picture, as a single view
            observation, spec = picture_as_view(observation), input_kind("views")
        t0 = time.perf_counter()
        if progress is not None:
            progress("encode", 0.0)
        prepared = spec.prepare(observation, meta, options)
        with torch.no_grad():
            inputs = None if prepared.inputs is None else prepared.inputs.to(self.device)
            c, obs = net.encode_local(inputs)
        field: Field = NetworkField(net, c, None, half=self.half, obs=obs)
        if prepared.outlines is not None:
            field = OutlinedField(field, prepared.outlines)
        if progress is not None:
            progress("encode", 1.0)
        encode_time = time.perf_counter() - t0
        return self._first_extraction(
            field, grid, prepared, meta, model, tau_opt, options, encode_time, progress, cancel
        )

    def sample(
        self,
        model: str,
        seed: int,
        options: ReconstructOptions,
        progress: ProgressFn | None = None,
        cancel: CancelFn | None = None,
    ) -> MeshResult:
        """A new shape from the unconditional model's prior, in the normalised frame."""
        grid, tau_opt = self.check(options)
        seed = check_seed(seed)
        net, meta = self.load(model)
        if meta.kind != "unconditional" or net.z_dim == 0:
            raise InputError(f"model {model!r} is a {meta.kind} model; sampling needs an unconditional model")
        t0 = time.perf_counter()
        with torch.no_grad():
            z = net.sample_z(1, generator=torch.Generator().manual_seed(seed))
            c = net.encode(None, batch_size=1)
        field = NetworkField(net, c, z, half=self.half)
        prepared = Prepared(None, UserFrame.identity(), [])
        encode_time = time.perf_counter() - t0
        return self._first_extraction(
            field, grid, prepared, meta, model, tau_opt, options, encode_time, progress, cancel
        )

    def extract(
        self, field_id: str, tau: float, progress: ProgressFn | None = None, cancel: CancelFn | None = None
    ) -> MeshResult:
        """The mesh of a cached field at another threshold (KeyError if the field is gone)."""
        entry = self.cache.get(field_id)
        tau = check_tau(tau)
        try:
            result = extract_mesh(
                entry.field,
                entry.values,
                entry.grid,
                entry.frame,
                tau,
                entry.options,
                progress,
                cancel,
                entry.points,
            )
        finally:
            self.cache.shrink(keep=field_id)  # the store may have grown, even when cancelled
        result.field_id = field_id
        result.warnings[:0] = entry.warnings
        return result

    def release(self, field_id: str | None = None) -> None:
        """Forget one cached field (KeyError if unknown) or all of them, and free device memory.

        On CUDA the allocator's cached blocks go back to the driver too, so that the memory shows
        as free to other programs (nvidia-smi, Blender's own GPU work).
        """
        self.cache.release(field_id)
        if self.device.type == "cuda":
            gc.collect()  # a field can be part of a reference cycle (e.g. a traceback kept alive)
            torch.cuda.empty_cache()

    def warm_up(self) -> None:
        """Do the one-off work of a first extraction now (imports, lookup tables), not in a request."""
        triangle_counts()

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def check(options: ReconstructOptions) -> tuple[Grid, float | None]:
        """The grid and threshold of ``options``; InputError naming the first invalid option (a
        front end can refuse bad options before any model is loaded)."""
        check_options(options)
        grid = Grid(check_resolution(options.resolution))
        return grid, None if options.tau is None else check_tau(options.tau)

    def _first_extraction(
        self,
        field: Field,
        grid: Grid,
        prepared: Prepared,
        meta: ModelMeta,
        model: str,
        tau: float | None,
        options: ReconstructOptions,
        encode_time: float,
        progress: ProgressFn | None,
        cancel: CancelFn | None,
    ) -> MeshResult:
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        tau = float(meta.tau) if tau is None else tau
        values = LatticeValues(grid.resolution + 1)
        points = (
            None if prepared.points is None else Scan(prepared.points, _shared_tree(field, prepared.points))
        )
        carving = points is not None and options.open_cavities
        if carving and progress is not None:  # a second extraction must not report going back
            progress = _never_back(progress)
        # carving reads the extracted, fitted mesh: simplified or refined later, if asked
        first = replace(options, simplify_faces=None, refine_steps=0, normals=False) if carving else options
        result = extract_mesh(field, values, grid, prepared.frame, tau, first, progress, cancel, points)
        carve_time = 0.0
        if carving and points is not None:
            t0 = time.perf_counter()
            unit = prepared.frame.to_unit(result.vertices)
            carved = carve_open_cavities(field, unit, points.points, points.tree, grid, logit(tau))
            carve_time = time.perf_counter() - t0
            if carved is not None:  # a new field: its values are all new
                field, values = carved, LatticeValues(grid.resolution + 1)
            if carved is not None or first != options:  # the first mesh counts as carving's
                carve_time += result.timings["total"]
                result = extract_mesh(
                    field, values, grid, prepared.frame, tau, options, progress, cancel, points
                )
            if carved is not None:
                result.stats["carved_cells"] = float(carved.carved.count_nonzero())
        result.timings = {
            "encode": encode_time,
            **result.timings,
            "carve": carve_time,
            "total": result.timings["total"] + encode_time + carve_time,
        }
        result.warnings[:0] = prepared.warnings
        if options.keep_field:
            entry = CachedField(
                field, values, grid, prepared.frame, options, model, list(prepared.warnings), points
            )
            result.field_id = self.cache.add(entry)
            if result.field_id is None:
                result.warnings.append(
                    f"the field was not kept for re-extraction: it needs {entry.nbytes / 2**20:.0f} MB, "
                    f"more than the cache's {self.cache.capacity / 2**20:.0f} MB"
                )
        return result


def _never_back(progress: ProgressFn) -> ProgressFn:
    """``progress`` with each stage's fraction held at the most it has reported."""
    most: dict[str, float] = {}

    def report(stage: str, fraction: float) -> None:
        most[stage] = max(most.get(stage, 0.0), fraction)
        progress(stage, most[stage])

    return report


def _shared_tree(field: Field, points: np.ndarray) -> PointTree | None:
    """A patch model's k-d tree over the cloud it read (``points``), which the fit can search too."""
    evidence = field.obs if isinstance(field, NetworkField) else None
    if isinstance(evidence, PointEvidence) and evidence.index.n == len(points):
        return evidence.index.trees[0]
    return None
