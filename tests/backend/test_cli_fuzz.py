"""Damaged, lying and extreme input through the command line: it ends in one of two ways.

Either exit 0 with a finite, closed mesh written, or exit 2 with exactly one ``error:`` line on
stderr and no output file; never a traceback, a hang or memory beyond the documented bound.

Most cases run ``python -m backend`` in this process (``backend.__main__.main``, the code a
subprocess would run, without paying torch's import each time); a fixed set of real subprocesses
covers the end-to-end cases and measures their peak memory. Examples are derandomised, so every
run tries the same cases.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from backend.__main__ import main
from backend.checkpoint import CheckpointError, load_checkpoint
from backend.limits import MAX_IMAGE_SIDE

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PEAK_MEMORY_BYTES = 2**30  # the documented bound: an image never costs more than ~1 GB
OUTCOMES: Counter[str] = Counter()  # what the cases ended in, printed at the end (pytest -s)


# ---------------------------------------------------------------- the two allowed endings
def check_ending(status: int, stderr: str, output: Path) -> None:
    """Exit 0 with a finite, closed mesh, or exit 2 with one ``error:`` line and no file."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    # nothing else reaches stderr but the command's own warnings (no library chatter)
    assert all(line.startswith(("error:", "warning:")) for line in lines), stderr
    leftovers = [p.name for p in output.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers
    if status == 0:
        mesh = trimesh.load(output, force="mesh", process=False)
        vertices = np.asarray(mesh.vertices)
        assert np.isfinite(vertices).all()
        assert len(mesh.faces) == 0 or mesh.is_watertight
        assert not any(line.startswith("error:") for line in lines), stderr
        OUTCOMES["exit 0, finite closed mesh"] += 1
        output.unlink()
    else:
        assert status == 2, (status, stderr)
        assert sum(line.startswith("error:") for line in lines) == 1, stderr
        assert not output.exists()
        OUTCOMES["exit 2, one error line"] += 1


def run_in_process(args: list[str]) -> tuple[int, str]:
    """``python -m backend ARGS`` in this process: (exit status, stderr). Any exception escaping
    ``main`` is a traceback a user would see, and fails the test."""
    err = io.StringIO()
    threads = torch.get_num_threads()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                status = main(args)
            except SystemExit as e:  # argparse's own exits (--help, --version) and errors
                status = int(e.code or 0)
    finally:
        torch.set_num_threads(threads)
    return status, err.getvalue()


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="occ-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
    print("\nfuzzed command-line cases:", dict(OUTCOMES))


def reconstruct(source: Path, weights: Path, *options: str) -> None:
    """One in-process case: reconstruct ``source`` at 32^3 with the tiny models, check the ending."""
    out = source.parent / "out.ply"
    out.unlink(missing_ok=True)
    args = ["reconstruct", str(source), "-o", str(out), "--weights-dir", str(weights)]
    status, stderr = run_in_process([*args, "--resolution", "32", "--device", "cpu", *options])
    check_ending(status, stderr, out)


# ---------------------------------------------------------------- valid files of every format
def _points() -> np.ndarray:
    chair = trimesh.load(EXAMPLES / "chair_points.ply", process=False)
    return np.asarray(chair.vertices, np.float32)[::15]  # 200 points


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _ply(encoding: str) -> bytes:
    return bytes(trimesh.PointCloud(_points()).export(file_type="ply", encoding=encoding))


def _xyz() -> bytes:
    return "\n".join(" ".join(f"{v:.5f}" for v in p) for p in _points()).encode()


def _binvox() -> bytes:
    grid = np.zeros((16, 16, 16), bool)
    grid[3:13, 4:12, 2:14] = True
    flat = grid.transpose(0, 2, 1).reshape(-1)  # x, z, y order (y fastest)
    runs = bytearray()
    i = 0
    while i < len(flat):
        j = i
        while j < len(flat) and flat[j] == flat[i] and j - i < 255:
            j += 1
        runs += bytes([int(flat[i]), j - i])
        i = j
    return b"#binvox 1\ndim 16 16 16\ntranslate -0.5 -0.5 -0.5\nscale 1\ndata\n" + bytes(runs)


def _image(suffix: str) -> bytes:
    image = np.full((48, 40, 3), 255, np.uint8)
    image[10:40, 8:32] = [120, 60, 20]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    return buffer.getvalue()


VOXELS = np.zeros((16, 16, 16), np.uint8)
VOXELS[4:12, 3:13, 5:11] = 1
FILES: dict[str, Callable[[], bytes]] = {
    "points.npy": lambda: _npy(_points()),
    "voxels.npy": lambda: _npy(VOXELS),
    "binary.ply": lambda: _ply("binary"),
    "ascii.ply": lambda: _ply("ascii"),
    "points.xyz": _xyz,
    "grid.binvox": _binvox,
    "picture.png": lambda: _image(".png"),
    "picture.jpg": lambda: _image(".jpg"),
}


def _header_end(name: str, data: bytes) -> int:
    """Where a file's header ends: the part whose numbers declare sizes."""
    for marker in (b"end_header\n", b"data\n", b"}\n"):
        at = data.find(marker)
        if at >= 0:
            return at + len(marker)
    return min(len(data), 64)


def _png_with_size(data: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR declares another size, with a correct checksum, so readers believe it."""
    body = struct.pack(">II", width, height) + data[24:29]
    return data[:16] + body + struct.pack(">I", zlib.crc32(b"IHDR" + body)) + data[33:]


def _jpg_with_size(data: bytes, width: int, height: int) -> bytes:
    at = data.find(b"\xff\xc0")
    return data[: at + 5] + struct.pack(">HH", height, width) + data[at + 9 :]


NUMBERS = st.one_of(
    st.sampled_from([0, 1, 2, 3, 255, 65_535, 2**31, 2**32, 10**9, 10**12, 10**18]),
    st.integers(-(10**6), 10**13),
)


@st.composite
def damaged(draw: st.DrawFn, name: str, data: bytes) -> bytes:
    """``data`` truncated, overwritten, extended, or with a header that lies about a size."""
    how = draw(st.sampled_from(["truncate", "overwrite", "insert", "lie", "lie", "empty"]))
    if how == "empty":
        return b""
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "overwrite":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "insert":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    # a lie: a size in the header replaced by another number
    if name.endswith(".png"):
        return _png_with_size(data, draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1)))
    if name.endswith(".jpg"):
        return _jpg_with_size(data, draw(st.integers(0, 65_535)), draw(st.integers(0, 65_535)))
    end = _header_end(name, data)
    numbers = list(re.finditer(rb"\d+", data[:end]))
    if not numbers:
        return data
    m = draw(st.sampled_from(numbers))
    return data[: m.start()] + str(draw(NUMBERS)).encode() + data[m.end() :]


@pytest.mark.parametrize("name", sorted(FILES))
def test_damaged_input_files(name: str, folder: Path, engine_weights: Path) -> None:
    valid = FILES[name]()
    case = folder / name.replace(".", "_")
    case.mkdir()
    source = case / ("input" + Path(name).suffix)

    @FUZZ
    @given(damaged(name, valid))
    def one(data: bytes) -> None:
        source.write_bytes(data)
        reconstruct(source, engine_weights)

    one()


# ---------------------------------------------------------------- model files
@st.composite
def damaged_model(draw: st.DrawFn, data: bytes) -> bytes:
    how = draw(st.sampled_from(["truncate", "overwrite", "length", "lie", "lie", "lie"]))
    length = int.from_bytes(data[:8], "little")
    if how == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if how == "overwrite":
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            out[draw(st.integers(0, 8 + length))] = draw(st.integers(0, 255))
        return bytes(out)
    if how == "length":
        return draw(st.integers(0, 2**64 - 1)).to_bytes(8, "little") + data[8:]
    # a lie in the header: a shape, an offset or a size in the model's metadata
    numbers = list(re.finditer(rb"\d+", data[8 : 8 + length]))
    m = draw(st.sampled_from(numbers))
    header = data[8 : 8 + length]
    header = header[: m.start()] + str(draw(NUMBERS)).encode() + header[m.end() :]
    return len(header).to_bytes(8, "little") + header + data[8 + length :]


def test_damaged_model_files(folder: Path, engine_weights: Path) -> None:
    valid = (engine_weights / "points.safetensors").read_bytes()
    case = folder / "models"
    case.mkdir()
    model = case / "damaged.safetensors"

    @settings(FUZZ, max_examples=100)
    @given(damaged_model(valid))
    def loads_or_refuses(data: bytes) -> None:
        model.write_bytes(data)
        try:
            net, _ = load_checkpoint(model)
        except CheckpointError:
            OUTCOMES["model file refused"] += 1
            return
        assert sum(p.numel() for p in net.parameters()) < 10**6
        OUTCOMES["model file loaded"] += 1

    loads_or_refuses()

    @settings(FUZZ, max_examples=10)
    @given(damaged_model(valid))
    def through_the_command(data: bytes) -> None:
        model.write_bytes(data)
        reconstruct(EXAMPLES / "chair_points.ply", engine_weights, "--model", str(model))

    through_the_command()


# ---------------------------------------------------------------- options
def _number(value: float) -> str:
    return repr(float(value))


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--resolution": st.sampled_from(["32", "32", "0", "-32", "33", "48", "1024", "10000000000", "x"]),
        "--tau": st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(_number), st.just("0.4")),
        "--refine": st.one_of(st.integers(0, 2), st.integers(-(10**3), -1), st.integers(1001, 10**12)).map(
            str
        ),
        "--simplify": st.one_of(st.integers(-10, 10), st.integers(100, 10**9)).map(str),
        "--seed": st.one_of(st.integers(-5, 5), st.integers(2**63, 2**70)).map(str),
        "--threads": st.one_of(
            st.sampled_from([1, 2]), st.integers(-(10**6), 0), st.integers(257, 10**9)
        ).map(str),
        "--device": st.sampled_from(["cpu", "cuda", "cuda:7", "mps", "tpu", ""]),
        "--normals": st.just(""),
        "--half": st.just(""),
    },
)
BOUNDS = st.lists(
    st.one_of(
        st.floats(-2, 2),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([1e12, -1e12, 1e13, 1e38, -1e38, 0.0]),
    ),
    min_size=6,
    max_size=6,
)


@settings(FUZZ, max_examples=50)
@given(st.sampled_from(["chair_points.ply", "chair_voxels.npy"]), OPTIONS, st.none() | BOUNDS)
def test_random_options(
    folder: Path, engine_weights: Path, name: str, options: dict, bounds: list | None
) -> None:
    args = []
    for key, value in options.items():
        args += [key] if value == "" and key in ("--normals", "--half") else [key, value]
    if bounds is not None:
        args += ["--bounds", *map(_number, bounds)]
    reconstruct(EXAMPLES / name, engine_weights, *args)


# ---------------------------------------------------------------- real processes
# Linux counts a new process's peak memory from the process that forked it (here pytest, a few
# hundred MB), so the command runs under this small launcher, which reports its child's own peak
MEASURING_LAUNCHER = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.executable, [sys.executable, "-m", "backend", *sys.argv[1:]])
_, status, usage = os.wait4(pid, 0)
print(usage.ru_maxrss * 1024)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_measured(args: list[str], timeout: float = 300) -> tuple[int, str, int]:
    """``python -m backend ARGS`` as a process: (status, stderr, peak resident memory in bytes)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", MEASURING_LAUNCHER, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"hung for {timeout} s: {args}") from None
    return proc.returncode, err, int(out.split()[-1])


def _write_png(path: Path, width: int, height: int) -> None:
    """A picture of ``width`` x ``height``: a dark block on white (it compresses to a few KB)."""
    image = np.full((height, width, 3), 255, np.uint8)
    image[height // 5 : 4 * height // 5, width // 4 : 3 * width // 4] = [120, 60, 20]
    Image.fromarray(image).save(path, compress_level=1)


def _lying_model(weights: Path, path: Path) -> None:
    data = (weights / "points.safetensors").read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + length].replace(b'\\"hidden\\": 16', b'\\"hidden\\": 4000000')
    assert header != data[8 : 8 + length]
    path.write_bytes(len(header).to_bytes(8, "little") + header + data[8 + length :])


def _extreme_cases(folder: Path, weights: Path) -> list[tuple[str, list[str], int, bool]]:
    """(name, arguments after the input, the status expected, whether to run it as a process)."""
    folder.mkdir(exist_ok=True)
    _write_png(folder / "largest.png", MAX_IMAGE_SIDE, MAX_IMAGE_SIDE)
    (folder / "huge.png").write_bytes(_png_with_size((folder / "largest.png").read_bytes(), 100_000, 100_000))
    (folder / "empty.npy").write_bytes(b"")
    lying = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        lying, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 3)}
    )
    (folder / "lying.npy").write_bytes(lying.getvalue() + _points().tobytes())
    (folder / "huge.binvox").write_bytes(_binvox().replace(b"dim 16 16 16", b"dim 512 512 512"))
    points = _points().astype(np.float64)
    np.save(folder / "far.npy", points * 1e30)
    np.save(folder / "offset.npy", points + 1e11)
    _lying_model(weights, folder / "lying.safetensors")
    (folder / "a folder.ply").mkdir()
    chair, voxels = str(EXAMPLES / "chair_points.ply"), str(EXAMPLES / "chair_voxels.npy")
    model = str(folder / "lying.safetensors")
    return [
        ("largest image", [str(folder / "largest.png")], 0, True),
        ("image declaring 10^10 pixels", [str(folder / "huge.png")], 2, True),
        ("npy declaring 10^12 points", [str(folder / "lying.npy")], 2, True),
        ("model metadata naming hidden = 4,000,000", [chair, "--model", model], 2, True),
        (
            "bounds of 10^38",
            [voxels, "--bounds", "-1e38", "-1e38", "-1e38", "1e38", "1e38", "1e38"],
            2,
            False,
        ),
        ("an existing folder as the output", [chair, "-o", str(folder / "a folder.ply")], 2, False),
        ("empty .npy", [str(folder / "empty.npy")], 2, False),
        ("binvox declaring 512^3 voxels", [str(folder / "huge.binvox")], 2, False),
        ("coordinates of 10^30", [str(folder / "far.npy")], 2, False),
        ("a small cloud 10^11 from the origin", [str(folder / "offset.npy")], 2, False),
        (
            "negative bounds, exponents",
            [voxels, "--bounds", "-1e3", "-2e3", "-1e3", "1e3", "0", "1e3"],
            0,
            False,
        ),
        ("bounds with one value missing", [voxels, "--bounds", "0", "0", "0", "1", "1"], 2, False),
        ("refinement of 10^8 steps", [chair, "--refine", "100000000"], 2, False),
    ]


