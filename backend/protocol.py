"""Wire protocol between the Blender add-on and ``python -m backend serve``, and a client for it.

This file is the one definition both sides use. The backend imports it as ``backend.protocol``;
the add-on loads it by file path. It must therefore stay self-contained: standard library and numpy
only, no relative imports, no torch.

Frames (integers little-endian)::

    prefix   20 bytes  magic b"OCCW", protocol version u16, flags u16 (= 0), header size u32, payload size u64
    header   a UTF-8 JSON object:
             {"type": ..., "id": ..., <fields>, "arrays": [{"name", "dtype", "shape"}, ...]}
    payload  the arrays' raw bytes in header order, C order, little-endian, each padded to 8 bytes

There is no pickle anywhere. A frame whose prefix is wrong (magic, version, flags, header size) or
that ends early cannot be skipped, so the stream is lost: ``FrameError``. A frame with a sound prefix
but a bad header, an oversized payload or inconsistent arrays is skipped whole and reported as a
``MessageError``; the next frame is read normally.

Conversation: the client sends ``hello``, the backend answers ``ready`` (or ``error`` and exits).
Requests carry an integer ``id`` chosen by the client; every request that has a reply gets exactly
one ``result``/``released``/``echo`` or one ``error`` with that id, after any number of
``progress`` messages. ``cancel`` and ``shutdown`` have no reply of their own: a cancelled request
ends with an ``error`` whose code is ``cancelled``, and the backend answers ``shutdown`` with ``bye``.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import math
import struct
import subprocess
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, cast

import numpy as np

PROTOCOL_VERSION = 1
MAGIC = b"OCCW"
_PREFIX = struct.Struct("<4sHHIQ")
PREFIX_SIZE = _PREFIX.size
MAX_HEADER_BYTES = 1 << 20  # headers are small JSON; a bigger one means a corrupt stream
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30
ALIGN = 8  # every array starts on an 8-byte boundary of the payload
MAX_NDIM = 4
MAX_ARRAYS = 8
MAX_ID = 2**53  # ids must survive a round trip through any JSON implementation

# Only these dtypes travel; the name in the header always means little-endian.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("bool", "uint8", "int32", "int64", "float16", "float32", "float64")
}

# Error codes (the ``code`` field of an ``error`` message).
BAD_FRAME = "bad_frame"  # the byte stream is broken; the backend exits after saying so
VERSION_MISMATCH = "version_mismatch"  # the two sides speak different protocol versions
BAD_MESSAGE = "bad_message"  # the header is not a valid message (JSON, fields, types, id)
UNKNOWN_MESSAGE = "unknown_message"  # a message type this side does not accept
PAYLOAD_TOO_LARGE = "payload_too_large"
BAD_ARRAY = "bad_array"  # dtype, shape or size of an array is wrong
HANDSHAKE_REQUIRED = "handshake_required"  # a request came before ``hello``
ENGINE_UNAVAILABLE = "engine_unavailable"  # the engine (torch, weights) could not be loaded
BAD_INPUT = "bad_input"  # the engine rejected the observation or an option
UNKNOWN_MODEL = "unknown_model"
UNKNOWN_FIELD = "unknown_field"  # extract/release of a field id that is not (or no longer) cached
CANCELLED = "cancelled"
SUPERSEDED = "superseded"  # a newer extract of the same field replaced this one before it started
OUT_OF_MEMORY = "out_of_memory"
INTERNAL = "internal"  # an unexpected exception inside the backend; the message has its text
BACKEND_EXITED = "backend_exited"  # raised by the client only: the process is gone


class FrameError(Exception):
    """The byte stream cannot be read any further (bad prefix, or it ended inside a frame)."""

    def __init__(self, message: str, code: str = BAD_FRAME) -> None:
        super().__init__(message)
        self.code = code


class MessageError(Exception):
    """One frame was skipped because its content is invalid; the stream itself is fine."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass
class Message:
    """One decoded frame. ``fields`` holds the header's JSON values, ``arrays`` the numpy buffers."""

    type: str
    id: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Message schemas


@dataclass(frozen=True)
class _Field:
    kinds: tuple[str, ...]  # JSON kinds accepted: int, float, str, bool, dict, list, null, any
    required: bool = False


