"""Observation files, mesh files and the ``reconstruct`` / ``sample`` commands (real subprocesses)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from backend.engine.binvox import read_binvox
from backend.engine.inputs import read_observation
from backend.engine.meshio import write_mesh
from backend.engine.precision import half_dtype
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import InputError, Observation, ReconstructOptions
from backend.kinds import observed_kind

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_backend(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "backend", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_shipped_examples_are_what_the_script_makes(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLES / "make_examples.py"), str(tmp_path)], check=True, capture_output=True
    )
    for name in ("chair_points.ply", "chair_scan.ply", "chair_voxels.npy", "chair.binvox"):
        assert digest(tmp_path / name) == digest(EXAMPLES / name), name


def test_point_cloud_files(tmp_path: Path) -> None:
    obs = read_observation(EXAMPLES / "chair_points.ply")
    assert obs.points is not None and obs.points.shape == (3000, 3)
    assert obs.points[:, 2].min() == pytest.approx(0.0, abs=1e-6)  # the chair stands on the floor
    xyz = tmp_path / "cloud.xyz"
    np.savetxt(xyz, np.hstack([obs.points, np.ones((3000, 3))]), header="x y z nx ny nz")
    np.testing.assert_allclose(read_observation(xyz).points, obs.points, atol=1e-6)
    npy = tmp_path / "cloud.npy"
    np.save(npy, obs.points)
    np.testing.assert_array_equal(read_observation(npy).points, obs.points)


def test_the_example_scan_is_binary_and_misses_the_underside() -> None:
    """chair_scan.ply: 20,000 noisy points seen from above, so no point lies under the seat."""
    assert (EXAMPLES / "chair_scan.ply").read_bytes().startswith(b"ply\nformat binary_little_endian")
    scan = read_observation(EXAMPLES / "chair_scan.ply").points
    chair = read_observation(EXAMPLES / "chair_points.ply").points
    assert scan is not None and chair is not None and scan.shape == (20_000, 3)
    np.testing.assert_allclose(scan.min(axis=0), chair.min(axis=0), atol=0.01)
    np.testing.assert_allclose(scan.max(axis=0), chair.max(axis=0), atol=0.01)
    local = scan - chair.min(axis=0)  # the chair's own frame: the seat spans z 0.42 to 0.46
    inner = (local[:, :2] > 0.08).all(axis=1) & (local[:, :2] < 0.36).all(axis=1)
    assert (inner & (np.abs(local[:, 2] - 0.46) < 0.005)).sum() > 500  # the seat's top is scanned
    assert (inner & (np.abs(local[:, 2] - 0.42) < 0.005)).sum() == 0  # its underside is not


def test_voxel_files_and_their_bounds(tmp_path: Path) -> None:
    grid = read_observation(EXAMPLES / "chair_voxels.npy")
    assert grid.voxels is not None and grid.voxels.shape == (32, 32, 32) and grid.bounds is None
    bounds = np.array([[0.0, 0, 0], [2, 2, 2]])
    assert read_observation(EXAMPLES / "chair_voxels.npy", bounds).bounds is bounds
    binvox = read_binvox(EXAMPLES / "chair.binvox")
    # the binvox header puts the chair in metres where the point cloud is
    idx = np.argwhere(binvox.voxels)
    size = (binvox.bounds[1] - binvox.bounds[0]) / np.array(binvox.voxels.shape)
    centres = binvox.bounds[0] + (idx + 0.5) * size
    points = read_observation(EXAMPLES / "chair_points.ply").points
    assert points is not None
    np.testing.assert_allclose(centres.min(axis=0), points.min(axis=0), atol=size.max())
    np.testing.assert_allclose(centres.max(axis=0), points.max(axis=0), atol=size.max())
    # the back rest (high z) is at the back (high y): the axes are not swapped
    top = centres[centres[:, 2] > 0.7]
    assert top[:, 1].min() > points[:, 1].max() - 0.1


def test_image_files(tmp_path: Path) -> None:
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[5:15, 5:25] = [10, 200, 10, 255]
    Image.fromarray(rgba).save(tmp_path / "leaf.png")
    obs = read_observation(tmp_path / "leaf.png")
    assert obs.image is not None and obs.image.shape == (20, 30, 4)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "leaf.jpg")
    jpg = read_observation(tmp_path / "leaf.jpg").image
    assert jpg is not None and jpg.shape == (20, 30, 3)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("cloud.obj", b"v 0 0 0", "unsupported input"),
        (
            "broken.binvox",
            b"#binvox 1\ndim 4 4 4\ntranslate 0 0 0\nscale 1\ndata\n\x01\x05",
            "truncated or corrupt",
        ),
        ("foreign.binvox", b"P6 4 4 255\n", "not a binvox file"),
        ("not_an_image.png", b"hello", "cannot read"),
        ("flat.npy", None, "shape"),
        ("words.xyz", b"a b c\nd e f\n", "cannot read"),
    ],
)
def test_unreadable_files_are_refused_with_a_clear_message(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if content is None:
        np.save(path, np.zeros((4, 4)))
    else:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_observation(path)
    with pytest.raises(InputError, match="not found"):
        read_observation(tmp_path / "missing.ply")
    with pytest.raises(InputError, match="bounds only apply"):
        read_observation(EXAMPLES / "chair_points.ply", np.zeros((2, 3)))


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".stl", ".off", ".glb"])
def test_meshes_are_written_in_every_format(tmp_path: Path, suffix: str) -> None:
    box = trimesh.creation.box((1.0, 2.0, 3.0))
    path = tmp_path / f"box{suffix}"
    write_mesh(path, np.asarray(box.vertices, np.float32), np.asarray(box.faces, np.int32))
    loaded = trimesh.load(path, force="mesh")
    assert loaded.volume == pytest.approx(6.0, rel=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left behind
    with pytest.raises(InputError, match="unsupported output"):
        write_mesh(tmp_path / "box.xyz", box.vertices, box.faces)


def _tau_with_surface(weights: Path, observation: Observation, model: str) -> float:
    engine = Reconstructor(device="cpu", weights_dir=weights)
    probe = engine.reconstruct(model, observation, ReconstructOptions(resolution=32))
    assert probe.field_id is not None
    field = engine.cache.get(probe.field_id).field
    logits = field.evaluate((np.random.default_rng(0).random((4000, 3)) - 0.5).astype(np.float32) * 0.8)
    return float(1 / (1 + np.exp(-np.median(logits))))


def test_reconstruct_command_writes_a_closed_mesh_where_the_input_was(
    engine_weights: Path, tmp_path: Path
) -> None:
    source = EXAMPLES / "chair_points.ply"
    before = digest(source)
    tau = _tau_with_surface(engine_weights, read_observation(source), "points")
    out = tmp_path / "chair.obj"
    done = run_backend(
        "reconstruct", str(source), "-o", str(out), "--weights-dir", str(engine_weights),
        "--resolution", "64", "--tau", f"{tau:.9f}", "--device", "cpu", "--normals",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "timings: encode" in done.stdout and "wrote" in done.stdout
    mesh = trimesh.load(out, force="mesh")
    assert mesh.is_watertight and len(mesh.faces) > 0
    points = read_observation(source).points
    assert points is not None
    lo, hi = points.min(axis=0), points.max(axis=0)
    extent = (hi - lo).max()
    box_lo = (lo + hi) / 2 - 0.55 * extent  # the padded box around the input, in metres
    tol = 0.01 * 1.1 / 64 * extent + 1e-5  # caps where the box cuts the surface lie 1% of a cell out
    assert (mesh.bounds[0] >= box_lo - tol).all() and (mesh.bounds[1] <= box_lo + 1.1 * extent + tol).all()
    assert digest(source) == before  # the input is never touched


def test_sample_command(engine_weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "shape.ply"
    done = run_backend(
        "sample", "-o", str(out), "--seed", "3", "--weights-dir", str(engine_weights), "--resolution", "32"
    )
    assert done.returncode == 0, done.stderr
    assert out.is_file() and "timings:" in done.stdout


def test_a_bad_command_line_fails_with_a_message_not_a_traceback(
    engine_weights: Path, tmp_path: Path
) -> None:
    source, out = str(EXAMPLES / "chair_points.ply"), str(tmp_path / "a.ply")
    done = run_backend("reconstruct", source, "-o", out, "--tau", "2", "--weights-dir", str(engine_weights))
    assert done.returncode == 2
    assert (
        "error: tau must lie strictly between 0 and 1, got 2.0" in done.stderr
        and "Traceback" not in done.stderr
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["reconstruct", "MISSING.ply"], "input file not found"),
        (
            ["reconstruct", str(EXAMPLES / "chair_points.ply"), "--tau", "1.5"],
            "tau must lie strictly between 0 and 1",
        ),
        (
            ["reconstruct", str(EXAMPLES / "chair_points.ply"), "--resolution", "100"],
            "resolution must be one of",
        ),
        (["reconstruct", str(EXAMPLES / "chair_points.ply"), "--model", "voxels"], "takes voxels input"),
        (["reconstruct", str(EXAMPLES / "chair_points.ply"), "--device", "cuda:7"], "cuda"),
        (["reconstruct", str(EXAMPLES / "chair_voxels.npy"), "--refine", "-2"], "refine_steps"),
        (["sample", "--model", "points"], "unconditional"),
    ],
)
def test_commands_report_bad_input(
    engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    from backend.__main__ import main

    out = tmp_path / "out.ply"
    assert main([*args, "-o", str(out), "--weights-dir", str(engine_weights)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_reconstruct_command_refuses_to_overwrite_its_input(
    engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.__main__ import main

    source = tmp_path / "cloud.ply"
    source.write_bytes((EXAMPLES / "chair_points.ply").read_bytes())
    before = digest(source)
    assert main(["reconstruct", str(source), "-o", str(source), "--weights-dir", str(engine_weights)]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert digest(source) == before


def _frame_of(observation: Observation) -> tuple[np.ndarray, float]:
    """(centre, size) of the input's frame: the mesh must lie in the padded box around it."""
    if observation.points is not None:
        lo, hi = observation.points.min(axis=0), observation.points.max(axis=0)
        return (lo + hi) / 2, float((hi - lo).max())
    if observation.voxels is not None:
        b = np.array([[-0.5] * 3, [0.5] * 3]) if observation.bounds is None else observation.bounds
        return (b[0] + b[1]) / 2, float((b[1] - b[0]).max())
    return np.zeros(3), 1.0  # an image: the normalised camera frame


