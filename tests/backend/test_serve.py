"""``python -m backend serve`` driven through real pipes, with the real engine and tiny models.

The backend is started exactly as the add-on starts it (``backend_command`` and
``backend_environment``), and spoken to with the client in ``backend.wire``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from backend import wire
from backend.allocator import ALLOCATOR_ENV, OPT_OUT
from backend.engine.precision import half_dtype
from backend.wire import BackendError, BackendProcess, FrameReader, Message
from occupancy_addon.backend_process import backend_command, backend_environment

REPO = Path(__file__).resolve().parents[2]
MAX_PAYLOAD_MB = 2.0


@pytest.fixture(scope="session")
def weights_dir(engine_weights: Path) -> Path:
    """Tiny randomised models of every kind (see conftest.py): points, voxels, image, prior."""
    return engine_weights


def serve_argv(weights: Path, *extra: str) -> list[str]:
    return backend_command(
        Path(sys.executable), ["serve", "--weights-dir", str(weights), "--device", "cpu", *extra]
    )


def serve_env() -> dict[str, str]:
    return backend_environment(REPO, os.environ)


def start(weights: Path, *extra: str) -> BackendProcess:
    client = BackendProcess(serve_argv(weights, *extra), cwd=REPO, env=serve_env(), client_name="tests")
    client.wait_ready(60)
    return client


@pytest.fixture(scope="module")
def backend(weights_dir: Path) -> Iterator[BackendProcess]:
    client = start(weights_dir, "--max-payload-mb", str(MAX_PAYLOAD_MB), "--cache-mb", "64")
    yield client
    assert client.close() == 0


def points(n: int = 300, seed: int = 0) -> np.ndarray:
    """Noisy samples of a sphere of radius 0.4."""
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return (0.4 * p / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)


def fail(pending: wire.Pending, timeout: float = 60) -> BackendError:
    with pytest.raises(BackendError) as caught:
        pending.wait(timeout)
    return caught.value


def status_bytes(pid: int, key: str) -> int:
    """A memory figure of /proc/PID/status (VmRSS, VmData, ...) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return 1024 * int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def wait_gone(process: subprocess.Popen[bytes] | int, timeout: float = 20) -> None:
    """Wait until a child exits (Popen) or any process id disappears."""
    if isinstance(process, subprocess.Popen):
        process.wait(timeout)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(process, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError(f"process {process} still runs after {timeout} s")


class RawPipe:
    """The serve process on plain pipes, for conversations the client would never hold."""

    def __init__(self, weights: Path, *extra: str) -> None:
        self.proc = subprocess.Popen(
            serve_argv(weights, *extra),
            cwd=REPO,
            env=serve_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.reader = FrameReader(self.proc.stdout, wire.BACKEND_MESSAGES)

    def send(self, data: bytes | Message) -> None:
        self.stdin.write(data if isinstance(data, bytes) else wire.frame_bytes(data))

    def hello(self) -> Message:
        self.send(Message("hello", None, {"protocol_version": wire.PROTOCOL_VERSION, "client": "tests"}))
        return self.read("ready")

    def read(self, kind: str | None = None) -> Message:
        while True:
            message = self.reader.read()
            assert message is not None, "backend closed its output"
            if message.type != "progress" and (kind is None or message.type == kind):
                return message

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        """Close the input, wait for the exit: (status, stderr)."""
        if not self.stdin.closed:
            self.stdin.close()
        self.proc.wait(timeout)  # its log is short: the stderr pipe cannot fill up and block it
        assert self.proc.stderr is not None
        return self.proc.returncode, self.proc.stderr.read().decode()


# ---------------------------------------------------------------------------------------------------------
# Happy path


def test_ready_lists_the_models_with_their_kinds(backend: BackendProcess) -> None:
    ready = backend.wait_ready()
    assert ready.fields["protocol_version"] == wire.PROTOCOL_VERSION
    assert ready.fields["pid"] == backend.pid
    assert ready.fields["device"] == "cpu"
    assert ready.fields["max_payload_bytes"] == int(MAX_PAYLOAD_MB * 2**20)
    models = {m["name"]: (m["kind"], m["tau"]) for m in ready.fields["models"]}
    assert models == {
        "points": ("pointcloud", 0.5),
        "voxels": ("voxels", 0.5),
        "image": ("image", 0.5),
        "prior": ("unconditional", 0.5),
    }


def test_ready_names_the_cloud_sizes_a_model_is_automatic_for() -> None:
    from backend.engine.types import ModelInfo
    from backend.serving.server import _model_entry

    sparse = ModelInfo("sparse", "pointcloud", 0.3, "sparse.safetensors", (0, 500))
    entry = {"name": "sparse", "kind": "pointcloud", "tau": 0.3, "automatic_points": [0, 500]}
    assert _model_entry(sparse) == entry
    general = ModelInfo("points", "pointcloud", 0.4, "points.safetensors")
    assert wire.automatic_points(_model_entry(general)) is None  # what the add-on reads from it
    assert wire.automatic_points(_model_entry(sparse)) == (0, 500)


def test_reconstruct_streams_progress_then_extract_and_release(backend: BackendProcess) -> None:
    stages: list[tuple[str, float]] = []
    pending = backend.reconstruct(
        kind="pointcloud",
        points=points(),
        options={"resolution": 32, "normals": True},
        on_progress=lambda s, f: stages.append((s, f)),
    )
    result = pending.wait(60)
    assert result.type == "result" and result.id == pending.id
    vertices, faces = result.arrays["vertices"], result.arrays["faces"]
    assert vertices.dtype == np.float32 and vertices.shape[1] == 3
    assert faces.dtype == np.int32 and faces.shape[1] == 3
    assert len(faces) > 0 and faces.min() >= 0 and faces.max() < len(vertices)
    assert result.arrays["normals"].shape == vertices.shape
    assert result.fields["tau"] == 0.5
    assert {"evaluate"} <= {stage for stage, _ in stages}
    assert all(0.0 <= f <= 1.0 for _, f in stages)
    field_id = result.fields["field_id"]
    assert isinstance(field_id, str)

    other = backend.extract(field_id, 0.3).wait(60)
    assert other.fields["tau"] == pytest.approx(0.3) and other.fields["field_id"] == field_id

    nothing = backend.extract(field_id, 0.999).wait(60)  # no surface that high: an empty mesh
    assert nothing.arrays["faces"].shape == (0, 3) and "empty mesh" in nothing.fields["warnings"][0]

    assert backend.release(field_id).wait(10).fields["field_id"] == field_id
    assert fail(backend.extract(field_id, 0.4)).code == wire.UNKNOWN_FIELD


def test_voxels_with_bounds_an_image_and_unconditional_sampling(backend: BackendProcess) -> None:
    grid = np.zeros((32, 32, 32), bool)
    grid[8:24, 8:24, 8:24] = True
    bounds = np.array([[-1, -1, -1], [1, 1, 1]], np.float32)
    voxels = backend.reconstruct(model="voxels", voxels=grid, bounds=bounds, options={"resolution": 32})
    assert voxels.wait(60).arrays["vertices"].dtype == np.float32
    image = np.full((32, 32, 4), 255, np.uint8)
    image[8:24, 8:24, :3] = 40
    from_image = backend.reconstruct(kind="image", image=image, options={"resolution": 32}).wait(60)
    assert from_image.arrays["vertices"].shape[1] == 3
    sampled = backend.sample(seed=3, options={"resolution": 32}).wait(60)
    assert sampled.arrays["faces"].dtype == np.int32 and sampled.fields["field_id"] is not None


def test_echo_returns_data_and_arrays_unchanged(backend: BackendProcess) -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    reply = backend.echo({"k": [1, 2]}, {"a": a}).wait(10)
    assert reply.fields["data"] == {"k": [1, 2]}
    np.testing.assert_array_equal(reply.arrays["a"], a)


# ---------------------------------------------------------------------------------------------------------
# Errors answered for one request; the process keeps serving


@pytest.mark.parametrize(
    ("request_args", "code", "text"),
    [
        ({"model": "nope", "points": points()}, wire.UNKNOWN_MODEL, "no model named 'nope'"),
        ({"kind": "sketch", "points": points()}, wire.UNKNOWN_MODEL, "no sketch model"),
        (
            {"model": "points", "kind": "voxels", "points": points()},
            wire.BAD_INPUT,
            "takes pointcloud",
        ),
        (
            {"kind": "pointcloud", "voxels": np.zeros((4, 4, 4), bool)},
            wire.BAD_INPUT,
            "needs the array 'points'",
        ),
        ({"points": points()}, wire.BAD_MESSAGE, "give a 'model' name or a 'kind'"),
        (
            {"kind": "pointcloud", "points": points(), "options": {"colour": 1}},
            wire.BAD_MESSAGE,
            "colour",
        ),
        (
            {"kind": "pointcloud", "points": points(), "options": {"resolution": "high"}},
            wire.BAD_MESSAGE,
            "option 'resolution' must be int",
        ),
        (
            {"kind": "pointcloud", "points": np.full((10, 3), np.nan, np.float32)},
            wire.BAD_INPUT,
            "",
        ),
        (
            {"kind": "pointcloud", "points": points(), "options": {"resolution": 33}},
            wire.BAD_INPUT,
            "resolution",
        ),
        (
            {"kind": "pointcloud", "points": points(), "options": {"tau": 1.5}},
            wire.BAD_INPUT,
            "tau must lie strictly between 0 and 1",
        ),
        (
            {"kind": "pointcloud", "points": points(), "options": {"seed": -1}},
            wire.BAD_INPUT,
            "seed",
        ),
        (
            {"kind": "pointcloud", "points": np.tile(np.float32([1, 2, 3]), (50, 1))},
            wire.BAD_INPUT,
            "one spot",
        ),
        (
            {"kind": "voxels", "voxels": np.zeros((32, 32, 32), bool)},
            wire.BAD_INPUT,
            "the voxel grid is empty",
        ),
        (
            {"kind": "image", "image": np.full((8, 8, 3), 2.0, np.float32)},
            wire.BAD_INPUT,
            "[0, 1]",
        ),
    ],
)
def test_bad_requests_are_answered_and_serving_goes_on(
    backend: BackendProcess, request_args: dict[str, Any], code: str, text: str
) -> None:
    error = fail(backend.reconstruct(**request_args))
    assert error.code == code and text in error.message
    assert backend.echo("still here").wait(10).fields["data"] == "still here"


def test_malformed_frames_are_answered_and_serving_goes_on(backend: BackendProcess) -> None:
    def frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
        text = json.dumps(header).encode()
        return (
            struct.pack("<4sHHIQ", wire.MAGIC, wire.PROTOCOL_VERSION, 0, len(text), len(payload))
            + text
            + payload
        )

    cases = [
        (
            frame({"type": "reconstruct", "id": 900, "kind": "pointcloud"}, b"")[:-2] + b"!}",
            wire.BAD_MESSAGE,
        ),
        (frame({"type": "teleport", "id": 901}), wire.UNKNOWN_MESSAGE),
        (
            frame({"type": "extract", "id": 902, "field_id": "x", "tau": 0.5, "speed": 1}),
            wire.BAD_MESSAGE,
        ),
        (
            frame(
                {
                    "type": "reconstruct",
                    "id": 903,
                    "arrays": [{"name": "points", "dtype": "int32", "shape": [4, 3]}],
                },
                bytes(48),
            ),
            wire.BAD_ARRAY,
        ),
        (
            frame(
                {
                    "type": "reconstruct",
                    "id": 904,
                    "arrays": [{"name": "points", "dtype": "float32", "shape": [4, 2]}],
                },
                bytes(32),
            ),
            wire.BAD_ARRAY,
        ),
        (
            frame(
                {"type": "echo", "id": 905, "arrays": [{"name": "a", "dtype": "float32", "shape": [100]}]},
                bytes(40),
            ),
            wire.BAD_ARRAY,
        ),
    ]
    before = len(backend.errors)
    for data, _ in cases:
        backend.send_raw(data)
    assert backend.echo("after").wait(30).fields["data"] == "after"
    got = backend.errors[before:]
    assert [e.code for e in got] == [code for _, code in cases]
    assert [e.request_id for e in got[1:]] == [901, 902, 903, 904, 905]


def test_a_reused_id_and_an_unknown_field_are_errors(backend: BackendProcess) -> None:
    assert fail(backend.extract("no-such-field", 0.5)).code == wire.UNKNOWN_FIELD
    assert fail(backend.release("no-such-field")).code == wire.UNKNOWN_FIELD
    slow = backend.reconstruct(kind="pointcloud", points=points(), options={"resolution": 512})
    twin = Message("echo", slow.id, {"data": None})
    backend.send_raw(wire.frame_bytes(twin))
    backend.cancel(slow.id)
    assert fail(slow).code == wire.CANCELLED
    assert (
        backend.errors[-1].code == wire.BAD_MESSAGE and f"reuses id {slow.id}" in backend.errors[-1].message
    )


# ---------------------------------------------------------------------------------------------------------
# Cancel and supersede


def test_cancel_during_mise_stops_the_work(backend: BackendProcess) -> None:
    evaluating = []
    pending = backend.reconstruct(
        kind="pointcloud",
        points=points(),
        options={"resolution": 512},
        on_progress=lambda stage, f: evaluating.append(stage == "evaluate"),
    )
    deadline = time.monotonic() + 60
    while not any(evaluating) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(evaluating), "no evaluate progress arrived"
    pending.cancel()
    error = fail(pending, timeout=30)
    assert error.code == wire.CANCELLED
    assert backend.echo(1).wait(10).fields["data"] == 1


def test_a_newer_extract_supersedes_waiting_ones(backend: BackendProcess) -> None:
    first = backend.reconstruct(kind="pointcloud", points=points(), options={"resolution": 32}).wait(60)
    field = first.fields["field_id"]
    blocker = backend.reconstruct(kind="pointcloud", points=points(seed=1), options={"resolution": 512})
    extracts = [backend.extract(field, tau) for tau in (0.2, 0.3, 0.4, 0.6)]  # a dragged slider
    other_field = backend.extract("another-field", 0.5)  # another field's extract is not superseded
    queued_echo = backend.echo("never runs")
    queued_echo.cancel()  # cancelling a waiting request answers it at once
    blocker.cancel()
    assert fail(blocker).code == wire.CANCELLED
    for older, newer in itertools.pairwise(extracts):
        error = fail(older)
        assert error.code == wire.SUPERSEDED and f"request {newer.id} " in error.message
    assert extracts[-1].wait(60).fields["tau"] == pytest.approx(0.6)
    assert fail(other_field).code == wire.UNKNOWN_FIELD
    assert fail(queued_echo).code == wire.CANCELLED and "before it started" in fail(queued_echo).message


# ---------------------------------------------------------------------------------------------------------
# Memory


def test_memory_stays_flat_over_100_requests(backend: BackendProcess) -> None:
    """RSS may grow while allocator pools warm up, then must stop growing.

    A leak of the 1.5 MiB each echo carries both ways would add more than 30 MiB over the
    second half; a leak of the meshes or cached fields would show as steady growth too.
    """
    payload = np.ones(3 * 2**17, np.float32)  # 1.5 MiB, under the payload limit

    def round_of_requests(i: int) -> int:
        result = backend.reconstruct(kind="pointcloud", points=points(seed=i), options={"resolution": 32})
        backend.extract(result.wait(60).fields["field_id"], 0.4).wait(60)
        assert backend.echo(None, {"a": payload}).wait(60).arrays["a"].nbytes == payload.nbytes
        backend.release(result.wait().fields["field_id"]).wait(60)
        return status_bytes(backend.pid, "VmRSS") // 1024

    for i in range(10):  # warm-up
        round_of_requests(i)
    rss = [round_of_requests(100 + i) for i in range(25)]  # 4 requests each: 100 requests
    late_growth_mib = (rss[-1] - rss[len(rss) // 2]) / 1024
    assert late_growth_mib < 8, f"RSS still grows: {[r // 1024 for r in rss]} MiB"


def test_release_of_everything_frees_cached_fields(backend: BackendProcess) -> None:
    ids = [
        backend.reconstruct(kind="pointcloud", points=points(seed=i), options={"resolution": 32}).wait(60)
        for i in range(3)
    ]
    assert backend.release(None).wait(10).fields["field_id"] is None
    for result in ids:
        assert fail(backend.extract(result.fields["field_id"], 0.5)).code == wire.UNKNOWN_FIELD


@pytest.mark.skipif(sys.platform != "linux", reason="caps the process's data memory with Linux prlimit")
def test_out_of_memory_is_reported_and_serving_goes_on(weights_dir: Path) -> None:
    """Real allocation failures, from a cap on the running process's data memory (RLIMIT_DATA).

    RLIMIT_DATA counts the private writable memory the process has mapped (VmData): unlike a cap
    on the address space, it ignores what the allocator has only reserved, so a cap a little
    above the current VmData leaves about that little room for new allocations. Plain malloc
    settings: with a large top pad the heap would already hold a gigabyte of unused room.
    """
    import resource

    plain = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV}
    env = {**backend_environment(REPO, plain), OPT_OUT: "1"}
    client = BackendProcess(serve_argv(weights_dir, "--max-payload-mb", "256"), cwd=REPO, env=env)
    try:
        client.wait_ready(60)
        client.reconstruct(kind="pointcloud", points=points(), options={"resolution": 32}).wait(60)
        # the process warms up in the background after ready: cap only once its memory has settled
        settled, before = time.monotonic() + 30, -1
        while (now := status_bytes(client.pid, "VmData")) != before and time.monotonic() < settled:
            before = now
            time.sleep(0.5)
        cap = now + 16 * 2**20  # far too little for a 512^3 grid's work
        soft, hard = resource.prlimit(client.pid, resource.RLIMIT_DATA)
        resource.prlimit(client.pid, resource.RLIMIT_DATA, (cap, hard))

        in_engine = fail(client.reconstruct(kind="pointcloud", points=points(), options={"resolution": 512}))
        assert in_engine.code == wire.OUT_OF_MEMORY and "out of memory" in in_engine.message
        in_reader = fail(client.echo(None, {"big": np.ones(2**24, np.float32)}))  # 64 MiB
        assert in_reader.code == wire.OUT_OF_MEMORY and "'big'" in in_reader.message
        assert client.echo("small").wait(30).fields["data"] == "small"

        resource.prlimit(client.pid, resource.RLIMIT_DATA, (soft, hard))
        again = client.reconstruct(kind="pointcloud", points=points(), options={"resolution": 32}).wait(60)
        assert again.arrays["faces"].dtype == np.int32
        assert client.echo(None, {"big": np.ones(2**24, np.float32)}).wait(60).arrays["big"].nbytes == 2**26
    finally:
        assert client.close() == 0


# ---------------------------------------------------------------------------------------------------------
# Lifecycle and broken streams


def test_startup_handshake_is_required_and_version_checked(weights_dir: Path) -> None:
    raw = RawPipe(weights_dir)
    raw.send(Message("echo", 1, {"data": None}))
    early = raw.read("error")
    assert early.fields["code"] == wire.HANDSHAKE_REQUIRED and early.id == 1
    raw.send(Message("hello", None, {"protocol_version": wire.PROTOCOL_VERSION + 1}))
    refused = raw.read("error")
    assert refused.fields["code"] == wire.VERSION_MISMATCH and refused.fields["fatal"] is True
    status, err = raw.finish()
    assert status == 2 and "Traceback" not in err


@pytest.mark.parametrize(
    ("data", "code", "log"),
    [
        (b"\x00" * 64, wire.BAD_FRAME, "bad frame magic"),
        (
            struct.pack("<4sHHIQ", wire.MAGIC, 99, 0, 2, 0) + b"{}",
            wire.VERSION_MISMATCH,
            "version 99",
        ),
        (struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2**30, 0), wire.BAD_FRAME, "header size"),
        (
            struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2, 2**62) + b"{}",
            wire.PAYLOAD_TOO_LARGE,
            f"payload of {2**62} bytes exceeds the limit",
        ),
        (
            struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2, int(MAX_PAYLOAD_MB * 2**20) + 8) + b"{}",
            wire.PAYLOAD_TOO_LARGE,
            "exceeds the limit of 2097152 bytes",
        ),
    ],
    ids=["bad magic", "other version", "huge header", "2^62 payload", "payload over the limit"],
)
def test_an_unreadable_stream_is_answered_then_the_process_exits(
    weights_dir: Path, data: bytes, code: str, log: str
) -> None:
    raw = RawPipe(weights_dir, "--max-payload-mb", str(MAX_PAYLOAD_MB))
    raw.send(data)  # before the handshake: the reader checks every frame from the first byte on
    error = raw.read("error")
    assert error.fields["code"] == code and error.fields["fatal"] is True
    status, err = raw.finish()
    assert status == 2 and log in err and "Traceback" not in err


