"""Carving open cavities that a field filled, where scan points lie buried (engine/cavities.py)."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
import trimesh

from backend.engine.cavities import MIN_POINTS, CarvedField, carve_open_cavities
from backend.engine.extract import check_options, extract_mesh, logit
from backend.engine.field import Field, FunctionField
from backend.engine.fit import Scan
from backend.engine.grid import Grid
from backend.engine.lattice import LatticeValues
from backend.engine.observation import UserFrame
from backend.engine.types import InputError, ReconstructOptions

OUTER, INNER, RIM = 0.35, 0.30, 0.05  # a bowl: a spherical shell below the plane z = RIM
GRID = Grid(128)
THRESHOLD = logit(0.5)


def _sphere_directions(n: int, rng: np.random.Generator) -> np.ndarray:
    d = rng.normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def bowl_points(n: int = 20_000, seed: int = 0) -> np.ndarray:
    """Points on both walls of the bowl and on its rim (a scan that saw into it), noise 0.002."""
    rng = np.random.default_rng(seed)
    radius = np.where(rng.random(4 * n) < 0.5, OUTER, INNER)
    walls = _sphere_directions(4 * n, rng) * radius[:, None]
    walls = walls[walls[:, 2] < RIM]
    rim = rng.uniform(-OUTER, OUTER, (4 * n, 3))
    rim[:, 2] = RIM
    rim = rim[
        (np.hypot(rim[:, 0], rim[:, 1]) > np.sqrt(INNER**2 - RIM**2)) & (np.linalg.norm(rim, axis=1) < OUTER)
    ]
    p = np.concatenate([walls[: n - n // 20], rim[: n // 20]])
    return (p + rng.normal(0, 0.002, p.shape)).astype(np.float32)


def filled_bowl(p: torch.Tensor) -> torch.Tensor:
    """The bowl read as a solid under a lid: the whole ball below the rim."""
    return 200.0 * torch.minimum(OUTER - p.norm(dim=-1), RIM - p[:, 2])


def open_bowl(p: torch.Tensor) -> torch.Tensor:
    r = p.norm(dim=-1)
    return 200.0 * torch.minimum(torch.minimum(OUTER - r, r - INNER), RIM - p[:, 2])


def first_mesh(field: Field) -> tuple[np.ndarray, np.ndarray]:
    options = ReconstructOptions(tau=0.5, resolution=GRID.resolution, fit_points=False)
    result = extract_mesh(field, LatticeValues(GRID.resolution + 1), GRID, UserFrame.identity(), 0.5, options)
    return result.vertices, result.faces


def carve(fn, points: np.ndarray) -> CarvedField | None:  # type: ignore[no-untyped-def]
    field = FunctionField(fn)
    vertices, _ = first_mesh(field)
    return carve_open_cavities(field, vertices, points, Scan(points).tree, GRID, THRESHOLD)


def inside(field: Field, *points: tuple[float, float, float]) -> list[bool]:
    return list(field.evaluate(np.array(points, np.float32)) > THRESHOLD)


def test_a_filled_bowl_is_carved_to_its_wall() -> None:
    carved = carve(filled_bowl, bowl_points())
    assert carved is not None
    # the cavity and the lid are empty now; the wall and the space around stay as they were
    assert inside(carved, (0, 0, -0.1), (0, 0, 0.0), (0.2, 0, -0.05)) == [False] * 3
    assert inside(carved, (0, 0, -0.325), (0.325, 0, -0.02), (0, -0.23, -0.23)) == [True] * 3
    assert inside(carved, (0, 0, 0.2), (0, 0, -0.4)) == [False] * 2
    vertices, faces = first_mesh(carved)
    mesh = trimesh.Trimesh(vertices, faces)
    shell = 2 / 3 * np.pi * (OUTER**3 - INNER**3)  # below z = 0; the band up to the rim adds a little
    assert mesh.is_watertight and 0.8 * shell < mesh.volume < 1.6 * shell
    # refinement and normals read gradients through the carving
    p = torch.tensor([[0.0, 0.0, -0.29]], requires_grad=True)
    carved.logits(p).sum().backward()
    assert p.grad is not None and torch.isfinite(p.grad).all()


def test_every_threshold_keeps_the_solid_away_from_the_carving() -> None:
    """The live slider reaches 0.999 (logit 6.9): the uncarved solid reads as the network says."""

    def sure(p: torch.Tensor) -> torch.Tensor:  # the filled bowl, as sure as a trained network
        return 10 * filled_bowl(p)

    carved = carve(sure, bowl_points())
    assert carved is not None
    wall = np.array([[0, 0, -0.325], [0.325, 0, -0.02]], np.float32)
    np.testing.assert_array_equal(carved.evaluate(wall), FunctionField(sure).evaluate(wall))
    assert (carved.evaluate(wall) > logit(0.999)).all()
    options = ReconstructOptions(tau=0.999, resolution=GRID.resolution, fit_points=False)
    values = LatticeValues(GRID.resolution + 1)
    mesh = extract_mesh(carved, values, GRID, UserFrame.identity(), 0.999, options)
    assert len(mesh.faces) > 0


def test_a_bowl_read_as_open_is_left_alone() -> None:
    assert carve(open_bowl, bowl_points()) is None


@pytest.mark.parametrize("noise", [0.0, 0.012])
def test_a_solid_scanned_from_above_keeps_its_unseen_underside(noise: float) -> None:
    """No wall is buried: the missing underside is the prior's to close, not a cavity; nor do a
    noisy scan's stray points deep under the surface make one (5% of them lie 0.02 deep)."""
    rng = np.random.default_rng(1)
    top = _sphere_directions(60_000, rng) * 0.3
    top = top[top[:, 2] > 0.05][:20_000]
    top = (top + rng.normal(0, noise, top.shape)).astype(np.float32)
    assert carve(lambda p: 200.0 * (0.3 - p.norm(dim=-1)), top) is None


def test_sparse_clouds_are_not_carved() -> None:
    assert carve(filled_bowl, bowl_points(MIN_POINTS - 1)) is None


def test_the_option_is_checked_and_the_command_line_turns_it_off() -> None:
    with pytest.raises(InputError, match="open_cavities must be true or false"):
        check_options(ReconstructOptions(open_cavities="yes"))  # type: ignore[arg-type]
    from backend.commands.reconstruct import add_model_arguments, options_from

    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    assert options_from(parser.parse_args([])).open_cavities
    assert not options_from(parser.parse_args(["--no-carve"])).open_cavities
