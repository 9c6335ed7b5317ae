"""The metadata header of a model file, read with the standard library (no torch, no weights).

A model is a safetensors file: a little-endian u64 length, then a JSON header whose
``__metadata__`` carries this project's format tag and version and the model's metadata (name,
kind, tau, config, ...) as a JSON string. The backend and the add-on both list models from it, so
the format checks live here once; each side words its own messages from the error's type.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

FORMAT = "occupancy-reconstruct"
FORMAT_VERSION = 1
# a model file's JSON header (the shipped ones have 5 to 21 KB): parsing the largest costs at most a
# few hundred MB; the backend's loader and the add-on's model list both refuse a bigger one
MAX_HEADER_BYTES = 16 * 2**20
DEFAULT_TRAINING_POINTS = 300  # the original's point-cloud input, for models that do not say


class ModelHeaderError(ValueError):
    """The file cannot be used as a model; the subclass says why."""


class NotSafetensorsError(ModelHeaderError):
    """The file has no readable safetensors header."""


class ForeignModelError(ModelHeaderError):
    """A safetensors file without this project's format tag."""


class FormatVersionError(ModelHeaderError):
    """A model written in another version of the format."""

    def __init__(self, version: object) -> None:
        super().__init__(f"model format version {version}, this build reads {FORMAT_VERSION}")
        self.version = version


class BadMetadataError(ModelHeaderError):
    """The format tag is right, but the model's metadata is not a JSON object."""


def read_model_header(path: str | Path) -> dict[str, Any]:
    """The model's metadata (a JSON object). OSError when the file cannot be opened."""
    with Path(path).open("rb") as stream:
        try:
            size = int.from_bytes(stream.read(8), "little")
            if not 0 < size <= MAX_HEADER_BYTES:
                limit = f"model files have up to {MAX_HEADER_BYTES:,}"
                raise ValueError(f"it declares a header of {size:,} bytes; {limit}")
            header = json.loads(stream.read(size))
        except ValueError as error:  # UnicodeDecodeError and JSONDecodeError included
            raise NotSafetensorsError(str(error)) from None
    info = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise ForeignModelError(f"no '{FORMAT}' format tag")
    if info.get("format_version") != str(FORMAT_VERSION):
        raise FormatVersionError(info.get("format_version"))
    try:
        meta = json.loads(info["meta"])
    except (KeyError, TypeError, ValueError) as error:
        raise BadMetadataError(str(error)) from None
    if not isinstance(meta, dict):
        raise BadMetadataError(f"the metadata must be a JSON object, got {type(meta).__name__}")
    return meta


def point_budget(meta: dict[str, Any]) -> int | None:
    """How many observed points a point-cloud model takes: its fixed training size (older models,
    given a subsample of that size), or None for models trained on clouds of any density, which
    take every point. Both sides ask: the engine subsamples, the add-on's panel says so."""
    training = meta.get("training")
    data = training.get("data") if isinstance(training, dict) else None
    data = data if isinstance(data, dict) else {}
    n, n_max = data.get("n_points"), data.get("n_points_max")
    if isinstance(n_max, int) and n_max > 0:
        return None
    return n if isinstance(n, int) and n > 0 else DEFAULT_TRAINING_POINTS


def automatic_points(meta: dict[str, Any]) -> tuple[int, int] | None:
    """The cloud sizes [low, high) for which Automatic takes this point-cloud model ahead of its
    kind's general model, or None (a general model). A sparse model that beats the dense one on
    few points says so here, from its own measurements (its card). ValueError when malformed."""
    span = meta.get("automatic_points")
    if span is None:
        return None
    if not (
        isinstance(span, list)
        and len(span) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        and 0 <= span[0] < span[1]
    ):
        raise ValueError(f"'automatic_points' must be [low, high) with 0 <= low < high, got {span!r}")
    return int(span[0]), int(span[1])


class _Offered(Protocol):
    @property
    def kind(self) -> str: ...

    @property
    def automatic_points(self) -> tuple[int, int] | None: ...


M = TypeVar("M", bound=_Offered)


# the model kinds that take an input kind, best first: a views model reads one plain picture as a
# single view through the image models' camera, and on 100 held-out user-style pictures it scores
# IoU 0.368 and silhouette IoU 0.810 against the image model's 0.322 and 0.651
# (bench/single_picture.py), so Automatic prefers it
MODEL_KINDS_FOR_INPUT = {"image": ("views", "image")}


def takes(model_kind: str, input_kind: str) -> bool:
    """Whether a model of ``model_kind`` can reconstruct an input of ``input_kind``."""
    return model_kind in MODEL_KINDS_FOR_INPUT.get(input_kind, (input_kind,))


def pick_automatic(models: Sequence[M], kind: str, count: int | None = None) -> M | None:
    """Automatic's model for an input of ``kind`` with ``count`` points (None: not a cloud).

    Of the best model kind installed for the input (``MODEL_KINDS_FOR_INPUT``): the first model,
    in listing order, whose ``automatic_points`` holds ``count``; otherwise the first general model
    (one that names no range); otherwise the first model of that kind. The backend's CLI and the
    add-on both choose with this, so they agree.
    """
    for model_kind in MODEL_KINDS_FOR_INPUT.get(kind, (kind,)):
        found = _pick_of_kind([m for m in models if m.kind == model_kind], count)
        if found is not None:
            return found
    return None


def _pick_of_kind(of_kind: Sequence[M], count: int | None) -> M | None:
    if count is not None:
        for m in of_kind:
            span = m.automatic_points
            if span is not None and span[0] <= count < span[1]:
                return m
    general = [m for m in of_kind if m.automatic_points is None]
    return next(iter(general or of_kind), None)