@dataclass(frozen=True)
class _Array:
    dtypes: tuple[str, ...]
    ndim: int
    last: tuple[int, ...] = ()  # allowed sizes of the last axis (empty: any)


@dataclass(frozen=True)
class _Spec:
    sender: str  # "client", "backend" or "both"
    id: str  # "required", "optional" or "absent"
    fields: Mapping[str, _Field] = field(default_factory=dict)
    arrays: Mapping[str, _Array] | None = field(default_factory=dict)  # None: any names (echo)


_FLOATS = ("float32", "float64")
SCHEMAS: dict[str, _Spec] = {
    # client -> backend
    "hello": _Spec(
        "client", "absent", {"protocol_version": _Field(("int",), True), "client": _Field(("str",))}
    ),
    "reconstruct": _Spec(
        "client",
        "required",
        {"model": _Field(("str", "null")), "kind": _Field(("str", "null")), "options": _Field(("dict",))},
        {
            "points": _Array(_FLOATS, 2, (3,)),
            "voxels": _Array(("bool", "uint8", *_FLOATS), 3),
            "bounds": _Array(_FLOATS, 2, (3,)),
            "image": _Array(("uint8", *_FLOATS), 3, (3, 4)),
        },
    ),
    "extract": _Spec(
        "client", "required", {"field_id": _Field(("str",), True), "tau": _Field(("float",), True)}
    ),
    "sample": _Spec(
        "client",
        "required",
        {"model": _Field(("str", "null")), "seed": _Field(("int",)), "options": _Field(("dict",))},
    ),
    "release": _Spec("client", "required", {"field_id": _Field(("str", "null"))}),  # null: everything
    "echo": _Spec("both", "required", {"data": _Field(("any",))}, None),  # a no-op round trip
    "cancel": _Spec("client", "required"),  # id: the request to cancel
    "shutdown": _Spec("client", "absent"),
    # backend -> client
    "ready": _Spec(
        "backend",
        "absent",
        {
            "protocol_version": _Field(("int",), True),
            "backend_version": _Field(("str",), True),
            "device": _Field(("str",), True),
            "models": _Field(("list",), True),  # [{"name", "kind", "tau"}, ...]
            "pid": _Field(("int",), True),
            "max_payload_bytes": _Field(("int",), True),
        },
    ),
    "progress": _Spec(
        "backend", "required", {"stage": _Field(("str",), True), "fraction": _Field(("float",), True)}
    ),
    "result": _Spec(
        "backend",
        "required",
        {
            "tau": _Field(("float",), True),
            "timings": _Field(("dict",)),
            "warnings": _Field(("list",)),
            "field_id": _Field(("str", "null")),
        },
        {
            "vertices": _Array(("float32",), 2, (3,)),
            "faces": _Array(("int32",), 2, (3,)),
            "normals": _Array(("float32",), 2, (3,)),
        },
    ),
    "released": _Spec("backend", "required", {"field_id": _Field(("str", "null"))}),
    "error": _Spec(
        "backend",
        "optional",
        {"code": _Field(("str",), True), "message": _Field(("str",), True), "fatal": _Field(("bool",))},
    ),
    "bye": _Spec("backend", "absent"),
}
CLIENT_MESSAGES = frozenset(name for name, spec in SCHEMAS.items() if spec.sender in ("client", "both"))
BACKEND_MESSAGES = frozenset(name for name, spec in SCHEMAS.items() if spec.sender in ("backend", "both"))
REQUIRED_ARRAYS = {"result": ("vertices", "faces")}
_RESERVED = ("type", "id", "arrays")


def _is_kind(value: Any, kind: str) -> bool:
    if kind == "any":
        return True
    if kind == "null":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":  # JSON writes 1.0 as 1 in some encoders
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dict":
        return isinstance(value, dict)
    if kind == "list":
        return isinstance(value, list)
    raise AssertionError(kind)


def _check_id(spec: _Spec, kind: str, request_id: Any) -> int | None:
    if request_id is None:
        if spec.id == "required":
            raise MessageError(BAD_MESSAGE, f"'{kind}' needs an integer 'id'")
        return None
    if spec.id == "absent":
        raise MessageError(BAD_MESSAGE, f"'{kind}' takes no 'id'")
    if not _is_kind(request_id, "int") or not 0 <= request_id <= MAX_ID:
        raise MessageError(BAD_MESSAGE, f"'id' must be an integer in [0, 2^53], got {request_id!r}")
    return int(request_id)


