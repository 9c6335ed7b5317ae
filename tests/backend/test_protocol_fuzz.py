"""Random and damaged input never crashes or hangs the frame reader."""

from __future__ import annotations

import array
import contextlib
import fcntl
import io
import json
import logging
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend import wire
from backend.wire import FrameError, FrameReader, Message, MessageError
from occupancy_addon.backend_process import backend_command, backend_environment

REPO = Path(__file__).resolve().parents[2]

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


# ---------------------------------------------------------------------------------------------------------
# Over the wire: damaged conversations sent to the real server, in-process and as ``serve`` processes

WIRE_LIMIT = 1 << 20  # the in-process server's payload limit: small, so that lying sizes cross it
# The codes an orderly answer may carry; ``internal`` (an unexpected exception) and
# ``engine_unavailable`` never may.
ANSWER_CODES = {
    wire.BAD_FRAME,
    wire.VERSION_MISMATCH,
    wire.BAD_MESSAGE,
    wire.UNKNOWN_MESSAGE,
    wire.PAYLOAD_TOO_LARGE,
    wire.BAD_ARRAY,
    wire.HANDSHAKE_REQUIRED,
    wire.BAD_INPUT,
    wire.UNKNOWN_MODEL,
    wire.UNKNOWN_FIELD,
    wire.CANCELLED,
    wire.SUPERSEDED,
    wire.OUT_OF_MEMORY,
}
REPLY_TYPES = {"ready", "progress", "result", "released", "echo", "error", "bye"}
CONVERSATION = [
    wire.frame_bytes(Message("hello", None, {"protocol_version": wire.PROTOCOL_VERSION, "client": "fuzz"})),
    wire.frame_bytes(Message("echo", 1, {"data": [1, "x"]}, {"v": np.arange(5, dtype=np.uint8)})),
    wire.frame_bytes(
        Message(
            "reconstruct",
            2,
            {"kind": "pointcloud", "options": {"resolution": 32}},
            {"points": np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)},
        )
    ),
    wire.frame_bytes(
        Message(
            "reconstruct",
            3,
            {"model": "voxels", "options": {"resolution": 32, "seed": 1}},
            {"voxels": np.ones((4, 4, 4), bool), "bounds": np.array([[0, 0, 0], [1, 1, 1]], np.float32)},
        )
    ),
    wire.frame_bytes(Message("extract", 4, {"field_id": "nothing", "tau": 0.5})),
    wire.frame_bytes(Message("cancel", 2)),
    wire.frame_bytes(Message("release", 5, {"field_id": None})),
    wire.frame_bytes(Message("echo", 6, {"data": "last"})),
]
SIZE_LIES = st.one_of(
    st.integers(0, 4096),
    st.sampled_from([WIRE_LIMIT - 8, WIRE_LIMIT, WIRE_LIMIT + 1, 1 << 30, 2**62, 2**64 - 1]),
)


def _lie_about_shape(frame: bytes, draw: Any) -> bytes:
    """The same payload under a header whose first array claims another shape (a frame already
    damaged beyond reading stays as it is)."""
    try:
        header_size, payload_size = struct.unpack_from("<IQ", frame, 8)
        header = json.loads(frame[20 : 20 + header_size])
        header["arrays"][0]["shape"] = None
    except (struct.error, ValueError, LookupError, TypeError):
        return frame
    header["arrays"][0]["shape"] = draw(
        st.lists(st.one_of(st.integers(0, 70), st.integers(0, 2**40 - 1)), min_size=0, max_size=5)
    )
    text = json.dumps(header).encode()
    prefix = struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, len(text), payload_size)
    return prefix + text + frame[20 + header_size :]


