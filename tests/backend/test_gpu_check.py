"""scripts/gpu_check.py: its CPU fallback end to end, and how it judges a mismatch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import trimesh

from backend.engine.precision import half_dtype

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_cpu_fallback_runs_every_check_and_prints_one_table(engine_weights: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--device", "cpu"]
        + ["--weights-dir", str(engine_weights), "--resolutions", "32", "--train-steps", "2"],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("  ")[0].strip(): line for line in done.stdout.splitlines()[2:]}
    half = half_dtype(torch.device("cpu")) is not None  # a CPU with AMX runs --half in bfloat16
    assert list(rows) == [
        "info",
        "reconstruct 32^3 float32",
        "reconstruct 32^3 --half",
        "serve reconstruct 32^3 (field kept)",
        "serve extract from the cached field",
        "serve release",
        "out of memory",
        "training, 2 steps",
        "evaluation 32^3 float32",
        *(["evaluation 32^3 --half"] if half else []),
    ]
    assert "Chamfer to CPU 0.0e+00" in rows["reconstruct 32^3 float32"]
    if half:
        assert "Chamfer to CPU" in rows["reconstruct 32^3 --half"]
    else:
        assert "refused on this device" in rows["reconstruct 32^3 --half"]
    assert " skip " in rows["out of memory"]
    assert all(" ok " in row for name, row in rows.items() if name != "out of memory")


def test_a_mesh_off_by_more_than_the_tolerance_fails_the_check(gpu_check_script: ModuleType) -> None:
    sphere = np.asarray(trimesh.creation.icosphere(subdivisions=4, radius=0.5).vertices)
    check = gpu_check_script
    assert check.chamfer(sphere, sphere, 1.0) == 0.0
    assert check.chamfer(sphere + [0.01, 0, 0], sphere, 1.0) == pytest.approx(0.01, rel=0.5)
    table = check.Table()
    table.run("same", lambda: check.matches(sphere, sphere, 1.0, 1e-3))
    table.run("moved", lambda: check.matches(sphere + [0.01, 0, 0], sphere, 1.0, 1e-3))
    table.run("crashed", lambda: str(1 / 0))
    assert [row.status for row in table.rows] == ["ok", "FAIL", "FAIL"]
    assert table.failed() and "> 0.001" in table.rows[1].detail
    assert table.rows[2].detail == "ZeroDivisionError: division by zero"
    assert table.render().splitlines()[0].split() == ["check", "status", "seconds", "detail"]
