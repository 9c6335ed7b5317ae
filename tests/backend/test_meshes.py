"""Inside/outside tests for meshes, and user meshes made ready for training (real files, real training)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from backend.checkpoint import load_checkpoint
from backend.config import config_from_dict
from backend.containment import WindingNumber, ray_parity, solid_angles, winding_number
from backend.data.dataset import DataError, ShapePool
from backend.data.meshes import MeshDataError, MeshSettings, prepare_meshes, prepared_split
from backend.training import train

SMALL = MeshSettings(surface_points=500, uniform_points=3000, near_points=3000, val_fraction=0.25)


def brute_force_winding(mesh: trimesh.Trimesh, points: np.ndarray) -> np.ndarray:
    tri = np.asarray(mesh.vertices)[np.asarray(mesh.faces)]
    return np.concatenate(
        [solid_angles(tri[None], points[i : i + 64, None]).sum(-1) for i in range(0, len(points), 64)]
    ) / (4 * np.pi)


def open_box() -> trimesh.Trimesh:
    box = trimesh.creation.box((1.0, 0.6, 0.4))
    return trimesh.Trimesh(box.vertices, box.faces[2:], process=False)  # one side missing


@pytest.mark.parametrize(
    "mesh",
    [trimesh.creation.icosphere(3), trimesh.creation.torus(0.6, 0.2), trimesh.creation.box((1, 2, 0.3))],
    ids=["sphere", "torus", "box"],
)
def test_ray_parity_and_winding_numbers_agree_with_brute_force_on_closed_meshes(
    mesh: trimesh.Trimesh,
) -> None:
    points = np.random.default_rng(0).uniform(-1.2, 1.2, (2000, 3))
    exact = brute_force_winding(mesh, points)
    fast = winding_number(mesh.vertices, mesh.faces, points)
    assert np.abs(fast - exact).max() < 0.1  # the far-field expansion is approximate, never near 0.5
    inside = exact > 0.5
    assert np.array_equal(fast > 0.5, inside)
    assert np.array_equal(ray_parity(mesh.vertices, mesh.faces, points), inside)
    assert 0.02 < inside.mean() < 0.9


def test_ray_parity_counts_rays_through_shared_edges_and_vertices_once() -> None:
    cube = trimesh.creation.box((1, 1, 1))
    # rays along z through the cube's vertices, edges and face diagonals
    xy = np.array([[0.0, 0.0], [0.5, 0.5], [0.5, 0.0], [0.0, 0.5], [-0.5, -0.5], [0.25, 0.25], [-0.25, 0.25]])
    points = np.concatenate([np.c_[xy, np.full(len(xy), z)] for z in (-0.9, 0.0, 0.9)])
    inside = ray_parity(cube.vertices, cube.faces, points)
    # a ray on the boundary counts as moved by an infinitesimal step towards +x, +y
    in_xy = ((points[:, :2] >= -0.5) & (points[:, :2] < 0.5)).all(1)
    assert np.array_equal(inside, in_xy & (np.abs(points[:, 2]) < 0.5))
    assert inside.sum() == 4


def test_winding_numbers_stay_robust_on_meshes_with_holes_and_flipped_faces() -> None:
    box = open_box()
    centre_and_corners = np.array([[0, 0, 0], [0.4, 0.25, 0.15], [-0.4, -0.25, -0.15], [0.9, 0.9, 0.9]])
    w = WindingNumber(box.vertices, box.faces)(centre_and_corners)
    assert (w[:3] > 0.5).all() and abs(w[3]) < 0.1
    flipped = trimesh.creation.icosphere(2)
    faces = np.asarray(flipped.faces).copy()
    faces[::7] = faces[::7, ::-1]  # every 7th triangle inverted
    w = winding_number(flipped.vertices, faces, np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 2.0]]))
    assert w[0] > 0.5 and abs(w[1]) < 0.2
    assert winding_number(np.zeros((0, 3)), np.zeros((0, 3), int), np.zeros((2, 3))).tolist() == [0.0, 0.0]


@pytest.fixture(scope="module")
def mesh_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real files: closed meshes in four formats, one with a hole, and unusable ones."""
    folder = tmp_path_factory.mktemp("meshes")
    trimesh.creation.icosphere(3).apply_scale(3.0).apply_translation([5, 0, 0]).export(folder / "ball.obj")
    trimesh.creation.torus(0.6, 0.2).export(folder / "ring.ply")
    trimesh.creation.cylinder(0.3, 1.0, sections=24).export(folder / "can.off")
    open_box().export(folder / "open_box.stl")
    (folder / "broken.obj").write_text("v 1 2\nf 1 2 3 4\nthis is not a mesh\n")
    (folder / "empty.ply").write_bytes(b"")
    (folder / "points.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
        "end_header\n0 0 0\n1 0 0\n0 1 0\n"
    )
    (folder / "nan.obj").write_text(
        "v 0 0 0\nv 1 0 0\nv nan 1 0\nv 0 0 1\nf 1 2 3\nf 1 2 4\nf 1 3 4\nf 2 3 4\n"
    )
    (folder / "sheet.obj").write_text("v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3\nf 1 3 4\n")
    (folder / "notes.txt").write_text("not a mesh suffix: ignored")
    return folder


