"""Turning protocol messages into engine arguments and engine results or failures into messages."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..engine.types import Cancelled, InputError, MeshResult, ModelInfo, Observation, ReconstructOptions
from ..wire import schemas
from ..wire.constants import KIND_ARRAYS
from ..wire.model_header import pick_automatic, takes
from ..wire.schemas import Message


class RequestError(Exception):
    """A request the backend refuses before the engine runs; ``code`` is a protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _accepts(hint: Any, value: Any) -> bool:
    """Whether a JSON value fits a simple type hint (bool, int, float, str, and unions with None)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))


def options_from_fields(values: Mapping[str, Any]) -> ReconstructOptions:
    """Build ``ReconstructOptions`` from a JSON object, naming any unknown or mistyped option.

    The option names and types come from the dataclass itself, so the engine's definition stays
    the only one.
    """
    hints = typing.get_type_hints(ReconstructOptions)
    known = [f.name for f in dataclasses.fields(ReconstructOptions)]
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise RequestError(
            schemas.BAD_MESSAGE, f"unknown option(s): {', '.join(unknown)}; known: {', '.join(known)}"
        )
    for name, value in values.items():
        if not _accepts(hints[name], value):
            expected = _type_name(hints[name])
            raise RequestError(schemas.BAD_MESSAGE, f"option '{name}' must be {expected}, got {value!r:.80}")
    converted: dict[str, Any] = {
        k: float(v) if hints[k] in (float, float | None) and v is not None else v for k, v in values.items()
    }
    return ReconstructOptions(**converted)


def choose_model(models: Sequence[ModelInfo], name: str | None, kind: str | None) -> ModelInfo:
    """The model called ``name``, or else Automatic's for an input of ``kind`` (``wire.pick_automatic``);
    both given: the model must take that input."""
    if name is None and kind is None:
        raise RequestError(schemas.BAD_MESSAGE, "give a 'model' name or a 'kind'")
    if name is not None:
        found = next((m for m in models if m.name == name), None)
        if found is None and name.endswith(".safetensors"):
            found = _model_file(name)
        if found is None:
            names = ", ".join(m.name for m in models) or "none"
            raise RequestError(schemas.UNKNOWN_MODEL, f"no model named {name!r}; available: {names}")
        if kind is not None and not takes(found.kind, kind):
            raise RequestError(schemas.BAD_INPUT, f"model {name!r} takes {found.kind} input, not {kind}")
        return found
    assert kind is not None
    found = pick_automatic(models, kind)
    if found is None:
        kinds = ", ".join(sorted({m.kind for m in models})) or "none"
        raise RequestError(schemas.UNKNOWN_MODEL, f"no {kind} model is installed; installed kinds: {kinds}")
    return found


def _model_file(path: str) -> ModelInfo:
    """A checkpoint file given by path (a user's own model, next to the shipped ones)."""
    from ..checkpoint import CheckpointError, read_meta

    try:
        meta = read_meta(path)
    except CheckpointError as e:
        raise RequestError(schemas.UNKNOWN_MODEL, str(e)) from None
    return ModelInfo(path, meta.kind, float(meta.tau), path)


def observation_from_arrays(kind: str, arrays: Mapping[str, np.ndarray]) -> Observation:
    """The observation for a ``kind`` model: the arrays of one input it takes (a views model also
    takes one plain 'image'), refusing missing or unrelated arrays."""
    inputs = [k for k, names in KIND_ARRAYS.items() if names and takes(kind, k)]
    if not inputs:
        raise RequestError(schemas.BAD_INPUT, f"a {kind} model does not reconstruct; use 'sample'")
    given = next((k for k in inputs if KIND_ARRAYS[k][0] in arrays), kind if kind in inputs else inputs[0])
    carried = KIND_ARRAYS[given]
    needed, companions = carried[0], carried[1:]
    extra = sorted(set(arrays) - set(carried))
    if needed not in arrays or extra:
        optional = " and ".join(f"'{a}'" for a in companions)
        raise RequestError(
            schemas.BAD_INPUT,
            f"a {kind} model needs the array '{needed}'"
            + (f" (and optionally {optional})" if optional else "")
            + (f", not {', '.join(extra)}" if extra else ""),
        )
    return Observation(**{name: arrays[name] for name in arrays})


def result_message(request_id: int, mesh: MeshResult) -> Message:
    arrays = {
        "vertices": np.ascontiguousarray(mesh.vertices, dtype=np.float32).reshape(-1, 3),
        "faces": np.ascontiguousarray(mesh.faces, dtype=np.int32).reshape(-1, 3),
    }
    if mesh.normals is not None:
        arrays["normals"] = np.ascontiguousarray(mesh.normals, dtype=np.float32).reshape(-1, 3)
    fields = {
        "tau": float(mesh.tau),
        "timings": {str(k): float(v) for k, v in mesh.timings.items()},
        "warnings": [str(w) for w in mesh.warnings],
        "field_id": mesh.field_id,
    }
    return Message("result", request_id, fields, arrays)


def is_out_of_memory(error: BaseException) -> bool:
    """Host or device allocation failures, as numpy, torch's CPU allocator and CUDA report them."""
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def classify(error: BaseException) -> tuple[str, str]:
    """(protocol error code, message) for an exception raised while serving a request."""
    if isinstance(error, RequestError):
        return error.code, str(error)
    if isinstance(error, Cancelled):
        return schemas.CANCELLED, str(error) or "cancelled"
    if isinstance(error, InputError):
        return schemas.BAD_INPUT, str(error)
    if is_out_of_memory(error):
        return schemas.OUT_OF_MEMORY, f"out of memory: {error}"
    return schemas.INTERNAL, f"{type(error).__name__}: {error}"


def error_message(request_id: int | None, code: str, text: str, fatal: bool = False) -> Message:
    fields: dict[str, Any] = {"code": code, "message": text}
    if fatal:
        fields["fatal"] = True
    return Message("error", request_id, fields)
