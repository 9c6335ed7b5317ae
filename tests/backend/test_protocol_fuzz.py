"""Random and damaged input never crashes or hangs the frame reader."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from backend import wire
from backend.wire import FrameError, FrameReader, Message, MessageError

VALID = [
    wire.frame_bytes(Message("hello", None, {"protocol_version": 1})),
    wire.frame_bytes(
        Message(
            "reconstruct",
            1,
            {"kind": "pointcloud", "options": {"resolution": 32}},
            {"points": np.ones((5, 3))},
        )
    ),
    wire.frame_bytes(Message("extract", 2, {"field_id": "f", "tau": 0.3})),
    wire.frame_bytes(Message("echo", 3, {"data": [1, "x"]}, {"v": np.arange(5, dtype=np.uint8)})),
    wire.frame_bytes(Message("cancel", 4)),
]
STREAM = b"".join(VALID)
# How a stream that cannot be read on ends: a broken frame, another version, a payload too large to skip.
FATAL = (wire.BAD_FRAME, wire.VERSION_MISMATCH, wire.PAYLOAD_TOO_LARGE)


def drain(reader: FrameReader) -> tuple[int, int, str]:
    """Read until the stream ends or breaks: (messages, skipped frames, how it ended)."""
    messages = skipped = 0
    for _ in range(10_000):  # every call consumes at least one byte, so this bound is never reached
        try:
            message = reader.read()
        except MessageError:
            skipped += 1
            continue
        except FrameError as e:
            return messages, skipped, e.code
        if message is None:
            return messages, skipped, "end"
        messages += 1
    raise AssertionError("reader made no progress")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    messages, _, ended = drain(FrameReader(io.BytesIO(data), wire.CLIENT_MESSAGES))
    assert ended in ("end", *FATAL)
    assert messages == 0 or data.startswith(wire.MAGIC)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(STREAM)))
def test_truncated_stream_reads_every_whole_frame_first(cut: int) -> None:
    whole = 0
    while whole < len(VALID) and len(b"".join(VALID[: whole + 1])) <= cut:
        whole += 1
    messages, skipped, ended = drain(FrameReader(io.BytesIO(STREAM[:cut]), wire.CLIENT_MESSAGES))
    assert (messages, skipped) == (whole, 0)
    assert ended == ("end" if cut == len(b"".join(VALID[:whole])) else wire.BAD_FRAME)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(STREAM) - 1), st.integers(0, 255)), min_size=1, max_size=6))
def test_corrupted_bytes(changes: list[tuple[int, int]]) -> None:
    data = bytearray(STREAM)
    for position, value in changes:
        data[position] = value
    messages, skipped, ended = drain(FrameReader(io.BytesIO(bytes(data)), wire.CLIENT_MESSAGES))
    assert messages + skipped <= len(VALID)
    assert ended in ("end", *FATAL)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=2000), st.integers(0, len(STREAM)))
def test_garbage_through_a_real_pipe_ends_when_the_writer_closes(junk: bytes, cut: int) -> None:
    read_fd, write_fd = os.pipe()

    def write() -> None:
        with open(write_fd, "wb", buffering=0) as w:
            w.write(STREAM[:cut] + junk)

    writer = threading.Thread(target=write)
    outcome: list[tuple[int, int, str]] = []
    with open(read_fd, "rb", buffering=0) as r:
        reader = threading.Thread(target=lambda: outcome.append(drain(FrameReader(r, wire.CLIENT_MESSAGES))))
        writer.start()
        reader.start()
        writer.join(10)
        reader.join(10)
        assert not reader.is_alive(), "the reader hung on a closed pipe"
    assert outcome and outcome[0][2] in ("end", *FATAL)
