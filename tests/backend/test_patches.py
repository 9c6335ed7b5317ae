"""Patches of nearest input points: exact neighbours, bounded-memory encoding of any number of
points, a model grown from one without patches that starts from exactly its predictions, and
the engine taking every point of a dense cloud."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from backend.checkpoint import ModelMeta, save_weights
from backend.config import ConfigError, config_from_dict
from backend.engine import observation, reconstructor
from backend.engine.field import NetworkField
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import InputError, Observation, ReconstructOptions
from backend.models import OccupancyNetwork, build_model, encoders, patches
from backend.models.patches import NeighbourIndex, PatchFeatures, PointEvidence
from backend.training import _start_from


def cloud(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, n, 3, generator=torch.Generator().manual_seed(seed)) - 0.5


def test_neighbours_are_the_nearest_points() -> None:
    points, queries = cloud(500), cloud(64, seed=1)
    idx = NeighbourIndex(points).query(queries, 8)
    brute = torch.cdist(queries[0], points[0]).topk(8, largest=False).indices
    assert torch.equal(idx[0].sort(dim=1).values, brute.sort(dim=1).values)


def test_fewer_points_than_neighbours_repeat_the_nearest() -> None:
    idx = NeighbourIndex(cloud(3)).query(cloud(5, seed=2), 8)
    assert idx.shape == (1, 5, 8) and set(idx.unique().tolist()) <= {0, 1, 2}


def test_patch_features_ignore_the_order_of_the_points() -> None:
    torch.manual_seed(0)
    patch = PatchFeatures(8, 16)
    points, queries = cloud(300), cloud(32, seed=3)
    shuffled = points[:, torch.randperm(300)]
    a = patch(queries, points, NeighbourIndex(points))
    b = patch(queries, shuffled, NeighbourIndex(shuffled))
    assert torch.allclose(a, b, atol=1e-6)


def test_inference_patches_equal_the_training_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The chunked, in-place path taken without autograd gives the differentiable path's features,
    over two objects, a chunk boundary, and fewer points than neighbours."""
    monkeypatch.setattr(patches, "INFERENCE_CHUNK", 7)
    torch.manual_seed(0)
    patch = PatchFeatures(8, 16)
    for n in (300, 5):
        points = torch.cat([cloud(n), cloud(n, seed=4)])
        queries = torch.cat([cloud(30, seed=5), cloud(30, seed=6)])
        index = NeighbourIndex(points)
        trained = patch(queries, points, index)
        with torch.inference_mode():
            inferred = patch(queries, points, index)
        assert torch.allclose(inferred, trained, atol=1e-6, rtol=0)


def test_scattering_in_chunks_equals_scattering_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    unet = encoders.PointGridUNet(c_dim=8, width=4, res=8)
    points = cloud(1000)
    whole = unet.scatter(points)
    monkeypatch.setattr(encoders, "SCATTER_CHUNK", 97)
    assert torch.allclose(unet.scatter(points), whole, atol=1e-6)


def test_patch_model_reads_the_same_field_in_the_engine(tiny_model: Callable[..., OccupancyNetwork]) -> None:
    model = tiny_model(4, kind="pointcloud", local_features=True, neighbours=4, patch_width=8)
    points = cloud(2000)
    with torch.no_grad():
        c, evidence = model.encode_local(points)
        assert isinstance(evidence, PointEvidence)
        queries = cloud(300, seed=5)
        direct = model.decode(queries, None, c, evidence)[0]
    field = NetworkField(model, c, obs=evidence, chunk=64)  # several chunks, each its own kNN query
    assert np.allclose(field.evaluate(queries[0].numpy()), direct.numpy(), atol=1e-4)
    assert field.nbytes > evidence.points.numel() * 4


def test_a_grown_model_starts_from_the_old_predictions(
    tmp_path: Path, tiny_model: Callable[..., OccupancyNetwork], tiny_config: dict
) -> None:
    base = {**tiny_config, "kind": "pointcloud", "local_features": True}
    old = tiny_model(6, **base)
    path = tmp_path / "old.safetensors"
    meta = ModelMeta("old", "pointcloud", 0.5, config_from_dict({"model": base}).to_dict()["model"])
    save_weights(path, old, meta, half=False)
    cfg = config_from_dict({"model": {**base, "neighbours": 4, "patch_width": 8}})
    new = build_model(cfg.model)
    assert _start_from(new, path, cfg)["name"] == "old"
    new.eval()
    points, queries = cloud(400), cloud(100, seed=7)
    with torch.no_grad():
        grown = new.decode(queries, None, *new.encode_local(points))
        before = old.decode(queries, None, *old.encode_local(points))
    assert torch.allclose(grown, before, atol=1e-5)


def test_neighbours_need_a_point_cloud_model_with_local_features() -> None:
    with pytest.raises(ConfigError, match="neighbours"):
        config_from_dict({"model": {"kind": "voxels", "local_features": True, "neighbours": 8}})
    with pytest.raises(ConfigError, match="neighbours"):
        config_from_dict({"model": {"kind": "pointcloud", "neighbours": 8}})


