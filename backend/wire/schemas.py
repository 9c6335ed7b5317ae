"""The messages of the wire protocol: their fields and arrays, the error codes, and validation.

Conversation: the client sends ``hello``, the backend answers ``ready`` (or ``error`` and exits).
Requests carry an integer ``id`` chosen by the client; every request that has a reply gets exactly
one ``result``/``released``/``echo`` or one ``error`` with that id, after any number of
``progress`` messages. ``cancel`` and ``shutdown`` have no reply of their own: a cancelled request
ends with an ``error`` whose code is ``cancelled``, and the backend answers ``shutdown`` with ``bye``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_ID = 2**53  # ids must survive a round trip through any JSON implementation

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
NO_ANSWER = "no_answer"  # raised by the client only: the backend fell silent, so it was stopped


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


@dataclass(frozen=True)
class FieldRule:
    kinds: tuple[str, ...]  # JSON kinds accepted: int, float, str, bool, dict, list, null, any
    required: bool = False


@dataclass(frozen=True)
class ArrayRule:
    dtypes: tuple[str, ...]
    ndim: int
    last: tuple[int, ...] = ()  # allowed sizes of the last axis (empty: any)


@dataclass(frozen=True)
class MessageSpec:
    sender: str  # "client", "backend" or "both"
    id: str  # "required", "optional" or "absent"
    fields: Mapping[str, FieldRule] = field(default_factory=dict)
    arrays: Mapping[str, ArrayRule] | None = field(default_factory=dict)  # None: any names (echo)


_FLOATS = ("float32", "float64")
SCHEMAS: dict[str, MessageSpec] = {
    # client -> backend
    "hello": MessageSpec(
        "client",
        "absent",
        {"protocol_version": FieldRule(("int",), True), "client": FieldRule(("str",))},
    ),
    "reconstruct": MessageSpec(
        "client",
        "required",
        {
            "model": FieldRule(("str", "null")),
            "kind": FieldRule(("str", "null")),
            "options": FieldRule(("dict",)),
        },
        {
            "points": ArrayRule(_FLOATS, 2, (3,)),
            "voxels": ArrayRule(("bool", "uint8", *_FLOATS), 3),
            "bounds": ArrayRule(_FLOATS, 2, (3,)),
            "image": ArrayRule(("uint8", *_FLOATS), 3, (3, 4)),
            "views": ArrayRule(("uint8", *_FLOATS), 4, (3, 4)),  # (V, H, W, C): pictures of one object
            "cameras": ArrayRule(_FLOATS, 2, (15,)),  # one row per view (backend/engine/views.py)
        },
    ),
    "extract": MessageSpec(
        "client", "required", {"field_id": FieldRule(("str",), True), "tau": FieldRule(("float",), True)}
    ),
    "sample": MessageSpec(
        "client",
        "required",
        {"model": FieldRule(("str", "null")), "seed": FieldRule(("int",)), "options": FieldRule(("dict",))},
    ),
    "release": MessageSpec("client", "required", {"field_id": FieldRule(("str", "null"))}),  # null: all
    "echo": MessageSpec("both", "required", {"data": FieldRule(("any",))}, None),  # a no-op round trip
    "cancel": MessageSpec("client", "required"),  # id: the request to cancel
    "shutdown": MessageSpec("client", "absent"),
    # backend -> client
    "ready": MessageSpec(
        "backend",
        "absent",
        {
            "protocol_version": FieldRule(("int",), True),
            "backend_version": FieldRule(("str",), True),
            "device": FieldRule(("str",), True),
            "models": FieldRule(("list",), True),  # [{"name", "kind", "tau"[, "automatic_points"]}, ...]
            "pid": FieldRule(("int",), True),
            "max_payload_bytes": FieldRule(("int",), True),
        },
    ),
    "progress": MessageSpec(
        "backend", "required", {"stage": FieldRule(("str",), True), "fraction": FieldRule(("float",), True)}
    ),
    "result": MessageSpec(
        "backend",
        "required",
        {
            "tau": FieldRule(("float",), True),
            "timings": FieldRule(("dict",)),
            "warnings": FieldRule(("list",)),
            "field_id": FieldRule(("str", "null")),
        },
        {
            "vertices": ArrayRule(("float32",), 2, (3,)),
            "faces": ArrayRule(("int32",), 2, (3,)),
            "normals": ArrayRule(("float32",), 2, (3,)),
        },
    ),
    "released": MessageSpec("backend", "required", {"field_id": FieldRule(("str", "null"))}),
    "error": MessageSpec(
        "backend",
        "optional",
        {
            "code": FieldRule(("str",), True),
            "message": FieldRule(("str",), True),
            "fatal": FieldRule(("bool",)),
        },
    ),
    "bye": MessageSpec("backend", "absent"),
}
CLIENT_MESSAGES = frozenset(name for name, spec in SCHEMAS.items() if spec.sender in ("client", "both"))
BACKEND_MESSAGES = frozenset(name for name, spec in SCHEMAS.items() if spec.sender in ("backend", "both"))
REQUIRED_ARRAYS = {"result": ("vertices", "faces")}
RESERVED_FIELDS = ("type", "id", "arrays")  # header keys that are not message fields


def is_kind(value: Any, kind: str) -> bool:
    """Whether a JSON value is of ``kind`` (see ``FieldRule.kinds``)."""
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


def check_id(spec: MessageSpec, kind: str, request_id: Any) -> int | None:
    """The message's id, or a ``MessageError`` when it is missing, unwanted or out of range."""
    if request_id is None:
        if spec.id == "required":
            raise MessageError(BAD_MESSAGE, f"'{kind}' needs an integer 'id'")
        return None
    if spec.id == "absent":
        raise MessageError(BAD_MESSAGE, f"'{kind}' takes no 'id'")
    if not is_kind(request_id, "int") or not 0 <= request_id <= MAX_ID:
        raise MessageError(BAD_MESSAGE, f"'id' must be an integer in [0, 2^53], got {request_id!r}")
    return int(request_id)


def check_fields(spec: MessageSpec, kind: str, fields: Mapping[str, Any], request_id: int | None) -> None:
    """A ``MessageError`` naming the first unknown, missing or mistyped field."""
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
        if not any(is_kind(fields[name], k) for k in rule.kinds):
            expected = " or ".join(rule.kinds)
            raise MessageError(
                BAD_MESSAGE,
                f"field '{name}' of '{kind}' must be {expected}, got {fields[name]!r:.80}",
                request_id,
            )


def check_array(
    spec: MessageSpec, kind: str, name: str, dtype: str, shape: tuple[int, ...], request_id: int | None
) -> None:
    """A ``MessageError`` unless ``kind`` carries an array ``name`` of this dtype and shape."""
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
    check_id(spec, message.type, message.id)
    check_fields(spec, message.type, message.fields, message.id)
    for name, array in message.arrays.items():
        check_array(spec, message.type, name, array.dtype.name, array.shape, message.id)
    missing = [n for n in REQUIRED_ARRAYS.get(message.type, ()) if n not in message.arrays]
    if missing:
        raise MessageError(BAD_ARRAY, f"'{message.type}' needs the array(s) {', '.join(missing)}", message.id)
