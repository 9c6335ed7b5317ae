"""The Reconstructor with real (tiny, randomly initialised) model files on the CPU."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree
from torch.utils._python_dispatch import TorchDispatchMode

from backend.checkpoint import load_checkpoint, save_weights
from backend.commands.reconstruct import default_model
from backend.engine.field import NetworkField
from backend.engine.precision import half_dtype
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import Cancelled, InputError, MeshResult, Observation, ReconstructOptions

RES = 32  # small grids keep these tests fast


def chair_like_points(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(n, 3))
    return (p / np.linalg.norm(p, axis=1, keepdims=True) * [0.3, 0.5, 0.2]).astype(np.float32)


@pytest.fixture
def engine(engine_weights: Path) -> Reconstructor:
    return Reconstructor(device="cpu", weights_dir=engine_weights, cache_bytes=64 * 2**20)


def surface_tau(engine: Reconstructor, result: MeshResult) -> float:
    """A threshold at which the cached field of ``result`` has a surface inside the box."""
    assert result.field_id is not None
    field = engine.cache.get(result.field_id).field
    points = (np.random.default_rng(0).random((4000, 3)) - 0.5).astype(np.float32) * 0.8
    return float(1 / (1 + np.exp(-np.median(field.evaluate(points)))))


def chamfer(a: MeshResult, b: MeshResult) -> float:
    """Chamfer-L1 between the vertex sets (meshes from the same lattice share their vertices)."""
    return 0.5 * (
        cKDTree(b.vertices).query(a.vertices)[0].mean() + cKDTree(a.vertices).query(b.vertices)[0].mean()
    )


def reconstruct_with_surface(
    engine: Reconstructor, model: str, obs: Observation, **options: object
) -> MeshResult:
    probe = engine.reconstruct(model, obs, ReconstructOptions(resolution=RES))
    tau = surface_tau(engine, probe)
    mesh = engine.reconstruct(model, obs, ReconstructOptions(tau=tau, **{"resolution": RES, **options}))  # type: ignore[arg-type]
    assert len(mesh.faces) > 0
    return mesh


def test_models_lists_the_weights_folder_and_skips_broken_files(engine_weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    shutil.copytree(engine_weights, folder)
    (folder / "broken.safetensors").write_bytes(b"not a model")
    model, meta = load_checkpoint(folder / "points.safetensors")  # a variant for clouds under 500 points
    save_weights(folder / "points-sparse.safetensors", model, replace(meta, automatic_points=[0, 500]))
    engine = Reconstructor(device="cpu", weights_dir=folder)
    infos = engine.models()
    assert [(m.name, m.kind) for m in infos] == [
        ("image", "image"),
        ("points", "pointcloud"),
        ("points-sparse", "pointcloud"),
        ("prior", "unconditional"),
        ("voxels", "voxels"),
    ]
    assert all(m.tau == 0.5 and Path(m.path).is_file() for m in infos)
    assert default_model(engine, "pointcloud") == "points"  # by name: the variant's file sorts first
    assert infos[2].automatic_points == (0, 500) and infos[1].automatic_points is None
    assert default_model(engine, "pointcloud", 300) == "points-sparse"  # the range it names
    assert default_model(engine, "pointcloud", 500) == "points"
    with pytest.raises(InputError, match="no image model is installed"):
        default_model(Reconstructor(device="cpu", weights_dir=tmp_path), "image")  # no models in it


def test_a_point_cloud_becomes_a_closed_mesh_where_the_points_are(engine: Reconstructor) -> None:
    pts = chair_like_points()
    mesh = reconstruct_with_surface(engine, "points", Observation(points=pts))
    assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
    assert set(mesh.timings) >= {"encode", "evaluate", "marching_cubes", "total"}
    assert mesh.field_id is not None and mesh.tau > 0
    # the same cloud moved and scaled gives the same mesh moved and scaled
    moved = engine.reconstruct(
        "points",
        Observation(points=pts * 2.5 + [4.0, -1.0, 7.0]),
        ReconstructOptions(tau=mesh.tau, resolution=RES),
    )
    np.testing.assert_allclose(moved.vertices, mesh.vertices * 2.5 + [4.0, -1.0, 7.0], atol=1e-4)
    np.testing.assert_array_equal(moved.faces, mesh.faces)


def test_a_voxel_grid_is_reconstructed_in_the_frame_of_its_bounds(engine: Reconstructor) -> None:
    grid = np.zeros((32, 32, 32), bool)
    grid[8:24, 4:28, 12:20] = True
    unit = reconstruct_with_surface(engine, "voxels", Observation(voxels=grid))
    bounds = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])  # a cube of side 2 centred on (2, 3, 4)
    placed = engine.reconstruct(
        "voxels", Observation(voxels=grid, bounds=bounds), ReconstructOptions(tau=unit.tau, resolution=RES)
    )
    np.testing.assert_allclose(placed.vertices, unit.vertices * 2.0 + [2.0, 3.0, 4.0], atol=1e-5)


def test_an_image_is_reconstructed_in_the_normalised_frame(engine: Reconstructor) -> None:
    img = np.zeros((48, 64, 4), np.uint8)
    img[10:40, 20:50] = [200, 30, 30, 255]
    mesh = reconstruct_with_surface(engine, "image", Observation(image=img))
    assert np.abs(mesh.vertices).max() <= 0.55 + 0.01 * 1.1 / RES + 1e-6  # caps lie 1% of a cell out


def test_re_extraction_matches_a_fresh_reconstruction_without_encoding_again(engine: Reconstructor) -> None:
    obs = Observation(points=chair_like_points())
    first = reconstruct_with_surface(engine, "points", obs, resolution=64)
    assert first.field_id is not None
    field = engine.cache.get(first.field_id).field
    logits = field.evaluate((np.random.default_rng(1).random((4000, 3)) - 0.5).astype(np.float32) * 0.8)
    tau2 = float(1 / (1 + np.exp(-np.quantile(logits, 0.6))))  # a different level set of the same field
    again = engine.extract(first.field_id, tau2)
    fresh = engine.reconstruct("points", obs, ReconstructOptions(tau=tau2, resolution=64))
    assert "encode" not in again.timings and again.field_id == first.field_id
    assert again.tau == tau2 and len(again.faces) > 0
    assert chamfer(again, fresh) <= 1e-3
    assert again.stats["evaluations"] < fresh.stats["evaluations"]
    back = engine.extract(first.field_id, first.tau)
    assert back.stats["evaluations"] == 0
    np.testing.assert_array_equal(back.faces, first.faces)


def test_released_and_unknown_fields_raise_key_error(engine: Reconstructor) -> None:
    mesh = engine.reconstruct(
        "points", Observation(points=chair_like_points()), ReconstructOptions(resolution=RES)
    )
    assert mesh.field_id in engine.cache
    engine.release(mesh.field_id)
    with pytest.raises(KeyError):
        engine.extract(mesh.field_id, 0.5)
    with pytest.raises(KeyError):
        engine.release("no-such-field")
    other = engine.reconstruct(
        "points", Observation(points=chair_like_points()), ReconstructOptions(resolution=RES)
    )
    engine.release()
    assert len(engine.cache) == 0 and other.field_id not in engine.cache
    unkept = engine.reconstruct(
        "points",
        Observation(points=chair_like_points()),
        ReconstructOptions(resolution=RES, keep_field=False),
    )
    assert unkept.field_id is None and len(engine.cache) == 0


def test_the_field_cache_is_bounded_least_recently_used_first(engine_weights: Path) -> None:
    obs = Observation(points=chair_like_points())
    first = Reconstructor(device="cpu", weights_dir=engine_weights)
    one = first.reconstruct("points", obs, ReconstructOptions(resolution=RES))
    assert one.field_id is not None
    size = first.cache.get(one.field_id).nbytes
    small = Reconstructor(device="cpu", weights_dir=engine_weights, cache_bytes=int(2.5 * size))
    ids = [small.reconstruct("points", obs, ReconstructOptions(resolution=RES)).field_id for _ in range(3)]
    assert all(ids)
    assert small.cache.nbytes <= small.cache.capacity
    assert ids[-1] in small.cache and ids[0] not in small.cache  # the oldest went first
    tiny = Reconstructor(device="cpu", weights_dir=engine_weights, cache_bytes=1000)
    lost = tiny.reconstruct("points", obs, ReconstructOptions(resolution=RES))
    assert lost.field_id is None and any("not kept" in w for w in lost.warnings)


def test_progress_reports_each_stage_in_order(engine: Reconstructor) -> None:
    calls: list[tuple[str, float]] = []
    engine.reconstruct(
        "points",
        Observation(points=chair_like_points()),
        ReconstructOptions(tau=0.5, resolution=64, normals=True),
        progress=lambda stage, fraction: calls.append((stage, fraction)),
    )
    stages = list(dict.fromkeys(s for s, _ in calls))
    assert stages == ["encode", "evaluate", "marching_cubes", "fit", "normals"]
    for stage in stages:
        fractions = [f for s, f in calls if s == stage]
        assert fractions == sorted(fractions) and fractions[0] >= 0 and fractions[-1] == 1.0


def test_cancel_stops_the_work_and_keeps_nothing(engine: Reconstructor) -> None:
    polls = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 3

    with pytest.raises(Cancelled):
        engine.reconstruct(
            "points",
            Observation(points=chair_like_points()),
            ReconstructOptions(resolution=128),
            cancel=cancel,
        )
    assert len(engine.cache) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (ReconstructOptions(tau=0.0), "tau"),
        (ReconstructOptions(tau=1.0), "tau"),
        (ReconstructOptions(tau=math.nan), "tau"),
        (ReconstructOptions(resolution=48), "resolution"),
        (ReconstructOptions(resolution=1024), "resolution"),
        (ReconstructOptions(refine_steps=-1), "refine_steps"),
        (ReconstructOptions(simplify_faces=2), "simplify_faces"),
        (ReconstructOptions(fit_points="yes"), "fit_points"),  # type: ignore[arg-type]
    ],
)
def test_bad_options_are_refused(engine: Reconstructor, options: ReconstructOptions, message: str) -> None:
    with pytest.raises(InputError, match=message):
        engine.reconstruct("points", Observation(points=chair_like_points()), options)


def test_bad_model_choices_are_refused(engine: Reconstructor, tmp_path: Path) -> None:
    obs = Observation(points=chair_like_points())
    with pytest.raises(InputError, match="takes voxels input"):
        engine.reconstruct("voxels", obs, ReconstructOptions())
    with pytest.raises(InputError, match="no model named 'nope'"):
        engine.reconstruct("nope", obs, ReconstructOptions())
    with pytest.raises(InputError, match="not found"):
        engine.reconstruct(str(tmp_path / "missing.safetensors"), obs, ReconstructOptions())
    with pytest.raises(InputError, match="unconditional"):
        engine.sample("points", 0, ReconstructOptions())
    with pytest.raises(InputError, match="exactly one"):
        engine.reconstruct("points", Observation(), ReconstructOptions())
    if half_dtype(torch.device("cpu")) is None:  # a CPU without AMX: 16-bit would be slower
        with pytest.raises(InputError, match="half precision needs a CUDA device or a CPU with"):
            Reconstructor(device="cpu", half=True)
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            Reconstructor(device="cuda")


def test_a_checkpoint_path_works_like_a_name(engine: Reconstructor, engine_weights: Path) -> None:
    obs = Observation(points=chair_like_points())
    by_name = engine.reconstruct("points", obs, ReconstructOptions(tau=0.5, resolution=RES))
    by_path = engine.reconstruct(
        str(engine_weights / "points.safetensors"), obs, ReconstructOptions(tau=0.5, resolution=RES)
    )
    np.testing.assert_array_equal(by_name.vertices, by_path.vertices)


def test_sampling_is_deterministic_per_seed(engine: Reconstructor) -> None:
    probe = engine.sample("prior", 0, ReconstructOptions(resolution=RES))
    tau = surface_tau(engine, probe)
    a, b = (engine.sample("prior", 0, ReconstructOptions(tau=tau, resolution=RES)) for _ in range(2))
    c = engine.sample("prior", 1, ReconstructOptions(tau=tau, resolution=RES))
    assert len(a.faces) > 0
    np.testing.assert_array_equal(a.vertices, b.vertices)
    assert not (len(a.vertices) == len(c.vertices) and np.array_equal(a.vertices, c.vertices))


def test_normals_simplification_and_refinement(engine: Reconstructor) -> None:
    obs = Observation(points=chair_like_points())
    plain = reconstruct_with_surface(engine, "points", obs, resolution=64)
    tau = plain.tau
    with_normals = engine.reconstruct("points", obs, ReconstructOptions(tau=tau, resolution=64, normals=True))
    n = with_normals.normals
    assert n is not None and n.shape == with_normals.vertices.shape
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    mesh_normals = trimesh.Trimesh(with_normals.vertices, with_normals.faces, process=False).vertex_normals
    level_set = (np.abs(with_normals.vertices) < 0.54).all(
        axis=1
    )  # not on a cap where the box cuts the surface
    assert level_set.sum() > 100
    agree = np.einsum("ij,ij->i", n, mesh_normals)[level_set] > 0
    assert agree.mean() > 0.95  # the field's gradient and the winding both say "outwards"
    target = len(plain.faces) // 4
    simple = engine.reconstruct(
        "points", obs, ReconstructOptions(tau=tau, resolution=64, simplify_faces=target)
    )
    assert target * 0.9 <= len(simple.faces) <= target and "simplify" in simple.timings
    refined = engine.reconstruct(
        "points", obs, ReconstructOptions(tau=tau, resolution=64, simplify_faces=target, refine_steps=5)
    )
    assert "refine" in refined.timings
    np.testing.assert_array_equal(refined.faces, simple.faces)
    moved = np.linalg.norm(refined.vertices - simple.vertices, axis=1)
    assert 0 < moved.max() < 0.01  # RMSprop at 1e-4 moves vertices by about 1e-3 per step at most


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True])
def test_seeds_outside_what_the_generators_take_are_refused(engine: Reconstructor, seed: object) -> None:
    with pytest.raises(InputError, match="seed"):
        engine.reconstruct("points", Observation(points=chair_like_points()), ReconstructOptions(seed=seed))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="seed"):
        engine.sample("prior", seed, ReconstructOptions(resolution=RES))  # type: ignore[arg-type]
    assert len(engine.sample("prior", 2**64 - 1, ReconstructOptions(resolution=RES)).vertices) >= 0


def test_a_model_file_whose_weights_do_not_fit_its_config_is_refused(
    engine_weights: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    source = engine_weights / "points.safetensors"
    with source.open("rb") as f:  # keep the metadata (config, tau), change one tensor's shape
        header_size = int.from_bytes(f.read(8), "little")
        metadata = json.loads(f.read(header_size))["__metadata__"]
    tensors = load_file(str(source))
    name = next(k for k, v in tensors.items() if v.ndim == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    broken = tmp_path / "broken.safetensors"
    save_file(tensors, str(broken), metadata=metadata)
    engine = Reconstructor(device="cpu", weights_dir=tmp_path)
    with pytest.raises(InputError, match="does not match its config"):
        engine.reconstruct("broken", Observation(points=chair_like_points()), ReconstructOptions())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_evaluation_gives_the_same_surface(engine: Reconstructor, dtype: torch.dtype) -> None:
    """Both 16-bit paths, run on this CPU whatever it offers (float16 is CUDA's; bfloat16 a CPU's
    with AMX, emulated and slower elsewhere). The logits agree to 16-bit rounding; the meshes
    agree to well under a cell."""
    obs = Observation(points=chair_like_points())
    full = reconstruct_with_surface(engine, "points", obs, resolution=64)
    engine.half = dtype
    half = engine.reconstruct("points", obs, ReconstructOptions(tau=full.tau, resolution=64))
    assert half.field_id is not None
    field = engine.cache.get(half.field_id).field
    assert isinstance(field, NetworkField) and field.folded and field._fast is not None
    assert field._fast.dtype == dtype and field._fast.layers[0][0].dtype == torch.float32  # input layer
    points = (np.random.default_rng(0).random((5000, 3)) - 0.5).astype(np.float32)
    exact = NetworkField(field.model, field.c, field.z).evaluate(points)
    rounding = 2e-3 if dtype == torch.float16 else 2e-2  # bfloat16 keeps 8 bits, float16 11
    np.testing.assert_allclose(field.evaluate(points), exact, atol=rounding * max(1.0, np.abs(exact).max()))
    assert len(half.faces) > 0 and chamfer(half, full) <= 1e-3 * full_scale(full)


def test_bfloat16_patch_features_match_float32() -> None:
    """The shipped patch model (local features read at every point) under ``--half``: the patch
    MLP runs under autocast, the decoder's input layer in float32, and the surface stays where
    float32 puts it, to a small fraction of a cell."""
    obs = Observation(points=chair_like_points(3000))
    options = ReconstructOptions(resolution=64)
    engine = Reconstructor(device="cpu")
    full = engine.reconstruct("pointcloud", obs, options)
    engine.half = torch.bfloat16
    half = engine.reconstruct("pointcloud", obs, options)
    field = engine.cache.get(half.field_id).field if half.field_id is not None else None
    assert isinstance(field, NetworkField) and field.obs is not None and field.half == torch.bfloat16
    assert len(half.faces) > 0 and chamfer(half, full) <= 1e-3 * full_scale(full)


def full_scale(mesh: MeshResult) -> float:
    """The size of the mesh's bounding box (the Chamfer bound is in unit-cube units)."""
    return float((mesh.vertices.max(axis=0) - mesh.vertices.min(axis=0)).max())