@pytest.fixture(scope="module")
def prepared(mesh_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "dataset"
    prepare_meshes(mesh_folder, out, SMALL, progress=False)
    return out


def test_prepared_dataset_lists_the_splits_and_why_files_were_skipped(prepared: Path) -> None:
    manifest = json.loads((prepared / "dataset.json").read_text())
    used = sorted(manifest["splits"]["train"] + manifest["splits"]["val"])
    assert used == ["ball.obj", "can.off", "open_box.stl", "ring.ply"] and len(manifest["splits"]["val"]) == 1
    skipped = manifest["skipped"]
    assert sorted(skipped) == ["broken.obj", "empty.ply", "nan.obj", "points.ply", "sheet.obj"]
    assert "cannot read it as a mesh" in skipped["broken.obj"]
    assert "no triangles" in skipped["points.ply"]
    assert "NaN or infinite" in skipped["nan.obj"]
    assert "encloses no volume" in skipped["sheet.obj"]
    assert sorted(p.name for p in prepared.iterdir()) == ["dataset.json", "train.npz", "val.npz"]


def test_prepared_meshes_are_normalised_and_labelled_by_winding_number(prepared: Path) -> None:
    pool = ShapePool(prepared_split(prepared, "train"))
    assert pool.names is not None and len(pool) == 3
    surface = pool.surface.float()
    extent = (surface.amax(1) - surface.amin(1)).amax(1)
    torch.testing.assert_close(
        extent, torch.ones(3), atol=0.02, rtol=0
    )  # longest side 1, like the procedural data
    assert surface.abs().max() <= 0.5 + 1e-3
    assert pool.queries is not None
    for i, name in enumerate(pool.names):
        points = pool.queries.uniform[i].float()
        occ = pool.queries.uniform_occ[i]
        assert points.abs().max() <= 0.55 + 1e-3
        if name == "ball.obj":  # a sphere of diameter 1 in the unit frame
            r = points.norm(dim=-1)
            clear = (r - 0.5).abs() > 0.01
            assert torch.equal(occ[clear], r[clear] < 0.5)
        if name == "open_box.stl":  # the hole does not empty the box
            assert occ[(points.abs() < torch.tensor([0.4, 0.2, 0.1])).all(-1)].all()
        near = pool.queries.near[i].float()
        assert 0.2 < pool.queries.near_occ[i].float().mean() < 0.8 and (near.abs() < 0.8).all()
        assert pool.voxels[i].any()


@pytest.mark.parametrize("kind", ["pointcloud", "voxels", "unconditional"])
def test_mesh_splits_feed_batches_from_their_stored_labels(prepared: Path, kind: str) -> None:
    pool = ShapePool(prepared_split(prepared, "train"))
    cfg = config_from_dict({"data": {"query_points": 100, "n_points": 60, "source": str(prepared)}}).data
    batch = pool.batch(kind, torch.tensor([0, 2, 2]), cfg, torch.Generator().manual_seed(0))
    assert batch.points.shape == (3, 100, 3) and batch.occ.shape == (3, 100)
    if kind == "pointcloud":
        assert batch.inputs is not None and batch.inputs.shape == (3, 60, 3)
    with pytest.raises(DataError, match="no rendered views"):
        pool.batch("image", torch.tensor([0]), cfg, torch.Generator())


def test_a_config_trains_on_a_prepared_folder(prepared: Path, tmp_path: Path) -> None:
    cfg = config_from_dict(
        {
            "model": {"kind": "pointcloud", "hidden": 16, "n_blocks": 2, "c_dim": 16, "encoder_hidden": 16},
            "data": {"source": str(prepared), "query_points": 64, "n_points": 50},
            "train": {"out_dir": str(tmp_path / "run"), "batch_size": 2, "max_steps": 3, "eval_every": 3},
        }
    )
    best = train(cfg, "meshes", data_dir=tmp_path / "unused")
    model, meta = load_checkpoint(best)
    assert meta.training["steps"] == 3 and meta.training["data"]["source"] == str(prepared)
    assert not (tmp_path / "unused").exists()


def test_a_folder_without_two_usable_meshes_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "meshes"
    folder.mkdir()
    (folder / "broken.stl").write_bytes(b"solid nothing\nendsolid\n")
    trimesh.creation.icosphere(1).export(folder / "one.obj")
    with pytest.raises(MeshDataError, match=r"need at least 2 usable meshes .* got 1 \(broken.stl: "):
        prepare_meshes(folder, tmp_path / "out", SMALL, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MeshDataError, match="no mesh files"):
        prepare_meshes(tmp_path / "empty", tmp_path / "out", SMALL, progress=False)
    with pytest.raises(MeshDataError, match="mesh folder not found"):
        prepare_meshes(tmp_path / "missing", tmp_path / "out", SMALL, progress=False)
    with pytest.raises(MeshDataError, match="uniform_points must be a positive integer"):
        prepare_meshes(folder, tmp_path / "out", MeshSettings(uniform_points=0), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "meshes"]
    with pytest.raises(MeshDataError, match="is neither 'procedural' nor a folder made by prepare-meshes"):
        prepared_split(folder, "train")


def test_the_command_line_prepares_a_folder(mesh_folder: Path, tmp_path: Path, repo_root: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "backend", "prepare-meshes", *args],
            cwd=repo_root,
            capture_output=True,
            text=True,
            timeout=300,
        )

    folder = tmp_path / "meshes"
    shutil.copytree(mesh_folder, folder)
    proc = run(str(folder), "--uniform-points", "2000", "--near-points", "2000", "--val-fraction", "0.3")
    assert proc.returncode == 0, proc.stderr
    assert "1 val, 3 train meshes (5 skipped)" in proc.stdout
    assert "skipped broken.obj" in proc.stderr
    # written to MESHES/prepared, which a config may name through the mesh folder itself
    assert prepared_split(folder, "train") == folder / "prepared" / "train.npz"
    proc = run(str(tmp_path / "nothing"), str(tmp_path / "x"))
    assert proc.returncode == 2 and "error: mesh folder not found" in proc.stderr
    assert not (tmp_path / "x").exists()
    # an output that cannot be a folder is refused before any mesh is read, in one line
    (tmp_path / "a-file").write_text("keep me")
    for out, message in (
        (tmp_path / "a-file", f"error: the output {tmp_path / 'a-file'} is a file; give a folder"),
        (tmp_path / "a-file" / "sub", f"{tmp_path / 'a-file'} is a file"),
    ):
        proc = run(str(folder), str(out))
        assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error:"), proc.stderr
        assert message in proc.stderr and "meshes:" not in proc.stderr
    assert (tmp_path / "a-file").read_text() == "keep me"
