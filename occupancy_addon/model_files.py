"""Model files the add-on can offer, read without torch.

A model is a ``.safetensors`` file whose header carries the backend's metadata (name, kind, tau).
The backend's own header reader (``backend/wire/model_header.py``, standard library only) reads
it, format version check included; the weights themselves are only ever loaded by the backend.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from .backend_link import load_protocol

KINDS: tuple[str, ...] = tuple(load_protocol().MODEL_KINDS)
KIND_LABELS = {
    "pointcloud": "point cloud",
    "voxels": "voxels",
    "image": "image",
    "views": "reference views",
    "unconditional": "unconditional",
}
WEIGHTS_ENV_VAR = "OCC_WEIGHTS_DIR"


class ModelFileError(ValueError):
    """A file is missing or is not an Occupancy Reconstruct model."""


@dataclass(frozen=True)
class ModelFile:
    """One model: ``name`` is what the backend is asked for (a shipped name or a file path)."""

    name: str
    kind: str
    tau: float
    path: Path
    shipped: bool
    automatic_points: tuple[int, int] | None = None  # cloud sizes Automatic takes it for

    @property
    def label(self) -> str:
        title = self.path.stem if not self.shipped else self.name
        return f"{title} ({KIND_LABELS.get(self.kind, self.kind)})"


def read_model_file(path: Path, shipped: bool = False) -> ModelFile:
    """The metadata of one model file; ModelFileError explains what is wrong with it."""
    if not path.is_file():
        raise ModelFileError(f"model file not found: {path}")
    wire = load_protocol()
    try:
        meta = wire.read_model_header(path)
        kind, tau = str(meta["kind"]), float(meta["tau"])
        span = wire.automatic_points(meta)
    except wire.ForeignModelError:
        raise ModelFileError(f"{path.name} is not an Occupancy Reconstruct model file") from None
    except wire.FormatVersionError as error:
        raise ModelFileError(f"{path.name} has {error}") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelFileError(f"{path.name} is not a readable model file ({error})") from None
    if kind not in KINDS:
        raise ModelFileError(f"{path.name} is a model of unknown kind {kind!r}")
    return ModelFile(path.stem if shipped else str(path), kind, tau, path, shipped, span)


def points_used(model: ModelFile, count: int) -> int:
    """How many of ``count`` points the backend feeds ``model``: all of them for a model of any
    density, else its training size (the backend subsamples). Read from the file's header."""
    try:
        budget = _point_budget(model.path, model.path.stat().st_mtime)
    except OSError:
        return count
    return count if budget is None else min(count, budget)


@functools.lru_cache(maxsize=32)
def _point_budget(path: Path, mtime: float) -> int | None:  # mtime: a rewritten file is read again
    wire = load_protocol()
    try:
        return wire.point_budget(wire.read_model_header(path))
    except (OSError, ValueError):
        return None


def shipped_weights_dir(backend_root: Path, override: str = "") -> Path:
    """The folder the backend reads its named models from: the override (preference, then the
    ``OCC_WEIGHTS_DIR`` variable) or ``backend/weights``."""
    chosen = override.strip() or os.environ.get(WEIGHTS_ENV_VAR, "").strip()
    if chosen:
        return Path(chosen).expanduser()
    return backend_root / "backend" / "weights"


def list_models(weights_dir: Path, checkpoints: list[str]) -> tuple[list[ModelFile], list[str]]:
    """Shipped models of ``weights_dir`` plus the user's checkpoint files.

    Returns the readable models and one message per file that could not be read.
    """
    # by name (not file name): a kind's own model comes before its variants, so Automatic takes it
    paths = sorted(weights_dir.glob("*.safetensors"), key=lambda p: p.stem) if weights_dir.is_dir() else []
    shipped, problems = _read_all([str(p) for p in paths], shipped=True)
    users, user_problems = list_checkpoints(checkpoints)
    return shipped + users, problems + user_problems


def list_checkpoints(checkpoints: list[str]) -> tuple[list[ModelFile], list[str]]:
    """The user's checkpoint files (blank entries skipped) and a message per unreadable one."""
    return _read_all([text for text in checkpoints if text.strip()], shipped=False)


def from_ready(weights_dir: Path, reported: list[dict[str, object]]) -> list[ModelFile]:
    """The shipped models as the running backend reported them in its ``ready`` message."""
    wire = load_protocol()
    models = []
    for entry in reported:
        name, kind, tau = str(entry.get("name")), str(entry.get("kind")), entry.get("tau")
        try:
            span = wire.automatic_points(entry)
        except ValueError:
            span = None  # a malformed range only costs the automatic choice, not the model
        if kind in KINDS and isinstance(tau, int | float):
            path = weights_dir / f"{name}.safetensors"
            models.append(ModelFile(name, kind, float(tau), path, True, span))
    return models


def _read_all(paths: list[str], shipped: bool) -> tuple[list[ModelFile], list[str]]:
    found: list[ModelFile] = []
    problems: list[str] = []
    for text in paths:
        try:
            found.append(read_model_file(Path(text).expanduser(), shipped=shipped))
        except ModelFileError as error:
            problems.append(str(error))
    return found, problems


def pick_model(models: list[ModelFile], choice: str, kind: str, count: int | None = None) -> ModelFile:
    """The model to use for ``kind``: ``choice`` (a name or path), or when it is empty Automatic's
    model for a cloud of ``count`` points (the backend's rule, ``wire.pick_automatic``).

    Raises ModelFileError with a message that says what is missing and how to add it.
    """
    if choice:
        found = next((m for m in models if choice in (m.name, str(m.path))), None)
        if found is None:
            path = Path(choice).expanduser()
            if path.suffix == ".safetensors" or os.sep in choice:
                found = read_model_file(path)  # raises "model file not found"
            else:
                names = ", ".join(m.name for m in models) or "none"
                raise ModelFileError(f"no model named {choice!r} (available: {names})")
        if not load_protocol().takes(found.kind, kind):
            raise ModelFileError(
                f"model {found.label} takes {KIND_LABELS[found.kind]} input, not {KIND_LABELS[kind]}"
            )
        return found
    found = load_protocol().pick_automatic(models, kind, count)
    if found is None:
        raise ModelFileError(
            f"no {KIND_LABELS[kind]} model is installed: add a checkpoint file in the add-on "
            "preferences or put the shipped weights into backend/weights"
        )
    return found