class DeviceCopies(TorchDispatchMode):
    """Counts tensor copies between devices while active."""

    def __init__(self) -> None:
        super().__init__()
        self.moves = 0
        self.calls = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.calls += 1
        aten = torch.ops.aten
        moved = (func is aten._to_copy.default and out.device != args[0].device) or (
            func is aten.copy_.default and args[0].device != args[1].device
        )
        self.moves += int(moved)
        return out


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.mark.parametrize("device", DEVICES)
def test_evaluation_copies_points_in_and_logits_out_once_however_many_chunks(
    tiny_model: Callable[..., Any], device: str
) -> None:
    model = tiny_model(3, kind="pointcloud").to(device)
    with torch.no_grad():
        c = model.encode(torch.randn(1, 50, 3, device=device) * 0.3)
    points = (np.random.default_rng(0).random((5000, 3)) - 0.5).astype(np.float32)
    reference = NetworkField(model, c, chunk=5000).evaluate(points)
    field = NetworkField(model, c, chunk=256)  # 20 chunks
    with DeviceCopies() as copies:
        logits = field.evaluate(points)
    np.testing.assert_allclose(logits, reference, rtol=1e-5, atol=1e-5)
    assert copies.calls > 20  # the counter saw the work
    assert copies.moves <= (2 if device != "cpu" else 0)
