"""Hostile input and a misbehaving backend, fed to the operators in real Blender.

Each trouble ends in a clear report (an error, which a script receives as a RuntimeError, and the
operator cancelled) or, where the input can still be used, a result with a warning; the scene is
left exactly as it was otherwise.
"""

from __future__ import annotations

import os
import re
import signal
import struct
import sys
import textwrap
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest

from tests.blender.scene_checks import fails

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def points_mesh(name: str, points: np.ndarray) -> bpy.types.Object:
    """A mesh object whose vertices are ``points`` (filled with foreach_set: fast for millions)."""
    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(len(points))
    mesh.vertices.foreach_set("co", np.ascontiguousarray(points, np.float32).reshape(-1))
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def chair_points() -> np.ndarray:
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    chair = bpy.context.active_object
    points = np.empty(len(chair.data.vertices) * 3, np.float32)
    chair.data.vertices.foreach_get("co", points)
    bpy.data.objects.remove(chair)
    return points.reshape(-1, 3)


def image_empty(image: bpy.types.Image) -> bpy.types.Object:
    empty = bpy.data.objects.new("Reference", None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    return empty


def png_declaring(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares ``width`` x ``height`` pixels but whose data holds one row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = zlib.compress(b"\x00" + bytes(3 * width))
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", row) + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------------------------------------
# Input


def test_a_corrupt_image_and_one_whose_header_lies(addon: ModuleType, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not a picture" * 50)
    image_empty(bpy.data.images.load(str(corrupt)))
    fails(r"The image 'corrupt.png' has no pixels: its file is missing or cannot be read \(.*corrupt.png\)")
    lying = png_declaring(tmp_path / "lying.png", 10_000, 10_000)  # 10^8 pixels in 500 bytes
    bpy.context.active_object.data = bpy.data.images.load(str(lying))
    fails(r"The image 'lying.png' has no pixels: its file is missing or cannot be read")
    assert addon.runtime.status.error and not addon.runtime.status.crashed


def test_a_huge_image_is_refused_before_its_pixels_are_copied(addon: ModuleType) -> None:
    limit = addon.readers.image.MAX_IMAGE_PIXELS
    huge = bpy.data.images.new("Huge", 6_000, 6_000)  # 36 megapixels: 576 MB as float32 RGBA
    assert huge.size[0] * huge.size[1] > limit
    image_empty(huge)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        text = fails(
            r"The image 'Huge' is 6,000 \u00d7 6,000 pixels; the add-on reads at most 33.6 megapixels"
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "scale it down first" in text
    assert peak < 16 * 2**20  # nothing of the picture was copied
    panel = addon.scene_inputs  # the panel says so before anyone presses Reconstruct
    with pytest.raises(addon.errors.UserError, match="reads at most"):
        panel.detect(bpy.context, bpy.context.active_object, drawing=True)


def test_points_with_nan_and_infinite_coordinates(
    addon: ModuleType, capfd: pytest.CaptureFixture[str]
) -> None:
    points = chair_points()
    points[[3, 50, 700]] = [np.nan, np.inf, -np.inf]
    scan = points_mesh("Scan", points)
    capfd.readouterr()
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    assert "Left out 3 of 3,000 points with NaN or infinite coordinates" in capfd.readouterr().out
    result = bpy.context.active_object
    assert result.name == "Scan.occupancy" and len(result.data.vertices)
    bpy.data.objects.remove(result)
    bpy.context.view_layer.objects.active = scan
    scan.data.vertices.foreach_set("co", np.full(points.size, np.nan, np.float32))
    fails(r"'Scan' has no point with finite coordinates: all 3,000 are NaN or infinite")


def test_a_mesh_with_nan_vertices_as_voxels(addon: ModuleType, capfd: pytest.CaptureFixture[str]) -> None:
    bpy.ops.mesh.primitive_uv_sphere_add()
    sphere = bpy.context.active_object
    sphere.data.vertices[0].co = (np.nan, 0.0, 0.0)
    capfd.readouterr()
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    # the triangles around the vertex (the sphere's 512 faces are 960 triangles)
    assert re.search(r"Left out \d+ of 960 faces with NaN or infinite vertices", capfd.readouterr().out)
    bpy.data.objects.remove(bpy.context.active_object)
    bpy.context.view_layer.objects.active = sphere
    sphere.data.vertices.foreach_set("co", np.full(3 * len(sphere.data.vertices), np.inf, np.float32))
    fails(r"'Sphere' has no face whose vertices all have finite coordinates: nothing to voxelise")


def test_ten_million_vertices(addon: ModuleType) -> None:
    """Within what the backend takes (20 million points): read, sent and reconstructed, with the
    add-on's own memory at about one copy of the coordinates (120 MB)."""
    rng = np.random.default_rng(0)
    points = rng.normal(size=(10_000_000, 3)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    points_mesh("Dense", points)
    del points
    tracemalloc.start()
    try:
        assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert bpy.context.active_object.name == "Dense.occupancy"
    assert peak < 1.5 * 120e6


def test_a_cloud_beyond_the_backends_limit_is_refused_before_it_is_read(
    addon: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The add-on knows the backend's point limit (one constant on the wire) and refuses a bigger
    cloud from its vertex count, before copying a single coordinate. The limit is lowered here:
    a real 20-million-vertex mesh would cost the test a minute and 2 GB for the same branch."""
    import backend.limits

    reader = sys.modules[f"{addon.__name__}.readers.pointcloud"]
    assert reader.MAX_POINTS == backend.limits.MAX_POINTS == 20_000_000
    monkeypatch.setattr(reader, "MAX_POINTS", 1000)
    points_mesh("Too Dense", np.random.default_rng(0).normal(size=(1001, 3)))
    fails(r"'Too Dense' has 1,001 points, more than the 1,000 the backend takes: thin them out first")


def test_a_volume_without_grids(addon: ModuleType) -> None:
    volume = bpy.data.objects.new("Empty Volume", bpy.data.volumes.new("Empty Volume"))
    bpy.context.scene.collection.objects.link(volume)
    bpy.context.view_layer.objects.active = volume
    fails(r"The volume 'Empty Volume' has no grids to voxelise: load a VDB file into it")
    volume.data.filepath = "//nowhere.vdb"
    fails(r"The volume 'Empty Volume' has no grids to voxelise \(nowhere.vdb not found\)")


# ---------------------------------------------------------------------------------------------------------
# The backend


def backend_wrapper(tmp_path: Path, command: str) -> str:
    """An executable that stands in for the backend Python: ``command`` gets the add-on's arguments
    (``-m backend serve ...``) as ``"$@"``."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{command}\n")
    script.chmod(0o755)
    return str(script)


def test_a_backend_that_stops_answering_mid_request(
    addon: ModuleType, monkeypatch: pytest.MonkeyPatch, run_and_interrupt: Callable[..., object]
) -> None:
    """SIGSTOP, as a stuck process: the blocking run ends after the silence limit (short here)."""
    points_mesh("Scan", chair_points())
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}  # the backend is up
    bpy.context.view_layer.objects.active = bpy.data.objects["Scan"]
    monkeypatch.setitem(addon.service.SILENCE_LIMIT_S, "reconstruct", 1.0)
    process = addon.runtime.service.process
    stopped: list[int] = []

    def stop(task: object) -> None:
        stopped.append(process.pid)
        os.kill(process.pid, signal.SIGSTOP)

    with pytest.raises(RuntimeError) as failure:
        run_and_interrupt(lambda: bpy.ops.occupancy.reconstruct(resolution=512), stop)
    text = str(failure.value)
    assert (
        stopped and "The backend did not answer (no answer from the backend: it sent nothing for 1 s" in text
    )
    assert "so it was stopped. Nothing in the scene was changed. Press Restart Backend" in text
    assert addon.runtime.status.crashed and not process.alive()
    assert sorted(o.name for o in bpy.data.objects) == ["Scan", "Scan.occupancy"]
    assert bpy.ops.occupancy.restart_backend() == {"FINISHED"}
    bpy.context.view_layer.objects.active = bpy.data.objects["Scan"]
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}


def test_a_backend_that_ignores_cancel_is_stopped(
    addon: ModuleType, monkeypatch: pytest.MonkeyPatch, run_and_interrupt: Callable[..., object]
) -> None:
    """Cancel ends the run even when the backend cannot act on it; the process is stopped (not a
    crash: nothing to restart by hand) and the next run starts a fresh one."""
    scan = points_mesh("Scan", chair_points())
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    bpy.context.view_layer.objects.active = scan
    monkeypatch.setattr(addon.service, "CANCEL_GRACE_S", 1.0)
    process = addon.runtime.service.process

    def stop_then_cancel(task: object) -> None:
        os.kill(process.pid, signal.SIGSTOP)
        addon.runtime.request_cancel()

    outcome = run_and_interrupt(lambda: bpy.ops.occupancy.reconstruct(resolution=512), stop_then_cancel)
    assert outcome == {"CANCELLED"} and not process.alive()
    assert not addon.runtime.status.crashed and not addon.runtime.status.error
    assert sorted(o.name for o in bpy.data.objects) == ["Scan", "Scan.occupancy"]
    bpy.context.view_layer.objects.active = scan
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    assert addon.runtime.service.process.pid != process.pid


def test_a_protocol_error_offers_restart(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real backend with a tiny payload limit: the first request goes out before ``ready`` says
    the limit, so the backend answers with a fatal error and exits."""
    points_mesh("Scan", chair_points())
    python = backend_wrapper(tmp_path, f'exec "{sys.executable}" "$@" --max-payload-mb 0.001')
    monkeypatch.setenv("OCC_BACKEND_PYTHON", python)
    text = fails(
        r"Protocol error: .*frame payload of \d+ bytes exceeds the limit of 1048 bytes \[payload_too_large\]"
    )
    assert "The backend stopped; nothing in the scene was changed. Press Restart Backend" in text
    assert addon.runtime.status.crashed
    assert addon.runtime.service.describe() == "Backend stopped: press Restart Backend"


FAKE_BACKEND = textwrap.dedent(
    """
    import sys
    import numpy as np
    from backend import wire
    from backend.wire import FrameReader, Message

    reader = FrameReader(sys.stdin.buffer, wire.CLIENT_MESSAGES)
    out = sys.stdout.buffer
    ready = {"protocol_version": 1, "backend_version": "0", "device": "cpu", "models": [], "pid": 0,
             "max_payload_bytes": 1 << 30}
    while (message := reader.read()) is not None:
        if message.type == "hello":
            out.write(wire.frame_bytes(Message("ready", None, ready)))
        elif message.type in ("reconstruct", "sample"):  # a mesh with a NaN vertex
            vertices = np.array([[0, 0, 0], [1, 0, 0], [0, np.nan, 0]], np.float32)
            faces = np.array([[0, 1, 2]], np.int32)
            fields = {"tau": 0.5, "field_id": "f"}
            arrays = {"vertices": vertices, "faces": faces}
            out.write(wire.frame_bytes(Message("result", message.id, fields, arrays)))
        out.flush()
    """
)


def test_a_result_with_non_finite_vertices_never_reaches_the_scene(
    addon: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backend that answers with a broken mesh (a fake one: the real backend checks its meshes)."""
    fake = tmp_path / "fake_backend.py"
    fake.write_text(FAKE_BACKEND)
    monkeypatch.setenv("OCC_BACKEND_PYTHON", backend_wrapper(tmp_path, f'exec "{sys.executable}" "{fake}"'))
    points_mesh("Scan", chair_points())
    fails(
        r"The backend sent a mesh that cannot be used \(1 of its 3 vertices have NaN or infinite "
        r"coordinates\); nothing in the scene was changed"
    )
    assert not addon.runtime.status.crashed  # the backend itself is fine