def _make_input(kind: str, folder: Path) -> tuple[Path, list[str]]:
    """An input file of each kind the command reads, and the extra arguments it needs."""
    chair = read_observation(EXAMPLES / "chair_points.ply").points
    assert chair is not None
    if kind == "xyz":
        path = folder / "chair.xyz"
        np.savetxt(path, chair)
        return path, []
    if kind == "npy points":
        path = folder / "chair_points.npy"
        np.save(path, chair.astype(np.float64))
        return path, []
    if kind == "npy voxels + bounds":
        path = folder / "chair_voxels.npy"
        np.save(path, np.load(EXAMPLES / "chair_voxels.npy"))
        return path, ["--bounds", "1", "2", "3", "3", "4", "5"]
    if kind == "binvox":
        return EXAMPLES / "chair.binvox", []
    path = folder / f"chair.{kind}"
    image = np.full((48, 40, 3), 255, np.uint8)
    image[10:40, 8:32] = [120, 60, 20]
    Image.fromarray(image).save(path)
    return path, []


@pytest.mark.parametrize("kind", ["xyz", "npy points", "npy voxels + bounds", "binvox", "png", "jpg"])
def test_reconstruct_command_reads_every_input_kind(engine_weights: Path, tmp_path: Path, kind: str) -> None:
    source, extra = _make_input(kind, tmp_path)
    bounds = np.array(extra[1:], float).reshape(2, 3) if extra else None
    observation = read_observation(source, bounds)
    model = {"pointcloud": "points", "voxels": "voxels", "image": "image"}[observed_kind(observation).name]
    tau = _tau_with_surface(engine_weights, observation, model)
    out = tmp_path / "mesh.ply"
    done = run_backend(
        "reconstruct", str(source), "-o", str(out), *extra, "--weights-dir", str(engine_weights),
        "--resolution", "32", "--tau", f"{tau:.9f}", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr  # no progress bar when stderr is not a terminal
    mesh = trimesh.load(out, force="mesh")
    assert len(mesh.faces) > 0 and mesh.is_watertight
    centre, size = _frame_of(observation)
    reach = 0.55 * size * (1 + 0.02 / 32) + 1e-5  # the padded box, and caps 1% of a cell outside it
    assert (np.abs(mesh.vertices - centre) <= reach).all()


def test_reconstruct_command_shows_a_progress_bar_on_a_terminal(engine_weights: Path, tmp_path: Path) -> None:
    import fcntl
    import pty
    import struct
    import termios

    main_fd, terminal = pty.openpty()
    # a terminal of 24 x 80 characters (a new pseudo-terminal has no size, and tqdm draws nothing on it)
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    out = tmp_path / "chair.ply"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["reconstruct", str(EXAMPLES / "chair_points.ply"), "-o", str(out), "--resolution", "64"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", *args, "--weights-dir", str(engine_weights), "--device", "cpu"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    assert proc.wait(300) == 0, shown.decode(errors="replace")
    text = shown.decode(errors="replace")
    assert "evaluate" in text and "marching_cubes" in text and "%" in text
    assert out.is_file()


def test_half_precision_on_the_cpu_runs_with_amx_and_is_refused_without(
    engine_weights: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.__main__ import main

    out = tmp_path / "out.ply"
    args = ["reconstruct", str(EXAMPLES / "chair_points.ply"), "-o", str(out), "--half", "--device", "cpu"]
    status = main([*args, "--weights-dir", str(engine_weights)])
    if half_dtype(torch.device("cpu")) is None:
        assert status == 2 and not out.exists()
        assert "half precision needs a CUDA device or a CPU with" in capsys.readouterr().err
    else:
        assert status == 0 and len(trimesh.load(out).faces) > 0