def _check_fields(spec: _Spec, kind: str, fields: Mapping[str, Any], request_id: int | None) -> None:
    unknown = sorted(set(fields) - set(spec.fields))
    if unknown:
        known = ", ".join(spec.fields) or "none"
        raise MessageError(
            BAD_MESSAGE, f"unknown field(s) in '{kind}': {', '.join(unknown)}; known: {known}", request_id
        )
    for name, rule in spec.fields.items():
        if name not in fields:
            if rule.required:
                raise MessageError(BAD_MESSAGE, f"'{kind}' needs the field '{name}'", request_id)
            continue
        if not any(_is_kind(fields[name], k) for k in rule.kinds):
            expected = " or ".join(rule.kinds)
            raise MessageError(
                BAD_MESSAGE,
                f"field '{name}' of '{kind}' must be {expected}, got {fields[name]!r:.80}",
                request_id,
            )


def _check_array(
    spec: _Spec, kind: str, name: str, dtype: str, shape: tuple[int, ...], request_id: int | None
) -> None:
    if spec.arrays is None:
        return
    rule = spec.arrays.get(name)
    if rule is None:
        known = ", ".join(spec.arrays) or "none"
        raise MessageError(BAD_ARRAY, f"'{kind}' has no array '{name}'; known: {known}", request_id)
    if dtype not in rule.dtypes:
        raise MessageError(
            BAD_ARRAY, f"array '{name}' must have dtype {' or '.join(rule.dtypes)}, got {dtype}", request_id
        )
    if len(shape) != rule.ndim or (rule.last and shape[-1] not in rule.last):
        last = "/".join(map(str, rule.last)) if rule.last else "any"
        raise MessageError(
            BAD_ARRAY,
            f"array '{name}' must have {rule.ndim} axes (last axis {last}), got shape {list(shape)}",
            request_id,
        )


def validate(message: Message) -> None:
    """Raise ``MessageError`` unless ``message`` follows its schema (type, id, fields, arrays)."""
    spec = SCHEMAS.get(message.type)
    if spec is None:
        raise MessageError(UNKNOWN_MESSAGE, f"unknown message type {message.type!r}", message.id)
    _check_id(spec, message.type, message.id)
    _check_fields(spec, message.type, message.fields, message.id)
    for name, array in message.arrays.items():
        _check_array(spec, message.type, name, array.dtype.name, array.shape, message.id)
    missing = [n for n in REQUIRED_ARRAYS.get(message.type, ()) if n not in message.arrays]
    if missing:
        raise MessageError(BAD_ARRAY, f"'{message.type}' needs the array(s) {', '.join(missing)}", message.id)


# ---------------------------------------------------------------------------------------------------------
# Encoding


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def _wire_array(name: str, array: np.ndarray) -> np.ndarray:
    dtype = DTYPES.get(array.dtype.name)
    if dtype is None:
        raise ValueError(f"array '{name}' has dtype {array.dtype}; the protocol carries {', '.join(DTYPES)}")
    if array.ndim > MAX_NDIM:
        raise ValueError(f"array '{name}' has {array.ndim} axes; the protocol carries at most {MAX_NDIM}")
    return np.ascontiguousarray(array, dtype=dtype)


