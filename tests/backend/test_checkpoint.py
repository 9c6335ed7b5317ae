"""Model files: a faithful round trip, and a clear CheckpointError (with nothing written) for bad files."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from backend.checkpoint import (
    FORMAT,
    CheckpointError,
    ModelMeta,
    load_checkpoint,
    read_meta,
    save_weights,
    shipped_models,
)
from backend.config import ModelConfig
from backend.models import OccupancyNetwork, build_model

TINY = {"kind": "pointcloud", "hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16}


def meta(**overrides: Any) -> ModelMeta:
    fields: dict[str, Any] = {"name": "tiny", "kind": "pointcloud", "tau": 0.3, "config": dict(TINY)}
    return ModelMeta(**{**fields, **overrides})


def saved(folder: Path, tiny_model: Callable[..., OccupancyNetwork], half: bool = False) -> Path:
    path = folder / "tiny.safetensors"
    save_weights(path, tiny_model(0, **TINY), meta(metrics={"val_iou": 0.5}), half=half)
    return path


@pytest.mark.parametrize("half", [False, True])
def test_weights_and_metadata_round_trip(
    tmp_path: Path, tiny_model: Callable[..., OccupancyNetwork], half: bool
) -> None:
    path = saved(tmp_path, tiny_model, half)
    model, info = load_checkpoint(path)
    assert not model.training and info.tau == 0.3 and info.metrics == {"val_iou": 0.5}
    reference = tiny_model(0, **TINY)
    p, x = torch.rand(1, 50, 3) - 0.5, torch.rand(1, 30, 3) - 0.5
    with torch.no_grad():
        got = model.decode(p, None, model.encode(x))
        want = reference.decode(p, None, reference.encode(x))
    torch.testing.assert_close(got, want, rtol=0 if not half else 5e-2, atol=0 if not half else 5e-2)
    assert read_meta(path) == info
    assert shipped_models(tmp_path) == {"tiny": path}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.safetensors"]  # no temporary file left


def _header(path: Path, header: dict[str, Any]) -> None:
    """Rewrite the JSON header of a safetensors file, keeping its data."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def _edit_meta(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    info = json.loads(header["__metadata__"]["meta"])
    change(info)
    header["__metadata__"]["meta"] = json.dumps(info)
    _header(path, header)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(info: dict[str, Any]) -> None:
        info[key] = value

    return change


def _set_config(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(info: dict[str, Any]) -> None:
        info["config"][key] = value

    return change


def _nan_weight(path: Path) -> None:
    model, info = load_checkpoint(path)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_weights(path, model, info, half=False)


def _other_size(path: Path) -> None:
    bigger = build_model(ModelConfig(**{**TINY, "hidden": 32}))
    save_weights(path, bigger, meta(), half=False)  # the metadata still says hidden = 16


def _missing_tensor(path: Path) -> None:
    state = {k: v for k, v in build_model(ModelConfig(**TINY)).state_dict().items() if "fc_out" not in k}
    raw = path.read_bytes()
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=header["__metadata__"])


