"""``import-checkpoint``: the original Occupancy Networks' checkpoints as model files.

The checkpoints are built by ``original_onet`` from the original's parameter names and shapes
(random values; nothing is downloaded), and the converted models must compute what the original's
forward pass, written out independently there, computes on the same state dict.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.__main__ import main
from backend.checkpoint import load_checkpoint
from backend.engine.types import Observation, ReconstructOptions
from backend.kinds import kind as input_kind
from backend.models import OccupancyNetwork
from backend.onet_checkpoints import (
    ORIGINAL_TAU,
    OriginalCheckpointError,
    convert_state,
    import_checkpoint,
    layout,
)
from occupancy_addon.model_files import list_models, read_model_file
from tests.backend.original_onet import (
    KINDS,
    OriginalForward,
    original_shapes,
    original_state,
    write_original,
)

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = 1e-5


def observation(kind: str, gen: torch.Generator, batch: int) -> torch.Tensor:
    """A random input of the original's shape: 300 points, a 32^3 grid, a 224 px image, or z."""
    if kind == "pointcloud":
        return 0.3 * torch.randn(batch, 300, 3, generator=gen)
    if kind == "voxels":
        return (torch.rand(batch, 32, 32, 32, generator=gen) > 0.7).float()
    if kind.startswith("image"):
        return torch.rand(batch, 3, 224, 224, generator=gen)
    return torch.randn(batch, 128, generator=gen)


def our_logits(model: OccupancyNetwork, kind: str, p: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        if kind == "unconditional":
            return model.decode(p, inputs, model.encode(None, len(p)))
        return model.decode(p, None, model.encode(inputs))


def assert_same_logits(
    model: OccupancyNetwork,
    kind: str,
    state: dict[str, torch.Tensor],
    batch: int,
    inputs: torch.Tensor | None = None,
) -> None:
    gen = torch.Generator().manual_seed(7)
    p = torch.rand(batch, 400, 3, generator=gen) * 1.1 - 0.55  # the padded unit cube
    inputs = observation(kind, gen, batch) if inputs is None else inputs
    want = OriginalForward(state, legacy=kind == "image-legacy").logits(kind, p, inputs)
    got = our_logits(model, kind, p, inputs)
    torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE)
    assert float(want.std()) > 0.05  # the field varies: every layer is on the path


Originals = dict[str, tuple[Path, dict[str, torch.Tensor]]]