def encode_frame(
    header: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> list[bytes | memoryview]:
    """Encode a raw frame: ``header`` (a JSON object without "arrays") plus ``arrays``.

    Returns the parts to write in order; large arrays are not copied. No schema check is done
    here (see ``encode``); tests use this to build frames a well-behaved client would not send.
    """
    wire = [(name, _wire_array(name, a)) for name, a in (arrays or {}).items()]
    if len(wire) > MAX_ARRAYS:
        raise ValueError(f"a frame carries at most {MAX_ARRAYS} arrays, got {len(wire)}")
    full = dict(header)
    full["arrays"] = [{"name": n, "dtype": a.dtype.name, "shape": list(a.shape)} for n, a in wire]
    text = json.dumps(full, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(text) > MAX_HEADER_BYTES:
        raise ValueError(f"frame header is {len(text)} bytes; the limit is {MAX_HEADER_BYTES}")
    payload_size = sum(_aligned(a.nbytes) for _, a in wire)
    parts: list[bytes | memoryview] = [
        _PREFIX.pack(MAGIC, PROTOCOL_VERSION, 0, len(text), payload_size) + text
    ]
    for _, a in wire:
        if a.nbytes:
            parts.append(a.reshape(-1).data.cast("B"))
        if _aligned(a.nbytes) != a.nbytes:
            parts.append(bytes(_aligned(a.nbytes) - a.nbytes))
    return parts


def encode(message: Message) -> list[bytes | memoryview]:
    """Check ``message`` against its schema and encode it (see ``encode_frame``)."""
    wire = {name: _wire_array(name, a) for name, a in message.arrays.items()}
    validate(Message(message.type, message.id, message.fields, wire))
    header: dict[str, Any] = {"type": message.type}
    if message.id is not None:
        header["id"] = message.id
    clash = [k for k in message.fields if k in _RESERVED]
    if clash:
        raise ValueError(f"field name(s) {clash} are reserved")
    header.update(message.fields)
    return encode_frame(header, wire)


def frame_bytes(message: Message) -> bytes:
    """The whole frame of ``message`` as one bytes object."""
    return b"".join(encode(message))


def write_parts(stream: IO[bytes], parts: Iterable[bytes | memoryview]) -> None:
    """Write every part completely (raw streams may accept a write only in part)."""
    for part in parts:
        view = memoryview(part)
        while view.nbytes:
            written = stream.write(view)
            if written is None:  # non-blocking stream that is full; ours never are
                raise BlockingIOError("stream would block")
            view = view[written:]
    stream.flush()


# ---------------------------------------------------------------------------------------------------------
# Decoding


class _Readable(Protocol):
    def readinto(self, buffer: Any, /) -> int | None: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class FrameReader:
    """Reads and validates frames from a binary stream (a pipe, a file, ``io.BytesIO``).

    ``accept`` names the message types this side may receive; anything else is a ``MessageError``.
    """

    def __init__(
        self,
        stream: _Readable,
        accept: Collection[str],
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self._stream = stream
        self._accept = frozenset(accept)
        self.max_payload_bytes = max_payload_bytes

    def _read_into(self, view: memoryview) -> int:
        got = 0
        while got < view.nbytes:
            n = self._stream.readinto(view[got:])
            if not n:
                break
            got += n
        return got

    def _read_exact(self, size: int, what: str) -> bytes:
        buffer = bytearray(size)
        got = self._read_into(memoryview(buffer))
        if got < size:
            raise FrameError(f"stream ended inside a frame: got {got} of {size} {what} bytes")
        return bytes(buffer)

    def _skip(self, size: int) -> None:
        chunk = memoryview(bytearray(min(size, 1 << 16)))
        while size:
            got = self._read_into(chunk[: min(size, chunk.nbytes)])
            if not got:
                raise FrameError(f"stream ended inside a frame while skipping {size} payload bytes")
            size -= got

    def read(self) -> Message | None:
        """The next message, or None when the stream ends cleanly between frames.

        Raises ``MessageError`` for a skipped frame and ``FrameError`` when the stream is lost.
        """
        first = bytearray(PREFIX_SIZE)
        got = self._read_into(memoryview(first))
        if got == 0:
            return None
        if got < PREFIX_SIZE:
            raise FrameError(f"stream ended inside a frame: got {got} of {PREFIX_SIZE} prefix bytes")
        magic, version, flags, header_size, payload_size = _PREFIX.unpack(first)
        if magic != MAGIC:
            raise FrameError(
                f"bad frame magic {bytes(magic)!r} (expected {MAGIC!r}): not an occupancy backend stream"
            )
        if version != PROTOCOL_VERSION:
            raise FrameError(
                f"peer speaks protocol version {version}, this side speaks {PROTOCOL_VERSION}",
                VERSION_MISMATCH,
            )
        if flags != 0:
            raise FrameError(f"unknown frame flags {flags:#x}")
        if not 0 < header_size <= MAX_HEADER_BYTES:
            raise FrameError(f"frame header size {header_size} is outside 1..{MAX_HEADER_BYTES}")
        raw_header = self._read_exact(header_size, "header")
        try:
            header = self._parse_header(raw_header)
        except MessageError:
            self._skip(payload_size)
            raise
        except MemoryError:  # the header is read whole, so the frame can still be skipped
            self._skip(payload_size)
            raise MessageError(OUT_OF_MEMORY, "out of memory while parsing a frame header") from None
        request_id = header.get("id") if _is_kind(header.get("id"), "int") else None
        if payload_size > self.max_payload_bytes:
            self._skip(payload_size)
            raise MessageError(
                PAYLOAD_TOO_LARGE,
                f"payload of {payload_size} bytes exceeds the limit of {self.max_payload_bytes} bytes",
                request_id,
            )
        try:
            message, layout = self._message(header, payload_size)
        except MessageError:
            self._skip(payload_size)
            raise
        except MemoryError:
            self._skip(payload_size)
            raise MessageError(OUT_OF_MEMORY, "out of memory while checking a frame", request_id) from None
        for index, (name, dtype, shape) in enumerate(layout):
            try:
                message.arrays[name] = self._read_array(name, dtype, shape, message.id)
            except MemoryError:  # raised before any of this array's bytes were read
                self._skip(sum(_aligned(math.prod(s) * DTYPES[d].itemsize) for _, d, s in layout[index:]))
                size = math.prod(shape) * DTYPES[dtype].itemsize
                raise MessageError(
                    OUT_OF_MEMORY, f"cannot allocate {size} bytes for array '{name}'", message.id
                ) from None
        for name, array in message.arrays.items():  # checked once the whole frame is read
            if array.dtype == np.bool_ and array.size and array.view(np.uint8).max() > 1:
                raise MessageError(
                    BAD_ARRAY, f"bool array '{name}' holds bytes other than 0 and 1", message.id
                )
        return message

    def _parse_header(self, raw: bytes) -> dict[str, Any]:
        try:
            header = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise MessageError(BAD_MESSAGE, f"frame header is not valid JSON: {e}"[:300]) from None
        if not isinstance(header, dict):
            raise MessageError(
                BAD_MESSAGE, f"frame header must be a JSON object, got {type(header).__name__}"
            )
        return header

    def _message(
        self, header: dict[str, Any], payload_size: int
    ) -> tuple[Message, list[tuple[str, str, tuple[int, ...]]]]:
        kind = header.pop("type", None)
        raw_id = header.pop("id", None)
        request_id = raw_id if _is_kind(raw_id, "int") else None
        arrays = header.pop("arrays", [])
        if not isinstance(kind, str):
            raise MessageError(BAD_MESSAGE, "frame header needs a string 'type'", request_id)
        spec = SCHEMAS.get(kind)
        if spec is None or kind not in self._accept:
            raise MessageError(UNKNOWN_MESSAGE, f"unknown message type {kind!r}", request_id)
        request_id = _check_id(spec, kind, raw_id)
        _check_fields(spec, kind, header, request_id)
        layout = self._layout(spec, kind, arrays, request_id)
        expected = sum(_aligned(math.prod(shape) * DTYPES[dtype].itemsize) for _, dtype, shape in layout)
        if expected != payload_size:
            raise MessageError(
                BAD_ARRAY,
                f"arrays need {expected} payload bytes but the frame has {payload_size}",
                request_id,
            )
        missing = [n for n in REQUIRED_ARRAYS.get(kind, ()) if n not in {name for name, _, _ in layout}]
        if missing:
            raise MessageError(BAD_ARRAY, f"'{kind}' needs the array(s) {', '.join(missing)}", request_id)
        return Message(kind, request_id, header), layout

    def _layout(
        self, spec: _Spec, kind: str, arrays: Any, request_id: int | None
    ) -> list[tuple[str, str, tuple[int, ...]]]:
        if not isinstance(arrays, list) or len(arrays) > MAX_ARRAYS:
            raise MessageError(
                BAD_ARRAY, f"'arrays' must be a list of at most {MAX_ARRAYS} entries", request_id
            )
        layout: list[tuple[str, str, tuple[int, ...]]] = []
        for entry in arrays:
            if not isinstance(entry, dict) or set(entry) != {"name", "dtype", "shape"}:
                raise MessageError(BAD_ARRAY, "each array entry must be {name, dtype, shape}", request_id)
            name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
            if not isinstance(name, str) or any(name == other for other, _, _ in layout):
                raise MessageError(
                    BAD_ARRAY, f"array name {name!r} is not a string or is repeated", request_id
                )
            if not isinstance(dtype, str) or dtype not in DTYPES:
                raise MessageError(
                    BAD_ARRAY, f"array '{name}' has dtype {dtype!r}; allowed: {', '.join(DTYPES)}", request_id
                )
            if (
                not isinstance(shape, list)
                or len(shape) > MAX_NDIM
                or not all(_is_kind(s, "int") and 0 <= s < 2**40 for s in shape)
            ):
                raise MessageError(
                    BAD_ARRAY,
                    f"array '{name}' shape must be up to {MAX_NDIM} sizes >= 0, got {shape!r:.80}",
                    request_id,
                )
            _check_array(spec, kind, name, dtype, tuple(shape), request_id)
            layout.append((name, dtype, tuple(shape)))
        return layout

    def _read_array(
        self, name: str, dtype: str, shape: tuple[int, ...], request_id: int | None
    ) -> np.ndarray:
        # One allocation per array, read in place: arrays are writable, aligned and own their memory.
        array = np.empty(shape, dtype=DTYPES[dtype])
        if array.nbytes:
            view = array.reshape(-1).data.cast("B")
            got = self._read_into(view)
            if got < array.nbytes:
                raise FrameError(f"stream ended inside array '{name}': got {got} of {array.nbytes} bytes")
        pad = _aligned(array.nbytes) - array.nbytes
        if pad:
            self._read_exact(pad, "padding")
        return array


# ---------------------------------------------------------------------------------------------------------
# Client


class BackendError(RuntimeError):
    """The backend answered a request with an error, or is gone."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.code = code
        self.message = message
        self.request_id = request_id


ProgressCallback = Callable[[str, float], None]


class Pending:
    """A request in flight. ``wait()`` returns its reply or raises ``BackendError``."""

    def __init__(
        self, owner: BackendProcess, request_id: int, kind: str, on_progress: ProgressCallback | None
    ) -> None:
        self.id = request_id
        self.type = kind
        self.progress: tuple[str, float] | None = None  # latest (stage, fraction)
        self._owner = owner
        self._on_progress = on_progress
        self._finished = threading.Event()
        self._reply: Message | None = None
        self._error: BackendError | None = None

    def done(self) -> bool:
        return self._finished.is_set()

    def wait(self, timeout: float | None = None) -> Message:
        """Block until the reply arrives; TimeoutError after ``timeout`` seconds."""
        if not self._finished.wait(timeout):
            raise TimeoutError(f"'{self.type}' request {self.id} got no reply within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._reply is not None
        return self._reply

    def cancel(self) -> None:
        """Ask the backend to stop this request (it then ends with a ``cancelled`` error)."""
        if not self.done():
            self._owner.cancel(self.id)

    def _progress(self, stage: str, fraction: float) -> None:
        self.progress = (stage, fraction)
        if self._on_progress is not None:
            self._on_progress(stage, fraction)

    def _finish(self, reply: Message | None, error: BackendError | None) -> None:
        self._reply, self._error = reply, error
        self._finished.set()


class BackendProcess:
    """Runs ``python -m backend serve`` as a child process and talks to it over its pipes.

    Spawning sends ``hello`` at once and returns without waiting; ``wait_ready()`` blocks until
    the backend answers. A reader thread decodes replies; progress callbacks run on that thread,
    so a GUI must hand them to its own thread. The backend's stderr is kept (its last lines explain
    an unexpected exit) and, with ``log_path``, appended to that file.
    Closing stdin ends the backend, so the child never outlives this object's process.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        log_path: str | Path | None = None,
        client_name: str = "",
        max_payload_bytes: int = 1 << 34,
    ) -> None:
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)  # no console window pops up on Windows
        self._proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            cwd=cwd,
            env=None if env is None else dict(env),
            creationflags=flags,
        )
        assert (
            self._proc.stdin is not None and self._proc.stdout is not None and self._proc.stderr is not None
        )
        self._stdin = self._proc.stdin
        self._lock = threading.Lock()  # guards _pending and _closed
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, Pending] = {}
        self._closed: BackendError | None = None
        self._ready = threading.Event()
        self.ready: Message | None = None  # the ``ready`` message once it arrived
        self.errors: list[BackendError] = []  # errors that belong to no request
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._log_path = Path(log_path) if log_path is not None else None
        self._reader = FrameReader(cast(_Readable, self._proc.stdout), BACKEND_MESSAGES, max_payload_bytes)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, name="backend-stderr", daemon=True)
        self._stderr_thread.start()
        self._reader_thread = threading.Thread(target=self._read_loop, name="backend-reader", daemon=True)
        self._reader_thread.start()
        hello: dict[str, Any] = {"protocol_version": PROTOCOL_VERSION}
        if client_name:
            hello["client"] = client_name
        with contextlib.suppress(BackendError):  # the reader thread records why the process is gone
            self._send(Message("hello", None, hello))

    # -- lifecycle ---------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self._proc.pid

    def is_ready(self) -> bool:
        return self._ready.is_set() and self.ready is not None

    def wait_ready(self, timeout: float | None = None) -> Message:
        """Block until ``ready``; raise ``BackendError`` if the backend refused or died."""
        if not self._ready.wait(timeout):
            raise TimeoutError(f"backend (pid {self.pid}) did not become ready within {timeout} s")
        if self.ready is None:
            raise self._closed or BackendError(BACKEND_EXITED, "backend closed before it was ready")
        return self.ready

    @property
    def failure(self) -> BackendError | None:
        """Why the connection ended (a fatal error, or the process exiting); None while it is open."""
        return self._closed

    def alive(self) -> bool:
        return self._proc.poll() is None and self._closed is None

    def stderr_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])

    def close(self, timeout: float = 5.0) -> int:
        """Ask the backend to shut down, wait ``timeout`` s, then kill it. Returns the exit status."""
        if self._proc.poll() is None:
            with contextlib.suppress(BackendError):
                self._send(Message("shutdown"))
            with contextlib.suppress(OSError):
                self._stdin.close()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._reader_thread.join(timeout)
        self._stderr_thread.join(timeout)
        return int(self._proc.returncode)

    def kill(self) -> None:
        """Stop the backend at once (frees all of its memory, GPU memory included)."""
        if self._proc.poll() is None:
            self._proc.kill()
        self._proc.wait()

    def __enter__(self) -> BackendProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- requests ----------------------------------------------------------------------------------------
    def request(
        self,
        kind: str,
        fields: Mapping[str, Any] | None = None,
        arrays: Mapping[str, np.ndarray] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Pending:
        """Send one request with a fresh id; the reply arrives on the returned ``Pending``."""
        request_id = next(self._ids)
        message = Message(kind, request_id, dict(fields or {}), dict(arrays or {}))
        parts = encode(message)  # a bad request fails here, in the caller, before anything is sent
        pending = Pending(self, request_id, kind, on_progress)
        with self._lock:
            if self._closed is not None:
                raise self._closed
            self._pending[request_id] = pending
        try:
            self._write(parts)
        except BackendError as e:
            with self._lock:
                self._pending.pop(request_id, None)
            raise e
        return pending

    def reconstruct(
        self,
        *,
        model: str | None = None,
        kind: str | None = None,
        points: np.ndarray | None = None,
        voxels: np.ndarray | None = None,
        bounds: np.ndarray | None = None,
        image: np.ndarray | None = None,
        options: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Pending:
        given = {"points": points, "voxels": voxels, "bounds": bounds, "image": image}
        arrays = {name: a for name, a in given.items() if a is not None}
        fields = {"model": model, "kind": kind, "options": dict(options or {})}
        return self.request("reconstruct", fields, arrays, on_progress)

    def extract(self, field_id: str, tau: float, on_progress: ProgressCallback | None = None) -> Pending:
        return self.request("extract", {"field_id": field_id, "tau": float(tau)}, None, on_progress)

    def sample(
        self,
        model: str | None = None,
        seed: int = 0,
        options: Mapping[str, Any] | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Pending:
        return self.request(
            "sample", {"model": model, "seed": seed, "options": dict(options or {})}, None, on_progress
        )

    def release(self, field_id: str | None = None) -> Pending:
        """Free one cached field, or (None) every cached field and the device's cached memory."""
        return self.request("release", {"field_id": field_id})

    def echo(self, data: Any = None, arrays: Mapping[str, np.ndarray] | None = None) -> Pending:
        """A no-op round trip through the backend's work queue (ordered after earlier requests)."""
        return self.request("echo", {"data": data}, arrays)

    def cancel(self, request_id: int) -> None:
        with contextlib.suppress(BackendError):  # the process is gone: every request already failed
            self._send(Message("cancel", request_id))

    def send_raw(self, data: bytes | Sequence[bytes | memoryview]) -> None:
        """Write bytes as they are (for tests of the backend's handling of malformed input)."""
        self._write([data] if isinstance(data, bytes | bytearray) else data)

    # -- plumbing ----------------------------------------------------------------------------------------
    def _send(self, message: Message) -> None:
        self._write(encode(message))

    def _write(self, parts: Iterable[bytes | memoryview]) -> None:
        try:
            with self._write_lock:
                write_parts(self._stdin, parts)
        except (OSError, ValueError) as e:  # ValueError: the pipe was closed on this side
            raise self._closed or BackendError(BACKEND_EXITED, f"cannot write to the backend: {e}") from None

    def _drain_stderr(self) -> None:
        assert self._proc.stderr is not None
        log = self._log_path.open("a", encoding="utf-8") if self._log_path else None
        try:
            for raw in iter(self._proc.stderr.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self._stderr_tail.append(line)
                if log is not None:
                    log.write(line + "\n")
                    log.flush()
        finally:
            if log is not None:
                log.close()

    def _read_loop(self) -> None:
        fatal: BackendError | None = None
        try:
            while True:
                try:
                    message = self._reader.read()
                except MessageError as e:
                    self._fail_one(BackendError(e.code, str(e), e.request_id))
                    continue
                if message is None:
                    break
                if not self._dispatch(message):
                    break
        except FrameError as e:
            fatal = BackendError(e.code, f"unreadable reply from the backend: {e}")
            self.kill()
        except OSError as e:
            fatal = BackendError(BACKEND_EXITED, f"lost the backend's output: {e}")
        self._shut(fatal)

    def _dispatch(self, message: Message) -> bool:
        """Route one reply; False when the conversation is over."""
        if message.type == "ready":
            if message.fields["protocol_version"] != PROTOCOL_VERSION:
                self._shut(BackendError(VERSION_MISMATCH, "backend answered with another protocol version"))
                return False
            self.ready = message
            self._ready.set()
            return True
        if message.type == "bye":
            return True
        if message.type == "progress":
            with self._lock:
                pending = self._pending.get(message.id or 0)
            if pending is not None:
                pending._progress(message.fields["stage"], float(message.fields["fraction"]))
            return True
        if message.type == "error":
            error = BackendError(message.fields["code"], message.fields["message"], message.id)
            if message.fields.get("fatal") or not self._ready.is_set():
                self._shut(error)
                return True  # read on: the backend may still flush stderr and exit
            self._fail_one(error)
            return True
        with self._lock:
            pending = self._pending.pop(message.id or 0, None)
        if pending is not None:
            pending._finish(message, None)
        return True

    def _fail_one(self, error: BackendError) -> None:
        with self._lock:
            pending = self._pending.pop(error.request_id, None) if error.request_id is not None else None
        if pending is None:
            self.errors.append(error)
        else:
            pending._finish(None, error)

    def _shut(self, error: BackendError | None) -> None:
        """Mark the connection closed and fail every request still waiting."""
        if error is None:
            try:
                status: int | None = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                status = None
            self._stderr_thread.join(timeout=1)  # its last lines usually say why
            last = next((line for line in reversed(self._stderr_tail) if line.strip()), "")
            detail = f": {last}" if last else ""
            error = BackendError(BACKEND_EXITED, f"backend exited (status {status}){detail}")
        with self._lock:
            if self._closed is None:
                self._closed = error
            pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            p._finish(None, self._closed)
        self._ready.set()  # wakes wait_ready(), which raises when no ``ready`` came
