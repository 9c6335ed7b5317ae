"""Field -> mesh at one threshold: MISE, marching cubes, then the optional steps.

Every stage is timed; the values found by MISE are kept in ``values`` (owned by the
caller), so a later extraction at another threshold evaluates only what is new.
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..limits import MAX_REFINE_STEPS
from .field import Field
from .fit import Scan, fit_to_points
from .grid import Grid
from .lattice import LatticeValues
from .marching import march_surface_cells
from .mesh_check import check_mesh
from .mise import find_surface_cells
from .observation import UserFrame
from .postprocess import refine_mesh, simplify_mesh, vertex_normals
from .types import CancelFn, InputError, MeshResult, ProgressFn, ReconstructOptions


def check_tau(tau: object) -> float:
    if isinstance(tau, bool) or not isinstance(tau, int | float | np.floating | np.integer):
        raise InputError(f"tau must be a number, got {tau!r}")
    t = float(tau)
    if not (0.0 < t < 1.0):
        raise InputError(f"tau must lie strictly between 0 and 1, got {t}")
    return t


def check_options(options: ReconstructOptions) -> None:
    """InputError naming the first invalid option (tau and resolution are checked where used)."""
    if (
        isinstance(options.refine_steps, bool)
        or not isinstance(options.refine_steps, int)
        or options.refine_steps < 0
    ):
        raise InputError(f"refine_steps must be a non-negative integer, got {options.refine_steps!r}")
    if options.refine_steps > MAX_REFINE_STEPS:
        raise InputError(f"refine_steps may be at most {MAX_REFINE_STEPS:,}, got {options.refine_steps:,}")
    target = options.simplify_faces
    if target is not None and (isinstance(target, bool) or not isinstance(target, int) or target < 4):
        raise InputError(f"simplify_faces must be an integer of at least 4 (or None), got {target!r}")
    for name in ("fit_points", "outlines", "open_cavities"):
        if not isinstance(getattr(options, name), bool):
            raise InputError(f"{name} must be true or false, got {getattr(options, name)!r}")
    check_seed(options.seed)


MAX_SEED = 2**64 - 1  # the largest seed both numpy's and torch's generators take


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed must be an integer in 0 .. 2^64 - 1, got {seed!r}")
    return int(seed)


def logit(tau: float) -> float:
    return math.log(tau) - math.log1p(-tau)


def _noop_progress(stage: str, fraction: float) -> None:
    pass


def extract_mesh(
    field: Field,
    values: LatticeValues,
    grid: Grid,
    frame: UserFrame,
    tau: float,
    options: ReconstructOptions,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    points: Scan | None = None,
) -> MeshResult:
    """Extract the surface {sigmoid(logits) = tau} and map it into ``frame``; ``points``: the
    point cloud the field was encoded from (normalised frame), which ``options.fit_points`` fits
    the surface to."""
    report = progress or _noop_progress
    timings: dict[str, float] = {}
    warnings: list[str] = []
    levels = grid.depth + 1
    done = [0.0]  # MISE may sweep the levels more than once: never report going backwards

    def evaluate(points: np.ndarray, span: tuple[float, float]) -> np.ndarray:
        def update(fraction: float) -> None:
            done[0] = max(done[0], min(0.99, (span[0] + fraction * (span[1] - span[0])) / levels))
            report("evaluate", done[0])

        return field.evaluate(grid.to_unit(points), update, cancel)

    threshold = logit(tau)
    t0 = time.perf_counter()
    report("evaluate", 0.0)
    surface = find_surface_cells(grid, values, evaluate, threshold, cancel)
    report("evaluate", 1.0)
    t1 = time.perf_counter()
    timings["evaluate"] = t1 - t0
    report("marching_cubes", 0.0)
    lattice_vertices, faces = march_surface_cells(
        values, surface.cells, grid.resolution, threshold, lambda f: report("marching_cubes", f), cancel
    )
    vertices = grid.to_unit(lattice_vertices)
    report("marching_cubes", 1.0)
    t2 = time.perf_counter()
    timings["marching_cubes"] = t2 - t1
    stats = {
        "evaluations": float(surface.evaluations),
        "known_values": float(values.count),
        "surface_cells": float(len(surface.cells)),
        "passes": float(surface.passes),
    }

    if len(faces) == 0:
        warnings.append(f"empty mesh: the field has no surface at tau={tau:g}")
    else:
        if options.simplify_faces is not None:
            report("simplify", 0.0)
            vertices, faces = simplify_mesh(vertices, faces, options.simplify_faces)
            report("simplify", 1.0)
            t3 = time.perf_counter()
            timings["simplify"] = t3 - t2
            t2 = t3
        if options.refine_steps > 0:
            report("refine", 0.0)
            vertices = refine_mesh(
                field,
                vertices,
                faces,
                tau,
                options.refine_steps,
                options.seed,
                lambda f: report("refine", f),
                cancel,
            )
            t3 = time.perf_counter()
            timings["refine"] = t3 - t2
            t2 = t3
        if points is not None and options.fit_points:
            report("fit", 0.0)
            vertices = fit_to_points(vertices, faces, points)
            report("fit", 1.0)
            t3 = time.perf_counter()
            timings["fit"] = t3 - t2
            t2 = t3
    normals = None
    if options.normals:
        report("normals", 0.0)
        normals = vertex_normals(
            field,
            vertices,
            lambda f: report("normals", f),
            cancel,
            fallback=lambda: _mesh_normals(vertices, faces),
        )
        report("normals", 1.0)
        timings["normals"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - t0
    user_vertices = frame.to_user(vertices).reshape(-1, 3)
    user_faces = np.ascontiguousarray(faces, dtype=np.int32).reshape(-1, 3)
    check_mesh(user_vertices, user_faces, frame, normals)
    return MeshResult(
        vertices=user_vertices,
        faces=user_faces,
        tau=tau,
        timings=timings,
        normals=normals,
        warnings=warnings,
        stats=stats,
    )


def _mesh_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals of the mesh itself (used where the field is flat)."""
    out = np.zeros((len(vertices), 3))
    if len(faces):
        tri = np.asarray(vertices, np.float64)[faces]
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        for k in range(3):
            np.add.at(out, faces[:, k], n)
    return (out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)).astype(np.float32)
