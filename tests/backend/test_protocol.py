"""Frames and messages of the wire protocol, encoded and read back in-process."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import tracemalloc
from typing import Any

import numpy as np
import pytest

from backend import wire
from backend.wire import FrameError, FrameReader, Message, MessageError


def read_all(data: bytes, accept: frozenset[str] = wire.CLIENT_MESSAGES, **kw: Any) -> list[Any]:
    """Every message, MessageError and the final FrameError/None the reader yields for ``data``."""
    reader = FrameReader(io.BytesIO(data), accept, **kw)
    out: list[Any] = []
    while True:
        try:
            message = reader.read()
        except MessageError as e:
            out.append(e)
            continue
        except FrameError as e:
            out.append(e)
            return out
        out.append(message)
        if message is None:
            return out


def raw_frame(header: Any, payload: bytes = b"", *, magic: bytes = wire.MAGIC, version: int = 1) -> bytes:
    """A frame with an arbitrary JSON header and payload (what a broken client might send)."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<4sHHIQ", magic, version, 0, len(text), len(payload)) + text + payload


ECHO = wire.frame_bytes(Message("echo", 99, {"data": "after"}))


def test_result_round_trip_keeps_arrays_and_fields() -> None:
    rng = np.random.default_rng(0)
    sent = Message(
        "result",
        7,
        {"tau": 0.2, "timings": {"evaluate": 0.5}, "warnings": ["empty mesh"], "field_id": "f1"},
        {
            "vertices": rng.random((5, 3), dtype=np.float32),
            "faces": rng.integers(0, 5, (4, 3)).astype(np.int32),
            "normals": rng.random((5, 3), dtype=np.float32),
        },
    )
    [got, end] = read_all(wire.frame_bytes(sent), wire.BACKEND_MESSAGES)
    assert end is None
    assert (got.type, got.id, got.fields) == ("result", 7, sent.fields)
    for name, array in sent.arrays.items():
        assert got.arrays[name].dtype == array.dtype
        np.testing.assert_array_equal(got.arrays[name], array)
        assert got.arrays[name].flags.writeable and got.arrays[name].flags.owndata


@pytest.mark.parametrize("dtype", list(wire.DTYPES))
def test_every_allowed_dtype_survives_with_odd_sizes(dtype: str) -> None:
    """Odd byte counts exercise the 8-byte padding between arrays."""
    first = (np.arange(7) % 2).astype(dtype)
    second = np.arange(3 * 5 * 1, dtype=np.float64).reshape(3, 5, 1).astype(dtype)
    frame = wire.frame_bytes(Message("echo", 1, {"data": None}, {"a": first, "b": second}))
    [got, _] = read_all(frame)
    assert got.arrays["a"].dtype.name == dtype and got.arrays["b"].shape == (3, 5, 1)
    np.testing.assert_array_equal(got.arrays["a"], first)
    np.testing.assert_array_equal(got.arrays["b"], second)


def test_empty_and_non_contiguous_and_big_endian_arrays_are_sent_as_plain_arrays() -> None:
    big_endian = np.arange(6, dtype=">f4").reshape(2, 3)
    strided = np.arange(24, dtype=np.int32).reshape(4, 6)[:, ::2]
    empty = np.zeros((0, 3), np.float32)
    frame = wire.frame_bytes(Message("echo", 1, {}, {"be": big_endian, "st": strided, "e": empty}))
    [got, _] = read_all(frame)
    np.testing.assert_array_equal(got.arrays["be"], big_endian)
    assert got.arrays["be"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(got.arrays["st"], strided)
    assert got.arrays["e"].shape == (0, 3)


def test_several_frames_in_a_row_then_a_clean_end() -> None:
    frames = b"".join(wire.frame_bytes(Message("cancel", i)) for i in range(3))
    got = read_all(frames)
    assert [m.id for m in got[:3]] == [0, 1, 2] and got[3] is None


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (Message("nonsense", 1), "unknown message type"),
        (Message("extract", 1, {"field_id": "f"}), "needs the field 'tau'"),
        (Message("extract", 1, {"field_id": "f", "tau": "high"}), "'tau' of 'extract' must be float"),
        (Message("extract", 1, {"field_id": "f", "tau": 0.5, "colour": 1}), "unknown field"),
        (Message("extract", None, {"field_id": "f", "tau": 0.5}), "needs an integer 'id'"),
        (Message("cancel", -1), "'id' must be an integer"),
        (Message("hello", 3, {"protocol_version": 1}), "takes no 'id'"),
        (Message("reconstruct", 1, {}, {"points": np.zeros((4, 2), np.float32)}), "last axis 3"),
        (Message("reconstruct", 1, {}, {"points": np.zeros((4, 3), np.int32)}), "float32 or float64"),
        (Message("reconstruct", 1, {}, {"normals": np.zeros((4, 3), np.float32)}), "no array 'normals'"),
        (Message("result", 1, {"tau": 0.5}, {"vertices": np.zeros((0, 3), np.float32)}), "needs the array"),
    ],
)
def test_encode_refuses_messages_that_break_the_schema(message: Message, error: str) -> None:
    with pytest.raises(MessageError, match=error):
        wire.encode(message)