def write_dense_model(folder: Path, tiny_model: Callable[..., OccupancyNetwork], tiny_config: dict) -> Path:
    """A tiny patch model whose metadata says it was trained on clouds of any density."""
    config = {"kind": "pointcloud", "local_features": True, "neighbours": 4, "patch_width": 8}
    cfg = config_from_dict({"model": {**tiny_config, **config}}).to_dict()["model"]
    path = folder / "dense.safetensors"
    meta = ModelMeta(
        "dense", "pointcloud", 0.5, cfg, training={"data": {"n_points": 100, "n_points_max": 30000}}
    )
    save_weights(path, tiny_model(8, **config), meta, half=False)
    return path


def test_the_engine_takes_every_point_of_a_dense_cloud(
    tmp_path: Path, tiny_model: Callable[..., OccupancyNetwork], tiny_config: dict
) -> None:
    path = write_dense_model(tmp_path, tiny_model, tiny_config)
    engine = Reconstructor("cpu")
    points = np.random.default_rng(0).normal(size=(50_000, 3)).astype(np.float32)
    # the network's own field (a random network may "fill" the blob: not carved here)
    options = ReconstructOptions(resolution=32, open_cavities=False)
    result = engine.reconstruct(str(path), Observation(points=points), options)
    assert not any("used" in w for w in result.warnings)
    field = engine.cache.get(result.field_id).field if result.field_id else None
    assert field is not None and isinstance(field.obs, PointEvidence)
    assert field.obs.points.shape == (1, 50_000, 3)


def test_the_fit_searches_the_patch_models_tree(
    tmp_path: Path,
    tiny_model: Callable[..., OccupancyNetwork],
    tiny_config: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The fit reuses the k-d tree the model built over the same points, and fits exactly as
    with its own."""
    path = write_dense_model(tmp_path, tiny_model, tiny_config)
    points = np.random.default_rng(1).normal(size=(5_000, 3)).astype(np.float32)
    options = ReconstructOptions(resolution=32, open_cavities=False)  # the network's own field
    engine = Reconstructor("cpu")
    shared = engine.reconstruct(str(path), Observation(points=points), options)
    assert shared.field_id is not None
    entry = engine.cache.get(shared.field_id)
    assert isinstance(entry.field, NetworkField) and isinstance(entry.field.obs, PointEvidence)
    assert entry.points is not None and entry.points.tree is entry.field.obs.index.trees[0]
    monkeypatch.setattr(reconstructor, "_shared_tree", lambda field, points: None)
    own = Reconstructor("cpu").reconstruct(str(path), Observation(points=points), options)
    np.testing.assert_array_equal(shared.vertices, own.vertices)
    np.testing.assert_array_equal(shared.faces, own.faces)


def test_a_cloud_beyond_the_limit_is_refused_before_any_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observation, "MAX_POINTS", 1000)
    with pytest.raises(InputError, match="more than the 1,000"):
        observation.prepare_points(np.zeros((1001, 3)), None)


def test_a_carved_field_is_what_the_engine_keeps(
    tmp_path: Path, tiny_model: Callable[..., OccupancyNetwork], tiny_config: dict
) -> None:
    """Where the engine carves (engine/cavities.py; this random network swallows the blob's
    points), the threshold slider re-extracts the carved field, and carving only takes away."""
    import trimesh

    from backend.engine.cavities import CarvedField

    path = write_dense_model(tmp_path, tiny_model, tiny_config)
    points = np.random.default_rng(0).normal(size=(50_000, 3)).astype(np.float32)
    engine = Reconstructor("cpu")
    carved = engine.reconstruct(str(path), Observation(points=points), ReconstructOptions(resolution=32))
    plain = engine.reconstruct(
        str(path), Observation(points=points), ReconstructOptions(resolution=32, open_cavities=False)
    )
    assert carved.stats["carved_cells"] > 0 and "carved_cells" not in plain.stats
    assert carved.timings["carve"] > 0 and carved.field_id is not None and plain.field_id is not None
    assert isinstance(engine.cache.get(carved.field_id).field, CarvedField)
    assert isinstance(engine.cache.get(plain.field_id).field, NetworkField)
    again = engine.extract(carved.field_id, carved.tau)
    np.testing.assert_array_equal(again.faces, carved.faces)
    volume = [trimesh.Trimesh(r.vertices, r.faces).volume for r in (carved, plain)]
    assert 0 < volume[0] < volume[1]
    # the carving reads the mesh before it is simplified: the same cells, then a simpler mesh
    simple = engine.reconstruct(
        str(path), Observation(points=points), ReconstructOptions(resolution=32, simplify_faces=200)
    )
    assert simple.stats["carved_cells"] == carved.stats["carved_cells"]
    assert len(simple.faces) < len(carved.faces)