def test_random_bytes_at_the_process_never_hang_it(weights_dir: Path) -> None:
    """Junk inside a sound frame is answered; junk instead of a frame ends the process cleanly."""
    rng = np.random.default_rng(7)
    raw = RawPipe(weights_dir)
    raw.hello()
    for _ in range(20):
        junk = rng.bytes(int(rng.integers(1, 300)))
        raw.send(struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, len(junk), 0) + junk)
        assert raw.read("error").fields["code"] in (
            wire.BAD_MESSAGE,
            wire.UNKNOWN_MESSAGE,
            wire.BAD_ARRAY,
        )
    raw.send(Message("echo", 5, {"data": "alive"}))
    assert raw.read("echo").fields["data"] == "alive"
    raw.send(rng.bytes(5000))
    assert raw.read("error").fields["fatal"] is True
    status, _ = raw.finish()
    assert status == 2


def test_shutdown_says_bye_and_exits_zero_with_the_log_in_its_file(weights_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    raw = RawPipe(weights_dir, "--log-file", str(log), "--half")
    assert raw.hello().fields["device"] == "cpu"
    raw.send(Message("shutdown"))
    assert raw.read().type == "bye"
    assert raw.reader.read() is None
    status, err = raw.finish()
    assert status == 0 and err == ""
    text = log.read_text()
    assert "engine ready" in text and "'tests' says hello" in text
    if half_dtype(torch.device("cpu")) is None:  # --half suits every machine: ignored where it does not pay
        assert "half precision does not pay on cpu" in text
    else:
        assert "half precision: evaluating in bfloat16 on cpu" in text


def test_a_client_that_vanishes_mid_request_does_not_wedge_the_process(weights_dir: Path) -> None:
    raw = RawPipe(weights_dir)
    raw.hello()
    raw.send(
        Message(
            "reconstruct", 1, {"kind": "pointcloud", "options": {"resolution": 256}}, {"points": points()}
        )
    )
    assert raw.reader.read() is not None  # the first progress message: work has started
    assert raw.proc.stdout is not None
    raw.proc.stdout.close()  # the next progress write hits a broken pipe; stdin stays open
    raw.proc.wait(30)
    status, err = raw.finish()
    assert status == 0 and "closed its end of the pipe" in err and "Traceback" not in err


PARENT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from backend.wire import BackendProcess
    client = BackendProcess(sys.argv[1:])
    client.wait_ready(60)
    points = np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32)
    busy = client.reconstruct(kind="pointcloud", points=points, options={"resolution": 512})
    while busy.progress is None:
        time.sleep(0.01)
    print(client.pid, flush=True)  # the backend is now inside the engine
    time.sleep(600)
    """
)


def test_the_backend_exits_when_its_parent_is_killed_mid_request(weights_dir: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, *serve_argv(weights_dir)],
        cwd=REPO,
        env=serve_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    wait_gone(child)


def test_stray_prints_cannot_reach_the_wire() -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from backend.serving.stdio import claim_stdio
        wire_in, wire_out = claim_stdio()
        print("stray print")
        os.write(1, b"stray C-level write\\n")
        assert sys.stdin.read() == ""
        wire_out.write(wire_in.read())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=serve_env(),
        input=b"frame bytes",
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"frame bytes"
    assert b"stray print" in done.stderr and b"stray C-level write" in done.stderr


def test_an_engine_that_cannot_load_is_reported_at_the_handshake(tmp_path: Path) -> None:
    """Exit status 1: the process could not do its job (the client's ``shutdown`` does not change that)."""
    client = BackendProcess(serve_argv(tmp_path / "missing"), cwd=REPO, env=serve_env())
    with pytest.raises(BackendError) as caught:
        client.wait_ready(60)
    assert caught.value.code == wire.ENGINE_UNAVAILABLE and "missing" in caught.value.message
    assert client.close() == 1
    raw = RawPipe(tmp_path / "missing")  # a client that only closes its end gets the same status
    raw.send(Message("hello", None, {"protocol_version": wire.PROTOCOL_VERSION}))
    assert raw.read("error").fields["code"] == wire.ENGINE_UNAVAILABLE
    status, err = raw.finish()
    assert status == 1 and "weights folder not found" in err


@contextlib.contextmanager
def in_process_server(load_engine: Any) -> Iterator[Callable[[Message], Message]]:
    """The real server on real pipes, in a thread of this process, past its handshake.

    Yields ``ask``, which sends a request and returns its reply (progress skipped). On leaving,
    the client's end closes, and the server must end in order.
    """
    from backend.serving.server import EXIT_OK, Server

    to_server, from_client = os.pipe()
    to_client, from_server = os.pipe()
    wire_in, wire_out = open(to_server, "rb", buffering=0), open(from_server, "wb", buffering=0)  # noqa: SIM115
    server = Server(load_engine, wire_in, wire_out)
    status: list[int] = []
    thread = threading.Thread(target=lambda: status.append(server.serve()), daemon=True)
    thread.start()
    with open(from_client, "wb", buffering=0) as out, open(to_client, "rb", buffering=0) as replies:
        reader = FrameReader(replies, wire.BACKEND_MESSAGES)

        def ask(message: Message) -> Message:
            out.write(wire.frame_bytes(message))
            while (reply := reader.read()) is not None and reply.type == "progress":
                pass
            assert reply is not None
            return reply

        assert ask(Message("hello", None, {"protocol_version": wire.PROTOCOL_VERSION})).type == "ready"
        yield ask
    thread.join(30)
    wire_in.close()
    wire_out.close()
    assert status == [EXIT_OK]


def test_an_exception_inside_the_engine_is_answered_and_serving_goes_on(weights_dir: Path) -> None:
    """The real server and engine on real pipes, in this process, with one fault put into the engine.

    An unexpected exception cannot be provoked from outside without a bug to exploit, so the
    engine's progress report raises one in the middle of MISE.
    """
    from backend.engine.reconstructor import Reconstructor

    class FaultyEngine(Reconstructor):
        def reconstruct(self, model, observation, options, progress=None, cancel=None):  # type: ignore[no-untyped-def]
            def broken(stage: str, fraction: float) -> None:
                if stage == "evaluate" and fraction > 0:
                    raise ZeroDivisionError("a fault inside the engine")

            return super().reconstruct(model, observation, options, broken, cancel)

    with in_process_server(lambda: FaultyEngine(device="cpu", weights_dir=weights_dir)) as ask:
        request = Message("reconstruct", 7, {"kind": "pointcloud", "options": {}}, {"points": points()})
        error = ask(request)
        assert error.type == "error" and error.id == 7
        assert error.fields["code"] == wire.INTERNAL
        assert error.fields["message"] == "ZeroDivisionError: a fault inside the engine"
        assert ask(Message("echo", 8, {"data": "still here"})).fields["data"] == "still here"


def test_only_a_missing_field_is_an_unknown_field() -> None:
    """The server knows a missing cached field by its error type, not by a KeyError's arguments."""
    from backend.engine.types import FieldGoneError

    class StubEngine:
        device = "cpu"

        def models(self) -> list[Any]:
            return []

        def warm_up(self) -> None:
            pass

        def extract(self, field_id: str, tau: float, progress: Any = None, cancel: Any = None) -> Any:
            raise FieldGoneError(field_id) if field_id == "gone" else KeyError(field_id)

        def release(self, field_id: str | None = None) -> None:
            raise FieldGoneError(field_id)

    with in_process_server(StubEngine) as ask:
        gone = ask(Message("extract", 1, {"field_id": "gone", "tau": 0.5}))
        assert (gone.type, gone.id, gone.fields["code"]) == ("error", 1, wire.UNKNOWN_FIELD)
        assert "no cached field 'gone'" in gone.fields["message"]
        other = ask(Message("extract", 2, {"field_id": "other", "tau": 0.5}))
        assert (other.type, other.id, other.fields["code"]) == ("error", 2, wire.INTERNAL)
        assert other.fields["message"] == "KeyError: 'other'"
        released = ask(Message("release", 3, {"field_id": "gone"}))
        assert (released.id, released.fields["code"]) == (3, wire.UNKNOWN_FIELD)


# ---------------------------------------------------------------------------------------------------------
# A backend that hangs or dies: the client never waits for ever

SILENT_BACKEND = textwrap.dedent(
    """
    import sys
    from backend import wire
    from backend.wire import FrameReader, Message
    reader = FrameReader(sys.stdin.buffer, wire.CLIENT_MESSAGES)
    reader.read()  # hello
    ready = {"protocol_version": 1, "backend_version": "0", "device": "cpu", "models": [], "pid": 0,
             "max_payload_bytes": 1 << 30}
    sys.stdout.buffer.write(wire.frame_bytes(Message("ready", None, ready)))
    sys.stdout.buffer.flush()
    while reader.read() is not None:  # reads every request, answers none
        pass
    """
)


def test_a_backend_that_reads_but_never_answers_is_given_up() -> None:
    client = BackendProcess([sys.executable, "-c", SILENT_BACKEND], cwd=REPO, env=serve_env())
    client.wait_ready(60)
    pending = client.echo("anyone there?")
    with pytest.raises(BackendError) as caught:
        pending.wait(30, silence=1.0)
    error = caught.value
    assert error.code == wire.NO_ANSWER and error.fatal and "sent nothing for 1 s" in error.message
    assert not client.alive()
    with pytest.raises(BackendError) as again:  # the conversation is over: later requests say why
        client.echo(None)
    assert again.value is error
    assert client.close() == -signal.SIGKILL


def test_a_stopped_backend_blocks_neither_sending_nor_waiting(weights_dir: Path) -> None:
    """SIGSTOP: the process neither reads nor writes. A request larger than the pipe's buffer must
    not block the caller, and waiting ends once the backend has been silent for the limit."""
    client = start(weights_dir)
    os.kill(client.pid, signal.SIGSTOP)
    try:
        sent: list[wire.Pending] = []
        sender = threading.Thread(target=lambda: sent.append(client.echo(None, {"a": np.ones(2**20)})))
        sender.start()
        sender.join(30)
        assert sent, "sending to a stopped backend blocked the caller"
        with pytest.raises(BackendError) as caught:
            sent[0].wait(60, silence=1.0)
        assert caught.value.code == wire.NO_ANSWER
    finally:
        with contextlib.suppress(ProcessLookupError):  # it is normally killed and reaped by now
            os.kill(client.pid, signal.SIGCONT)
    assert client.close() == -signal.SIGKILL


def test_a_backend_killed_mid_request_fails_it_at_once(weights_dir: Path) -> None:
    client = start(weights_dir)
    busy = client.reconstruct(kind="pointcloud", points=points(), options={"resolution": 512})
    while busy.progress is None:
        time.sleep(0.01)
    os.kill(client.pid, signal.SIGKILL)
    error = fail(busy, 30)  # no silence limit needed: the closed pipe says it
    assert error.code == wire.BACKEND_EXITED and error.fatal and "status -9" in error.message
    assert client.close() == -signal.SIGKILL


def test_a_request_over_the_payload_limit_is_refused_before_it_is_sent(backend: BackendProcess) -> None:
    too_big = np.ones(int(MAX_PAYLOAD_MB * 2**20) // 4 + 1, np.float32)
    with pytest.raises(BackendError) as caught:
        backend.echo(None, {"a": too_big})
    assert caught.value.code == wire.PAYLOAD_TOO_LARGE and not caught.value.fatal
    assert "exceed the backend's limit of 2,097,152 bytes" in caught.value.message
    assert backend.echo("still here").wait(10).fields["data"] == "still here"


def test_an_oversized_payload_sent_before_ready_ends_the_conversation(weights_dir: Path) -> None:
    """Before ``ready`` the client can only assume serve's default limit; a backend started with a
    smaller one answers with a fatal error and exits 2, which fails the request."""
    client = BackendProcess(serve_argv(weights_dir, "--max-payload-mb", "0.01"), cwd=REPO, env=serve_env())
    error = fail(client.echo(None, {"a": np.ones(10_000)}), 60)
    assert error.code == wire.PAYLOAD_TOO_LARGE and error.fatal
    assert "exceeds the limit of 10485 bytes" in error.message
    assert client.close() == 2
    assert "Traceback" not in client.stderr_tail(200)