def test_encode_refuses_dtypes_outside_the_whitelist_and_non_finite_numbers() -> None:
    with pytest.raises(ValueError, match="complex64"):
        wire.encode(Message("echo", 1, {}, {"z": np.zeros(3, np.complex64)}))
    with pytest.raises(ValueError, match="object"):
        wire.encode(Message("echo", 1, {}, {"o": np.array([None, 1], dtype=object)}))
    with pytest.raises(ValueError, match="axes"):
        wire.encode(Message("echo", 1, {}, {"deep": np.zeros((1,) * 5, np.uint8)}))
    with pytest.raises(ValueError, match="Out of range float"):
        wire.encode(Message("echo", 1, {"data": float("nan")}))


# Frames a faulty client could send. Each one is skipped and answered; the next frame still reads.
GOOD_PREFIX_BAD_CONTENT = {
    "not json": (raw_frame(b"{nope"), wire.BAD_MESSAGE, "not valid JSON"),
    "not utf-8": (raw_frame(b'{"type":"\xff"}'), wire.BAD_MESSAGE, "not valid JSON"),
    "nan constant": (raw_frame(b'{"type":"echo","id":1,"data":NaN}'), wire.BAD_MESSAGE, "NaN"),
    "deep nesting": (raw_frame(b"[" * 100_000 + b"]" * 100_000), wire.BAD_MESSAGE, "not valid JSON"),
    "array header": (raw_frame([1, 2]), wire.BAD_MESSAGE, "must be a JSON object"),
    "no type": (raw_frame({"id": 4}), wire.BAD_MESSAGE, "string 'type'"),
    "unknown type": (raw_frame({"type": "explode", "id": 4}), wire.UNKNOWN_MESSAGE, "'explode'"),
    "reply type": (raw_frame({"type": "result", "id": 4, "tau": 0.5}), wire.UNKNOWN_MESSAGE, "'result'"),
    "unknown field": (raw_frame({"type": "cancel", "id": 4, "x": 1}), wire.BAD_MESSAGE, "unknown field"),
    "bool as id": (raw_frame({"type": "cancel", "id": True}), wire.BAD_MESSAGE, "'id' must be"),
    "float dtype name": (
        raw_frame(
            {"type": "echo", "id": 4, "arrays": [{"name": "a", "dtype": "complex128", "shape": [1]}]},
            bytes(16),
        ),
        wire.BAD_ARRAY,
        "dtype 'complex128'",
    ),
    "shape vs payload": (
        raw_frame(
            {"type": "echo", "id": 4, "arrays": [{"name": "a", "dtype": "float32", "shape": [4]}]}, bytes(8)
        ),
        wire.BAD_ARRAY,
        "need 16 payload bytes",
    ),
    "negative shape": (
        raw_frame(
            {"type": "echo", "id": 4, "arrays": [{"name": "a", "dtype": "uint8", "shape": [-8]}]}, bytes(8)
        ),
        wire.BAD_ARRAY,
        "shape must be",
    ),
    "repeated array": (
        raw_frame(
            {"type": "echo", "id": 4, "arrays": [{"name": "a", "dtype": "uint8", "shape": [8]}] * 2},
            bytes(16),
        ),
        wire.BAD_ARRAY,
        "repeated",
    ),
    "wrong array for message": (
        raw_frame(
            {
                "type": "reconstruct",
                "id": 4,
                "arrays": [{"name": "points", "dtype": "uint8", "shape": [8, 3]}],
            },
            bytes(24),
        ),
        wire.BAD_ARRAY,
        "float32 or float64",
    ),
    "bool bytes": (
        raw_frame(
            {
                "type": "echo",
                "id": 4,
                "arrays": [
                    {"name": "a", "dtype": "bool", "shape": [8]},
                    {"name": "b", "dtype": "uint8", "shape": [8]},
                ],
            },
            bytes(7) + b"\x07" + bytes(8),
        ),
        wire.BAD_ARRAY,
        "other than 0 and 1",
    ),
}


@pytest.mark.parametrize("case", list(GOOD_PREFIX_BAD_CONTENT))
def test_a_bad_frame_with_a_sound_prefix_is_skipped(case: str) -> None:
    frame, code, text = GOOD_PREFIX_BAD_CONTENT[case]
    error, after, end = read_all(frame + ECHO)
    assert isinstance(error, MessageError) and error.code == code and text in str(error)
    assert after.type == "echo" and after.fields == {"data": "after"}
    assert end is None


def test_errors_name_the_request_when_its_id_is_readable() -> None:
    [error, _] = read_all(raw_frame({"type": "extract", "id": 12, "field_id": "f"}))
    assert error.request_id == 12