def _command(name: str, args: list[str], folder: Path, weights: Path) -> tuple[list[str], Path]:
    out = folder / (re.sub(r"\W+", "_", name) + ".ply")
    if "-o" in args:  # the case names its own output
        out = Path(args[args.index("-o") + 1])
        args = args[: args.index("-o")]
    command = ["reconstruct", *args[:1], "-o", str(out), *args[1:]]
    return [*command, "--weights-dir", str(weights), "--resolution", "32", "--device", "cpu"], out


def _check_case(name: str, expected: int, status: int, stderr: str, out: Path) -> None:
    assert status == expected, (name, stderr)
    if out.is_dir():  # the folder given as the output is left as it was
        assert status == 2 and not any(out.iterdir())
        assert "Traceback" not in stderr and stderr.count("error:") == 1, stderr
        OUTCOMES["exit 2, one error line"] += 1
    else:
        check_ending(status, stderr, out)


def test_end_to_end_in_real_processes(folder: Path, engine_weights: Path) -> None:
    cases = [c for c in _extreme_cases(folder / "extreme", engine_weights) if c[3]]

    def run(case: tuple[str, list[str], int, bool]) -> tuple[str, int, int, str, int, Path]:
        name, args, expected, _ = case
        command, out = _command(name, args, folder / "extreme", engine_weights)
        return (name, expected, *run_measured(command), out)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, cases))
    peaks = {}
    for name, expected, status, stderr, peak, out in results:
        _check_case(name, expected, status, stderr, out)
        assert peak < PEAK_MEMORY_BYTES, (name, peak)
        peaks[name] = peak
    print("\npeak memory of each process (MiB):", {k: v // 2**20 for k, v in peaks.items()})


def test_extreme_cases_in_process(folder: Path, engine_weights: Path) -> None:
    for name, args, expected, _ in _extreme_cases(folder / "extreme-in-process", engine_weights):
        command, out = _command(name, args, folder / "extreme-in-process", engine_weights)
        _check_case(name, expected, *run_in_process(command), out)