BAD_FILES: list[tuple[str, Callable[[Path], None], str]] = [
    ("empty file", lambda p: p.write_bytes(b""), "is not a safetensors model file"),
    ("random bytes", lambda p: p.write_bytes(bytes(range(256)) * 8), "is not a safetensors model file"),
    ("text", lambda p: p.write_text("hello, I am not a model"), "is not a safetensors model file"),
    ("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "is corrupt"),
    (
        "torch pickle",
        lambda p: torch.save({"model": torch.zeros(3)}, p),
        "is not a safetensors model file",
    ),
    (
        "foreign safetensors",
        lambda p: save_file({"weight": torch.zeros(4, 4)}, str(p)),
        "is not an Occupancy Reconstruct model",
    ),
    (
        "foreign metadata",
        lambda p: save_file({"w": torch.zeros(2)}, str(p), metadata={"format": "pt"}),
        "is not an Occupancy Reconstruct model",
    ),
    (
        "metadata not an object",
        lambda p: _header(p, {"__metadata__": ["format", FORMAT]}),
        "is not an Occupancy Reconstruct model",
    ),
    (
        "newer version",
        lambda p: save_file(
            {"w": torch.zeros(2)}, str(p), metadata={"format": FORMAT, "format_version": "99"}
        ),
        "has model format version 99, this build reads 1",
    ),
    (
        "meta not JSON",
        lambda p: save_file(
            {"w": torch.zeros(2)}, str(p), metadata={"format": FORMAT, "format_version": "1", "meta": "{oops"}
        ),
        "has invalid metadata",
    ),
    ("meta missing a field", lambda p: _edit_meta(p, lambda m: m.pop("tau")), "has invalid metadata"),
    (
        "unknown config key",
        lambda p: _edit_meta(p, _set_config("hiden", 3)),
        r"unknown key\(s\) in \[model\]: hiden",
    ),
    ("invalid config", lambda p: _edit_meta(p, _set_config("hidden", -4)), "model.hidden must be positive"),
    ("kind mismatch", lambda p: _edit_meta(p, _set("kind", "voxels")), "kind 'voxels' but its config says"),
    ("tau above 1", lambda p: _edit_meta(p, _set("tau", 1.5)), "invalid threshold tau=1.5"),
    ("tau NaN", lambda p: _edit_meta(p, _set("tau", float("nan"))), "invalid threshold tau=nan"),
    ("tau a string", lambda p: _edit_meta(p, _set("tau", "0.5")), "invalid threshold tau='0.5'"),
    ("tau a bool", lambda p: _edit_meta(p, _set("tau", True)), "invalid threshold tau=True"),
    ("training not an object", lambda p: _edit_meta(p, _set("training", [1])), "must be objects"),
    (
        "automatic_points reversed",
        lambda p: _edit_meta(p, _set("automatic_points", [500, 0])),
        r"'automatic_points' must be \[low, high\)",
    ),
    ("NaN weights", _nan_weight, "NaN or infinite values in"),
    ("wrong tensor sizes", _other_size, "does not match its config: .* in the file"),
    ("missing tensors", _missing_tensor, r"does not match its config: 'decoder.fc_out.weight' is missing"),
]


@pytest.mark.parametrize(
    ("damage", "message"), [(d, m) for _, d, m in BAD_FILES], ids=[i for i, _, _ in BAD_FILES]
)
def test_bad_model_files_raise_a_clear_error_and_write_nothing(
    tmp_path: Path,
    tiny_model: Callable[..., OccupancyNetwork],
    damage: Callable[[Path], None],
    message: str,
) -> None:
    path = saved(tmp_path, tiny_model)
    damage(path)
    before = {p: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    assert {p: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_missing_file_or_folder_raises_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="model file not found"):
        load_checkpoint(tmp_path / "nothing.safetensors")
    with pytest.raises(CheckpointError, match="model file not found"):
        read_meta(tmp_path)


def test_saving_into_a_missing_folder_fails_without_leaving_files(
    tmp_path: Path, tiny_model: Callable[..., OccupancyNetwork]
) -> None:
    with pytest.raises(Exception, match="No such file or directory|not found|does not exist"):
        save_weights(tmp_path / "no" / "such.safetensors", tiny_model(0, **TINY), meta())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "value"),
    [("hidden", 10**6), ("n_blocks", 10**5), ("image_size", 10**6), ("grid_res", 8 * 10**4)],
)
def test_model_sizes_in_metadata_are_checked_before_anything_is_built(
    tmp_path: Path, tiny_model: Callable[..., Any], name: str, value: int
) -> None:
    path = saved(tmp_path, tiny_model)
    _edit_meta(path, _set_config(name, value))
    with pytest.raises(CheckpointError, match=f"model.{name} = {value:,}, beyond the"):
        load_checkpoint(path)


def test_a_network_beyond_the_parameter_limit_is_refused_without_allocating_it(
    tmp_path: Path, tiny_model: Callable[..., Any]
) -> None:
    path = saved(tmp_path, tiny_model)
    # each size within its limit, together about 3.4 billion parameters (13 GB in float32)
    _edit_meta(path, lambda m: m["config"].update(hidden=4096, n_blocks=50, c_dim=4096, encoder_hidden=4096))
    with pytest.raises(CheckpointError, match="parameters; the backend takes up to 100,000,000"):
        load_checkpoint(path)


def test_a_header_nested_beyond_the_stack_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.safetensors"
    text = b"[" * 100_000 + b"]" * 100_000
    path.write_bytes(len(text).to_bytes(8, "little") + text)
    with pytest.raises(CheckpointError, match="not a safetensors model file"):
        read_meta(path)


def test_a_header_beyond_the_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge-header.safetensors"
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="declares a header of 1,099,511,627,776 bytes"):
        read_meta(path)


def test_the_add_ons_model_list_has_the_backends_header_limit(tmp_path: Path) -> None:
    """The wire's header reader (the add-on lists models with it) refuses what the loader refuses."""
    from backend.limits import MAX_MODEL_HEADER_BYTES
    from backend.wire.model_header import NotSafetensorsError, read_model_header

    path = tmp_path / "big-header.safetensors"
    path.write_bytes((MAX_MODEL_HEADER_BYTES + 1).to_bytes(8, "little") + b"{}")
    with pytest.raises(NotSafetensorsError, match="declares a header of 16,777,217 bytes"):
        read_model_header(path)