def test_an_oversized_payload_ends_the_stream_before_its_header_is_read() -> None:
    """Skipping it would mean reading it, for ever if the prefix claims 2^62 bytes."""
    big = wire.frame_bytes(Message("echo", 5, {}, {"a": np.zeros(1000, np.float32)}))
    stream = io.BytesIO(big + ECHO)
    [error] = read_all(stream.getvalue(), max_payload_bytes=3999)
    assert isinstance(error, FrameError) and error.code == wire.PAYLOAD_TOO_LARGE
    assert "4000 bytes exceeds the limit of 3999" in str(error)
    reader = FrameReader(stream, wire.CLIENT_MESSAGES, 3999)
    with pytest.raises(FrameError):
        reader.read()
    assert stream.tell() == 20  # the prefix only: nothing of a payload it will not take is consumed
    assert read_all(big, max_payload_bytes=4000)[0].arrays["a"].nbytes == 4000  # the limit is inclusive


class SlowPipe(io.RawIOBase):
    """A readable stream that hands out ``data`` at most ``step`` bytes at a time, as a pipe may."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.at, self.step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self.step, len(self.data) - self.at)
        view[:n] = self.data[self.at : self.at + n]
        self.at += n
        return n


def test_a_large_array_costs_what_arrived_not_what_its_header_declares() -> None:
    declared = 512 * 2**20  # within the default payload limit
    sent = 3 * wire.frames.READ_CHUNK // 2
    text = json.dumps(
        {"type": "echo", "id": 1, "arrays": [{"name": "a", "dtype": "uint8", "shape": [declared]}]}
    ).encode()
    data = struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, len(text), declared) + text + b"\x01" * sent
    reader = FrameReader(SlowPipe(data, 1 << 20), wire.CLIENT_MESSAGES)
    tracemalloc.start()  # numpy reports its buffers to tracemalloc
    try:
        with pytest.raises(FrameError, match=f"got {sent} of {declared} bytes"):
            reader.read()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= 2 * sent + (1 << 20)


def test_a_large_array_read_in_growing_steps_arrives_whole() -> None:
    a = np.arange(5 * wire.frames.READ_CHUNK // 8 + 3, dtype=np.float64)  # 2.5 chunks, odd size
    [got, end] = read_all(wire.frame_bytes(Message("echo", 2, {}, {"a": a, "b": np.ones(3, np.int32)})))
    assert end is None and got.arrays["a"].dtype == np.float64 and got.arrays["a"].flags.writeable
    np.testing.assert_array_equal(got.arrays["a"], a)
    np.testing.assert_array_equal(got.arrays["b"], [1, 1, 1])


@pytest.mark.parametrize(
    ("data", "code", "text"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wire.BAD_FRAME, "bad frame magic"),
        (raw_frame({"type": "shutdown"}, version=2), wire.VERSION_MISMATCH, "version 2"),
        (struct.pack("<4sHHIQ", wire.MAGIC, 1, 4, 2, 0) + b"{}", wire.BAD_FRAME, "flags"),
        (struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 0, 0), wire.BAD_FRAME, "header size 0"),
        (struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2**31, 0), wire.BAD_FRAME, "header size"),
        (ECHO[:11], wire.BAD_FRAME, "11 of 20 prefix bytes"),
        (ECHO[:30], wire.BAD_FRAME, "header bytes"),
        (
            wire.frame_bytes(Message("echo", 1, {}, {"a": np.zeros(9)}))[:-20],
            wire.BAD_FRAME,
            "inside array",
        ),
        (raw_frame({"type": "echo", "id": 1}, bytes(100))[:-1], wire.BAD_FRAME, "skipping"),
        (
            struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2, 2**62) + b"{}",
            wire.PAYLOAD_TOO_LARGE,
            f"payload of {2**62} bytes exceeds the limit",
        ),
    ],
)
def test_a_broken_stream_is_a_frame_error(data: bytes, code: str, text: str) -> None:
    *_, last = read_all(data)
    assert isinstance(last, FrameError) and last.code == code and text in str(last)


def test_write_parts_finishes_partial_writes() -> None:
    class Trickle(io.RawIOBase):
        """A raw stream that takes at most 3 bytes per write, as a full pipe may."""

        def __init__(self) -> None:
            self.data = bytearray()

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            chunk = bytes(memoryview(b)[:3])
            self.data += chunk
            return len(chunk)

    sink = Trickle()
    message = Message("echo", 3, {"data": [1, 2]}, {"a": np.arange(10, dtype=np.int64)})
    wire.write_parts(sink, wire.encode(message))
    [got, _] = read_all(bytes(sink.data))
    np.testing.assert_array_equal(got.arrays["a"], message.arrays["a"])


def test_the_add_on_can_load_this_package_alone_without_torch(tmp_path: Any) -> None:
    """The add-on loads backend/wire by path, in Blender's Python, where torch may not exist."""
    folder = os.path.dirname(wire.__file__)
    script = textwrap.dedent(
        f"""
        import importlib.util, os, sys
        init = os.path.join({folder!r}, "__init__.py")
        spec = importlib.util.spec_from_file_location(
            "addon_private.wire", init, submodule_search_locations=[{folder!r}]
        )
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        assert module.Message("cancel", 1).id == 1
        assert module.BackendProcess.__module__ == "addon_private.wire.client"
        assert "torch" not in sys.modules and "backend" not in sys.modules, sorted(sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
