"""``python -m backend reconstruct-many``: a folder of real inputs through real worker processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.batch import Slot, plan_slots
from backend.commands.reconstruct_many import output_paths

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def run_many(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "backend", "reconstruct-many", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def make_folder(folder: Path) -> list[str]:
    """Real inputs of every kind, a corrupt file and files that are not inputs; the good names."""
    folder.mkdir()
    shutil.copy(EXAMPLES / "chair_points.ply", folder)
    shutil.copy(EXAMPLES / "chair_voxels.npy", folder)
    shutil.copy(EXAMPLES / "chair.binvox", folder / "chair_grid.binvox")
    sphere = np.random.default_rng(0).normal(size=(500, 3))
    np.savetxt(folder / "sphere.xyz", 0.4 * sphere / np.linalg.norm(sphere, axis=1, keepdims=True))
    image = np.full((40, 40, 3), 255, np.uint8)
    image[8:32, 10:30] = [150, 80, 30]
    Image.fromarray(image).save(folder / "box.png")
    (folder / "broken.ply").write_bytes(b"ply\nformat nonsense\n")
    (folder / "notes.md").write_text("not an input")
    (folder / ".hidden.xyz").write_text("1 2 3\n")
    return ["chair_points", "chair_voxels", "chair_grid", "sphere", "box"]


@pytest.mark.slow
def test_a_folder_is_reconstructed_failures_summarised_and_a_rerun_skips_what_is_done(
    engine_weights: Path, tmp_path: Path
) -> None:
    inputs, out = tmp_path / "scans", tmp_path / "meshes"
    good = make_folder(inputs)
    out.mkdir()
    (out / ".chair_points.ply.999.tmp").write_bytes(b"half a mesh")  # a write cut short earlier
    options = ["--weights-dir", str(engine_weights), "--device", "cpu", "--resolution", "32"]

    first = run_many(str(inputs), "-o", str(out), "--workers", "2", *options)
    assert first.returncode == 1, first.stderr
    assert "5 written, 0 already done, 1 failed of 6 files" in first.stdout
    assert "failed (1):\n  broken.ply: cannot read" in first.stderr and "Traceback" not in first.stderr
    for name in good:
        mesh = trimesh.load(out / f"{name}.ply", force="mesh")
        assert isinstance(mesh, trimesh.Trimesh)
    assert sorted(p.name for p in out.glob("*.ply")) == sorted(f"{name}.ply" for name in good)
    (inputs / "broken.ply").unlink()
    (out / "sphere.ply").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.ply")}

    second = run_many(str(inputs), "-o", str(out), "--workers", "1", *options)
    assert second.returncode == 0, second.stderr
    assert "1 written, 4 already done, 0 failed of 5 files" in second.stdout
    assert (out / "sphere.ply").is_file()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.ply") if p.name in stamps} == stamps


@pytest.mark.slow
def test_subfolders_are_read_with_recursive_and_kept(
    engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.__main__ import main

    inputs, out = tmp_path / "in", tmp_path / "in" / "meshes"
    (inputs / "a" / "b").mkdir(parents=True)
    shutil.copy(EXAMPLES / "chair_voxels.npy", inputs / "a" / "b" / "grid.npy")
    options = ["--weights-dir", str(engine_weights), "--device", "cpu", "--resolution", "32"]
    assert main(["reconstruct-many", str(inputs), "-o", str(tmp_path / "out"), *options]) == 2
    assert "error: no observation files" in capsys.readouterr().err
    deep = run_many(str(inputs), "-o", str(out), "--recursive", "--format", "obj", *options)
    assert deep.returncode == 0, deep.stderr
    assert (out / "a" / "b" / "grid.obj").is_file()
    again = ["reconstruct-many", str(inputs), "-o", str(out), "--recursive", "--format", "obj", *options]
    assert main(again) == 0
    assert "0 written, 1 already done" in capsys.readouterr().out  # its own meshes are not inputs


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resolution", "100"], "resolution must be one of"),
        (["--tau", "1.5"], "tau must lie strictly between 0 and 1"),
        (["--workers", "0"], "workers must be at least 1"),
        (["--model", "nothing"], "no model named 'nothing'"),
        (["--device", "cuda:7"], "cuda"),
        (["--half", "--device", "cpu"], "half precision needs a CUDA device"),
    ],
)
def test_usage_errors_stop_before_any_work(
    engine_weights: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    import torch

    from backend.__main__ import main
    from backend.engine.precision import half_dtype

    if extra[-1] == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has eight GPUs")
    if "--half" in extra and half_dtype(torch.device("cpu")) is not None:
        pytest.skip("this CPU runs --half (bfloat16 with AMX)")
    (tmp_path / "in").mkdir()
    shutil.copy(EXAMPLES / "chair_voxels.npy", tmp_path / "in")
    out = tmp_path / "out"
    args = ["reconstruct-many", str(tmp_path / "in"), "-o", str(out), "--weights-dir", str(engine_weights)]
    assert main([*args, *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not out.exists()


def test_missing_or_same_folders_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from backend.__main__ import main

    assert main(["reconstruct-many", str(tmp_path / "none"), "-o", str(tmp_path / "out")]) == 2
    assert "error: input folder not found" in capsys.readouterr().err
    assert main(["reconstruct-many", str(tmp_path), "-o", str(tmp_path)]) == 2
    assert "error: the output folder is the input folder" in capsys.readouterr().err


def test_inputs_that_would_share_a_mesh_keep_their_suffix(tmp_path: Path) -> None:
    inputs = [
        tmp_path / "chair.ply",
        tmp_path / "chair.npy",
        tmp_path / "sub" / "chair.ply",
        tmp_path / "t.xyz",
    ]
    out = tmp_path / "out"
    assert output_paths(inputs, tmp_path, out, "obj") == {
        inputs[0]: out / "chair.ply.obj",
        inputs[1]: out / "chair.npy.obj",
        inputs[2]: out / "sub" / "chair.obj",
        inputs[3]: out / "t.obj",
    }


@pytest.mark.parametrize(
    ("device", "index", "gpus", "workers", "cores", "expected"),
    [
        ("cpu", None, 0, None, 16, [Slot("cpu", 2)] * 8),
        ("cpu", None, 0, 3, 16, [Slot("cpu", 5)] * 3),
        ("cpu", None, 0, 4, 2, [Slot("cpu", 1)] * 4),  # more workers than cores: one thread each
        ("cpu", None, 0, None, 1, [Slot("cpu", 1)]),
        ("cuda", None, 4, None, 32, [Slot(f"cuda:{i}", 8) for i in range(4)]),
        ("cuda", 2, 4, None, 32, [Slot("cuda:2", 32)]),
        ("cuda", None, 2, 4, 8, [Slot("cuda:0", 2), Slot("cuda:1", 2)] * 2),
        ("mps", None, 0, None, 8, [Slot("mps", 8)]),
    ],
)
def test_workers_share_the_cores_and_take_one_gpu_each(
    device: str, index: int | None, gpus: int, workers: int | None, cores: int, expected: list[Slot]
) -> None:
    assert sorted(plan_slots(device, index, gpus, workers, cores), key=str) == sorted(expected, key=str)


def test_a_worker_limits_its_threads_before_torch_starts() -> None:
    code = (
        "import multiprocessing, os\n"
        "from backend.batch import Slot, start_worker\n"
        "slots = multiprocessing.get_context('spawn').Queue(); slots.put(Slot('cpu', 1))\n"
        "start_worker(slots, None, False)\n"
        "import torch\n"
        "print(os.environ['OMP_NUM_THREADS'], torch.get_num_threads())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]
