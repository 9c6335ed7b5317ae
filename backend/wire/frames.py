"""The frame format of the wire protocol: encoding messages and reading them back from a stream.

Frames (integers little-endian)::

    prefix   20 bytes  magic b"OCCW", protocol version u16, flags u16 (= 0), header size u32, payload size u64
    header   a UTF-8 JSON object:
             {"type": ..., "id": ..., <fields>, "arrays": [{"name", "dtype", "shape"}, ...]}
    payload  the arrays' raw bytes in header order, C order, little-endian, each padded to 8 bytes

There is no pickle anywhere. A frame whose prefix is wrong (magic, version, flags, header size),
whose prefix declares a payload beyond the reader's limit, or that ends early cannot be skipped, so
the stream is lost: ``FrameError``. (Skipping an oversized payload would mean reading it: a prefix
that claims 2^62 bytes would keep the reader busy for ever.) A frame with a sound prefix but a bad
header or inconsistent arrays is skipped whole and reported as a ``MessageError``; the next frame is
read normally.

Memory follows what arrives, not what a header declares: an array larger than ``READ_CHUNK`` is read
into a buffer that grows as its bytes come in, so a frame that declares a large payload and then
stalls or ends costs little.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Collection, Iterable, Mapping
from typing import IO, Any, Protocol

import numpy as np

from .schemas import (
    BAD_ARRAY,
    BAD_FRAME,
    BAD_MESSAGE,
    OUT_OF_MEMORY,
    PAYLOAD_TOO_LARGE,
    REQUIRED_ARRAYS,
    RESERVED_FIELDS,
    SCHEMAS,
    UNKNOWN_MESSAGE,
    VERSION_MISMATCH,
    Message,
    MessageError,
    MessageSpec,
    check_array,
    check_fields,
    check_id,
    is_kind,
    validate,
)

PROTOCOL_VERSION = 1
MAGIC = b"OCCW"
_PREFIX = struct.Struct("<4sHHIQ")
PREFIX_SIZE = _PREFIX.size
MAX_HEADER_BYTES = 1 << 20  # headers are small JSON; a bigger one means a corrupt stream
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30
ALIGN = 8  # every array starts on an 8-byte boundary of the payload
READ_CHUNK = 1 << 24  # a larger array's buffer grows (at most doubling) only as its bytes arrive
MAX_NDIM = 4
MAX_ARRAYS = 8

# Only these dtypes travel; the name in the header always means little-endian.
DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("bool", "uint8", "int32", "int64", "float16", "float32", "float64")
}


class FrameError(Exception):
    """The byte stream cannot be read any further (bad prefix, or it ended inside a frame)."""

    def __init__(self, message: str, code: str = BAD_FRAME) -> None:
        super().__init__(message)
        self.code = code


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
    clash = [k for k in message.fields if k in RESERVED_FIELDS]
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


class Readable(Protocol):
    """What ``FrameReader`` reads from: a binary stream with ``readinto``."""

    def readinto(self, buffer: Any, /) -> int | None: ...


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class FrameReader:
    """Reads and validates frames from a binary stream (a pipe, a file, ``io.BytesIO``).

    ``accept`` names the message types this side may receive; anything else is a ``MessageError``.
    """

    def __init__(
        self,
        stream: Readable,
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
        if payload_size > self.max_payload_bytes:
            raise FrameError(
                f"frame payload of {payload_size} bytes exceeds the limit of {self.max_payload_bytes} bytes",
                PAYLOAD_TOO_LARGE,
            )
        raw_header = self._read_exact(header_size, "header")
        try:
            header = self._parse_header(raw_header)
        except MessageError:
            self._skip(payload_size)
            raise
        except MemoryError:  # the header is read whole, so the frame can still be skipped
            self._skip(payload_size)
            raise MessageError(OUT_OF_MEMORY, "out of memory while parsing a frame header") from None
        request_id = header.get("id") if is_kind(header.get("id"), "int") else None
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
                message.arrays[name] = self._read_array(name, dtype, shape)
            except MemoryError:  # this array's bytes were consumed; skip the arrays after it
                rest = layout[index + 1 :]
                self._skip(sum(_aligned(math.prod(s) * DTYPES[d].itemsize) for _, d, s in rest))
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
        request_id = raw_id if is_kind(raw_id, "int") else None
        arrays = header.pop("arrays", [])
        if not isinstance(kind, str):
            raise MessageError(BAD_MESSAGE, "frame header needs a string 'type'", request_id)
        spec = SCHEMAS.get(kind)
        if spec is None or kind not in self._accept:
            raise MessageError(UNKNOWN_MESSAGE, f"unknown message type {kind!r}", request_id)
        request_id = check_id(spec, kind, raw_id)
        check_fields(spec, kind, header, request_id)
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
        self, spec: MessageSpec, kind: str, arrays: Any, request_id: int | None
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
                or not all(is_kind(s, "int") and 0 <= s < 2**40 for s in shape)
            ):
                raise MessageError(
                    BAD_ARRAY,
                    f"array '{name}' shape must be up to {MAX_NDIM} sizes >= 0, got {shape!r:.80}",
                    request_id,
                )
            check_array(spec, kind, name, dtype, tuple(shape), request_id)
            layout.append((name, dtype, tuple(shape)))
        return layout

    def _read_array(self, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
        """Read one array and its padding. On ``MemoryError`` the rest of its bytes are skipped
        first, so the stream stays in step."""
        nbytes = math.prod(shape) * DTYPES[dtype].itemsize
        pad = _aligned(nbytes) - nbytes
        got = 0
        try:
            # Read in place. A small array is one allocation that owns its memory; a large one
            # is read into a buffer that grows (realloc, usually without a copy) as its bytes
            # arrive, never holding more than twice what came.
            array = np.empty(shape, DTYPES[dtype]) if nbytes <= READ_CHUNK else None
            buffer = np.empty(READ_CHUNK, np.uint8) if array is None else array.reshape(-1).view(np.uint8)
            while True:
                got += self._read_into(buffer[got:].data.cast("B"))
                if got < buffer.size:
                    raise FrameError(f"stream ended inside array '{name}': got {got} of {nbytes} bytes")
                if got == nbytes:
                    break
                buffer.resize(min(2 * buffer.size, nbytes), refcheck=False)
        except MemoryError:
            self._skip(nbytes - got + pad)
            raise
        if pad:
            self._read_exact(pad, "padding")
        return array if array is not None else buffer.view(DTYPES[dtype]).reshape(shape)