@st.composite
def damaged_conversation(draw: Any) -> bytes:
    """A conversation with one to three kinds of damage: flipped bytes, lying sizes in a prefix
    (payload or header), a lying array shape, junk between frames, or a cut anywhere."""
    frames = list(CONVERSATION)
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(frames) - 1))
        frame = bytearray(frames[at])
        damage = draw(st.sampled_from(["flip", "payload size", "header size", "shape", "junk", "cut"]))
        if damage in ("flip", "payload size", "header size") and len(frame) < 20:
            damage = "junk"  # already cut short: add to it instead
        if damage == "flip":
            for _ in range(draw(st.integers(1, 4))):
                frame[draw(st.integers(0, len(frame) - 1))] = draw(st.integers(0, 255))
        elif damage == "payload size":
            struct.pack_into("<Q", frame, 12, draw(SIZE_LIES))
        elif damage == "header size":
            struct.pack_into("<I", frame, 8, draw(st.integers(0, 2**32 - 1) | st.integers(0, 600)))
        elif damage == "shape":
            frame = bytearray(_lie_about_shape(bytes(frame), draw))
        elif damage == "junk":
            frame += draw(st.binary(min_size=1, max_size=64))
        else:
            frame = frame[: draw(st.integers(0, len(frame)))]
        frames[at] = bytes(frame)
    return b"".join(frames)


@dataclass
class Conversation:
    """How a damaged conversation ended."""

    status: int | None  # the server's exit status; None: it did not end (a hang)
    replies: list[Message]
    problems: list[str]  # anything but an orderly end: unreadable replies, tracebacks, bad values


def check_replies(replies: list[Message], status: int | None, problems: list[str]) -> None:
    """The rules every ending follows: known reply types and error codes, finite meshes, and a fatal
    error exactly when the exit status says the stream was lost (then it is the last reply)."""
    for reply in replies:
        if reply.type not in REPLY_TYPES:
            problems.append(f"unexpected reply {reply.type}")
        if reply.type == "error" and reply.fields["code"] not in ANSWER_CODES:
            problems.append(f"error code {reply.fields['code']}: {reply.fields['message']}")
        if reply.type == "result" and not np.isfinite(reply.arrays["vertices"]).all():
            problems.append("a mesh with non-finite vertices")
    fatal = [i for i, r in enumerate(replies) if r.type == "error" and r.fields.get("fatal")]
    if status not in (0, 2):
        problems.append(f"exit status {status}")
    elif (status == 2) != (fatal == [len(replies) - 1]):
        problems.append(f"exit status {status} but fatal errors at {fatal} of {len(replies)} replies")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.tracebacks: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.tracebacks.append(self.format(record))


def _read_replies(stream: Any, out: list[Message], problems: list[str]) -> None:
    reader = FrameReader(stream, wire.BACKEND_MESSAGES, 1 << 34)
    try:
        while (message := reader.read()) is not None:
            out.append(message)
    except (FrameError, MessageError) as e:
        problems.append(f"unreadable reply: {e}")


def _feed(stream: Any, data: bytes, close: bool = True) -> None:
    with contextlib.suppress(OSError):  # the server stopped reading after a fatal error
        stream.write(data)
    if close:
        with contextlib.suppress(OSError):
            stream.close()