def backend(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m backend ARGS`` in a real process."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "backend", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> Originals:
    """One original checkpoint per model, at the original's full size; the unconditional one in
    PyTorch's pre-1.6 file format, as the 2019 files were written."""
    folder = tmp_path_factory.mktemp("originals")
    files = {}
    for kind in ("pointcloud", "voxels", "image", "unconditional"):
        state = original_state(kind)
        legacy_format = kind == "unconditional"
        files[kind] = (write_original(folder / f"{kind}.pt", kind, state, legacy_format), state)
    return files


@pytest.fixture(scope="module")
def imported(originals: Originals, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each original converted by the command: the point-cloud model in a real process, the
    others in this one (the same code, without another start of torch)."""
    folder = tmp_path_factory.mktemp("imported")
    (folder / "weights").mkdir()
    out = {kind: folder / f"onet_{kind}.safetensors" for kind in originals}
    out["pointcloud"] = folder / "weights" / "onet_pcl2mesh.safetensors"
    done = backend(
        "import-checkpoint",
        str(originals["pointcloud"][0]),
        "--kind",
        "pointcloud",
        "-o",
        str(out["pointcloud"]),
    )
    assert done.returncode == 0, done.stderr
    assert "the original's pointcloud model" in done.stdout and "tau 0.2" in done.stdout
    for kind in ("voxels", "image", "unconditional"):
        assert main(["import-checkpoint", str(originals[kind][0]), "--kind", kind, "-o", str(out[kind])]) == 0
    return out


def test_every_original_parameter_has_a_slot() -> None:
    """The converter's table agrees with the original's names and shapes for every model."""
    for name in KINDS:
        kind, legacy = name.removesuffix("-legacy"), name.endswith("-legacy")
        table = {k: s.original_shape for k, s in layout(kind, legacy).items()}
        assert table == original_shapes(name), name


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "image", "unconditional"])
def test_converted_model_computes_the_original_logits(
    kind: str, originals: Originals, imported: dict[str, Path]
) -> None:
    state = originals[kind][1]
    model, meta = load_checkpoint(imported[kind])
    assert (meta.kind, meta.tau, meta.name) == (kind, ORIGINAL_TAU, imported[kind].stem)
    assert meta.training["steps"] == 123000 and meta.training["decoder_layout"] == "current"
    assert sum(p.numel() for p in model.parameters()) == sum(
        int(np.prod(s))
        for n, s in original_shapes(kind).items()
        if "running_" not in n and "num_batches" not in n
    )
    if kind == "image":
        # a user's picture, prepared by the engine at the imported model's own size (224 px)
        picture = np.random.default_rng(0).integers(0, 256, (137, 137, 4), dtype=np.uint8)
        prepared = input_kind("image").prepare(Observation(image=picture), meta, ReconstructOptions())
        assert prepared.inputs is not None and tuple(prepared.inputs.shape) == (1, 3, 224, 224)
        assert_same_logits(model, kind, state, batch=1, inputs=prepared.inputs)
    else:
        assert_same_logits(model, kind, state, batch=2)
    if kind == "unconditional":  # the VAE's latent encoder (used when training further) matches too
        gen = torch.Generator().manual_seed(3)
        p, occ = torch.rand(2, 500, 3, generator=gen) - 0.5, (torch.rand(2, 500, generator=gen) > 0.5).float()
        assert model.latent is not None
        with torch.no_grad():
            for got, want in zip(
                model.latent(p, occ), OriginalForward(state).encoder_latent(p, occ), strict=True
            ):
                torch.testing.assert_close(got, want, rtol=TOLERANCE, atol=TOLERANCE)


def test_the_legacy_image_model_converts_too() -> None:
    """The paper's first image model: its conditional batch norms are Linear layers (fc_gamma)."""
    state = original_state("image-legacy", seed=1)
    model, legacy = convert_state(state, "image")
    assert legacy
    assert_same_logits(model, "image-legacy", state, batch=1)


def test_reconstruct_and_the_model_picker_take_it_like_any_model(
    imported: dict[str, Path], tmp_path: Path
) -> None:
    out = imported["pointcloud"]
    mesh = tmp_path / "chair.ply"
    args = ("--model", str(out), "--resolution", "32", "--device", "cpu")
    done = backend("reconstruct", str(REPO / "examples" / "chair_points.ply"), "-o", str(mesh), *args)
    assert done.returncode == 0, done.stderr
    assert mesh.is_file() and "used 300 of the points" in done.stderr  # the original's 300-point input

    picked = read_model_file(out)
    assert (picked.kind, picked.tau) == ("pointcloud", ORIGINAL_TAU)
    models, problems = list_models(out.parent, [str(imported["image"])])
    assert [(m.name, m.kind) for m in models] == [
        ("onet_pcl2mesh", "pointcloud"),
        (str(imported["image"]), "image"),
    ]
    assert problems == []


# ------------------------------------------------------------------------------------------ errors
class RunsCode:
    """Unpickling this would create ``marker``: what a weights-only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return pathlib.Path.touch, (self.marker,)


def _bad_checkpoints(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (a file, what its error must say)."""
    good = original_state("unconditional")
    cases: dict[str, tuple[Path, str]] = {}

    def variant(name: str, state: dict[str, torch.Tensor], expected: str) -> None:
        cases[name] = (write_original(folder / f"{name}.pt", "unconditional", state), expected)

    variant(
        "missing",
        {k: v for k, v in good.items() if k != "decoder.block3.fc_1.bias"},
        "missing parameter(s) 'decoder.block3.fc_1.bias'",
    )
    variant(
        "extra",
        {**good, "decoder.fc_c.weight": torch.zeros(128, 16)},
        "unexpected parameter(s) 'decoder.fc_c.weight'",
    )
    variant(
        "shape",
        {**good, "encoder_latent.fc_2.weight": torch.zeros(128, 128)},
        "parameter 'encoder_latent.fc_2.weight' has shape (128, 128), the original's unconditional "
        "model has (128, 256)",
    )
    variant(
        "nan",
        {**good, "decoder.fc_out.bias": torch.tensor([float("nan")])},
        "'decoder.fc_out.bias' holds NaN",
    )
    (folder / "noise.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["noise"] = (folder / "noise.pt", "is not a PyTorch checkpoint")
    torch.save({"model": [good]}, folder / "list.pt")
    cases["list"] = (folder / "list.pt", "its 'model' entry is not a state dict")
    torch.save({"weights": good}, folder / "no-model.pt")
    cases["no-model"] = (folder / "no-model.pt", "has no 'model' entry")
    torch.save({"model": good, "trainer": RunsCode(folder / "marker")}, folder / "code.pt")
    cases["code"] = (folder / "code.pt", "holds Python objects, not only tensors")
    return cases


def test_bad_checkpoints_fail_with_the_key_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = _bad_checkpoints(tmp_path)
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"an earlier file")  # a failed import must not touch it
    for name, (source, expected) in cases.items():
        status = main(["import-checkpoint", str(source), "--kind", "unconditional", "-o", str(out)])
        err = capsys.readouterr().err
        assert status == 2, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (name, err)
        assert out.read_bytes() == b"an earlier file" and sorted(out.parent.iterdir()) == [out], name
    assert not (tmp_path / "marker").exists()  # no code from the file ran


def test_the_wrong_kind_is_named(originals: Originals, tmp_path: Path) -> None:
    source = originals["unconditional"][0]
    with pytest.raises(OriginalCheckpointError, match="use --kind unconditional"):
        import_checkpoint(source, "voxels", tmp_path / "v.safetensors")
    assert list(tmp_path.iterdir()) == []