def unread_bytes(fd: int) -> int:
    """Bytes written into a pipe and not read yet."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0]


MARKER = wire.frame_bytes(Message("echo", 999, {"data": "marker"}))


def converse_in_process(engine: Any, data: bytes, timeout: float = 30) -> Conversation:
    """Send ``data`` and an ``echo`` marker to the real server (in a thread of this process, on real
    pipes), close the input once all of it was answered (or could not be), and collect the replies.

    Requests are answered in order, so the marker's reply means everything before it was. When
    damage hid the marker (a size that claims more bytes than follow), the input closes once the
    server has read every byte and has nothing to do: it is waiting for bytes that never come.
    """
    from backend.serving.server import Server, log

    to_server, from_client = os.pipe()
    to_client, from_server = os.pipe()
    wire_in, wire_out = open(to_server, "rb", buffering=0), open(from_server, "wb", buffering=0)  # noqa: SIM115
    records = _Records()
    log.addHandler(records)
    server = Server(lambda: engine, wire_in, wire_out, max_payload_bytes=WIRE_LIMIT)
    status: list[int] = []
    replies: list[Message] = []
    problems: list[str] = []
    serving = threading.Thread(target=lambda: status.append(server.serve()), daemon=True)
    replies_in = open(to_client, "rb", buffering=0)  # noqa: SIM115
    reading = threading.Thread(target=_read_replies, args=(replies_in, replies, problems), daemon=True)
    client_out = open(from_client, "wb", buffering=0)  # noqa: SIM115
    writing = threading.Thread(target=_feed, args=(client_out, data + MARKER, False), daemon=True)
    try:
        for thread in (serving, reading, writing):
            thread.start()
        deadline, idle_polls = time.monotonic() + timeout, 0
        while serving.is_alive() and time.monotonic() < deadline:
            if any(r.id == 999 for r in replies):
                break
            waiting = writing.is_alive() or unread_bytes(to_server) or not server.idle()
            idle_polls = 0 if waiting else idle_polls + 1
            if idle_polls >= 3:
                break
            serving.join(0.02)
        writing.join(timeout)
        with contextlib.suppress(OSError):
            client_out.close()
        serving.join(timeout)
        if serving.is_alive():
            problems.append("the server did not end after its input closed")
        wire_in.close()  # a writer still blocked on a full pipe gets a broken pipe now
        writing.join(timeout)
        wire_out.close()  # the reader sees the end of the replies
        reading.join(timeout)
    finally:
        log.removeHandler(records)
    problems += records.tracebacks
    check_replies(replies, status[0] if status else None, problems)
    return Conversation(status[0] if status else None, replies, problems)


@pytest.fixture(scope="module")
def shared_engine(engine_weights: Path) -> Any:
    from backend.engine.reconstructor import Reconstructor

    return Reconstructor(device="cpu", weights_dir=engine_weights, cache_bytes=16 * 2**20)


def test_the_undamaged_conversation_is_answered_in_full(shared_engine: Any) -> None:
    done = converse_in_process(shared_engine, b"".join(CONVERSATION))
    assert done.problems == [] and done.status == 0
    answers = {r.id: r for r in done.replies if r.type != "progress"}
    assert [answers[i].type for i in (1, 3, 5, 6)] == ["echo", "result", "released", "echo"]
    assert answers[2].type in ("result", "error")  # the cancel may or may not catch it
    assert answers[4].fields["code"] == wire.UNKNOWN_FIELD and answers[999].fields["data"] == "marker"


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_conversation())
def test_a_damaged_conversation_ends_in_order(shared_engine: Any, data: bytes) -> None:
    """Each ends with valid replies, then either the end of the input (status 0) or one fatal
    error as the last reply (status 2): no hang, no traceback, no unknown error code."""
    done = converse_in_process(shared_engine, data)
    assert done.problems == []


# The same against ``python -m backend serve`` processes, one per case, at its default payload limit
# (1 GiB): the exit status, stderr and the process's peak memory.
SERVE_MEMORY_MARGIN = 64 * 2**20  # what a damaged conversation may add to an ordinary one's peak


def serve_argv(weights: Path) -> list[str]:
    return backend_command(Path(sys.executable), ["serve", "--weights-dir", str(weights), "--device", "cpu"])


@dataclass
class ServeRun:
    conversation: Conversation
    peak_rss: int  # bytes
    stderr: str


def watch_peak_memory(pid: int, peak: list[int]) -> None:
    """Keep ``peak[0]`` at the process's peak resident memory (VmHWM) until it exits. (``wait4``
    cannot tell: on Linux a child's ``ru_maxrss`` starts from its parent's at ``exec``.)"""
    while True:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            return
        found = re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE)
        if found is None:  # a zombie: its memory is gone
            return
        peak[0] = max(peak[0], 1024 * int(found.group(1)))
        time.sleep(0.005)


def exits_within(pid: int, seconds: float) -> bool:
    """Whether the child ``pid`` exits within ``seconds`` (left unreaped: the caller reaps it)."""
    deadline = time.monotonic() + seconds
    while os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def converse_with_serve(
    weights: Path, data: bytes, until: Callable[[list[Message]], bool] | None = None, timeout: float = 60
) -> ServeRun:
    """Write ``data`` to a fresh ``serve``, then close its input (once the replies satisfy
    ``until``, if given); collect its replies, stderr, exit status and peak memory."""
    proc = subprocess.Popen(
        serve_argv(weights),
        cwd=REPO,
        env=backend_environment(REPO, os.environ),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    replies: list[Message] = []
    problems: list[str] = []
    err: list[bytes] = []
    stderr = proc.stderr
    peak = [0]
    threads = [
        threading.Thread(target=watch_peak_memory, args=(proc.pid, peak), daemon=True),
        threading.Thread(target=_read_replies, args=(proc.stdout, replies, problems), daemon=True),
        threading.Thread(target=lambda: err.append(stderr.read()), daemon=True),
        threading.Thread(target=_feed, args=(proc.stdin, data, False), daemon=True),
    ]
    for thread in threads:
        thread.start()
    threads[3].join(timeout)
    deadline = time.monotonic() + timeout
    while until is not None and not until(replies) and time.monotonic() < deadline:
        if exits_within(proc.pid, 0.02):
            break
    with contextlib.suppress(OSError):
        proc.stdin.close()
    ended = exits_within(proc.pid, timeout)
    if not ended:
        problems.append("serve did not exit after its input closed")
        proc.kill()
    for thread in threads[:3]:
        thread.join(timeout)
    proc.wait()
    text = b"".join(err).decode("utf-8", "replace")
    if "Traceback" in text:
        problems.append(f"a traceback on stderr: {text[-2000:]}")
    status = proc.returncode if ended else None
    check_replies(replies, status, problems)
    return ServeRun(Conversation(status, replies, problems), peak[0], text)


@pytest.fixture(scope="module")
def ordinary_peak(engine_weights: Path) -> int:
    """The peak memory of a ``serve`` that loads its engine, reconstructs once and shuts down."""
    run = converse_with_serve(
        engine_weights,
        CONVERSATION[0] + CONVERSATION[2],
        until=lambda replies: any(r.type in ("result", "error") for r in replies),
        timeout=120,
    )
    assert run.conversation.problems == [] and run.conversation.status == 0
    assert [r.type for r in run.conversation.replies if r.type != "progress"] == ["ready", "result"]
    return run.peak_rss


def test_serve_ends_a_2_to_the_62_byte_payload_at_once(engine_weights: Path, ordinary_peak: int) -> None:
    """What this guards against: ``serve`` once skipped such a payload for ever and fell silent."""
    oversized = struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, 2, 2**62) + b"{}"
    # the input stays open until the answer came: a server that skips the payload never answers
    run = converse_with_serve(
        engine_weights, CONVERSATION[0] + oversized, until=lambda replies: bool(replies)
    )
    assert run.conversation.problems == [] and run.conversation.status == 2
    [error] = [r for r in run.conversation.replies if r.type == "error"]
    assert error.fields["code"] == wire.PAYLOAD_TOO_LARGE and error.fields["fatal"] is True
    assert run.peak_rss <= ordinary_peak + SERVE_MEMORY_MARGIN


def test_serve_memory_follows_what_arrives_not_what_is_declared(
    engine_weights: Path, ordinary_peak: int
) -> None:
    declared = wire.DEFAULT_MAX_PAYLOAD_BYTES - 64
    header = {"type": "echo", "id": 1, "arrays": [{"name": "a", "dtype": "uint8", "shape": [declared]}]}
    text = json.dumps(header).encode()
    lying = struct.pack("<4sHHIQ", wire.MAGIC, 1, 0, len(text), declared) + text + bytes(2**20)
    run = converse_with_serve(engine_weights, CONVERSATION[0] + lying)
    assert run.conversation.problems == [] and run.conversation.status == 2
    assert "stream ended inside array 'a'" in run.conversation.replies[-1].fields["message"]
    assert run.peak_rss <= ordinary_peak + SERVE_MEMORY_MARGIN


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_conversation())
def test_serve_ends_a_damaged_conversation_in_order(
    engine_weights: Path, ordinary_peak: int, data: bytes
) -> None:
    run = converse_with_serve(engine_weights, data)
    assert run.conversation.problems == []
    assert run.peak_rss <= ordinary_peak + SERVE_MEMORY_MARGIN
