"""Results of the shipped models overlap their inputs, for each kind of input.

These need the trained weights packed into the extension (backend/weights/<kind>.safetensors); a
test whose model is not there is skipped and says so. Bounds are compared as boxes (intersection
over union) and surfaces by sampled distances, relative to the input's size. The bounds are those
of overlap, not of accuracy: how good the models are is measured by the backend's evaluation.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from mathutils import Matrix
from scipy.spatial import cKDTree

from tests.voxel_meshes import voxel_quads

from .conftest import shipped_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def shipped(
    installed_extension: str, backend_python_env: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModuleType]:
    """The installed add-on using the weights packed into it."""
    monkeypatch.delenv("OCC_WEIGHTS_DIR", raising=False)
    module = sys.modules[installed_extension]
    yield module
    module.runtime.shutdown()


def world_vertices(obj: bpy.types.Object) -> np.ndarray:
    local = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", local)
    matrix = np.array(obj.matrix_world)
    return local.reshape(-1, 3).astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    lo, hi = np.maximum(a.min(0), b.min(0)), np.minimum(a.max(0), b.max(0))
    inter = np.prod(np.clip(hi - lo, 0, None))
    return float(inter / (np.prod(np.ptp(a, 0)) + np.prod(np.ptp(b, 0)) - inter))


def distances(source: np.ndarray, result: np.ndarray) -> tuple[float, float]:
    """Median distance from source samples to the result's vertices and back, over the source's size."""
    extent = float(np.ptp(source, 0).max())
    to_result = cKDTree(result).query(source)[0]
    to_source = cKDTree(source).query(result)[0]
    return float(np.median(to_result)) / extent, float(np.median(to_source)) / extent


def test_point_cloud(shipped: ModuleType) -> None:
    shipped_model("pointcloud")
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    chair = bpy.context.active_object
    chair.rotation_euler = (0.0, 0.0, math.radians(30))
    bpy.context.view_layer.update()
    assert bpy.ops.occupancy.reconstruct(resolution=64) == {"FINISHED"}
    result = bpy.context.active_object
    source, mesh = world_vertices(chair), world_vertices(result)
    assert box_iou(source, mesh) > 0.5
    to_result, to_source = distances(source, mesh)
    assert to_result < 0.08 and to_source < 0.08


def voxel_surface_mesh(grid: np.ndarray, size: float) -> bpy.types.Object:
    """A blocky mesh of the voxels' outer faces with outward normals, as a voxel editor exports it."""
    corners = voxel_quads(grid).reshape(-1, 3) * size
    mesh = bpy.data.meshes.new("Voxels")
    mesh.from_pydata(corners.tolist(), [], np.arange(len(corners)).reshape(-1, 4).tolist())
    obj = bpy.data.objects.new("Voxels", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def l_shape() -> np.ndarray:
    """A 32^3 grid of an L-shaped solid: a slab and a pillar (the kind of solid the models learnt)."""
    axis = (np.arange(32) + 0.5) / 32 - 0.5
    x, y, z = np.meshgrid(axis, axis, axis, indexing="ij")
    slab = (np.abs(y) < 0.2) & (z < -0.2)
    pillar = (x < -0.2) & (np.abs(y) < 0.2)
    return slab | pillar


def test_voxel_mesh(shipped: ModuleType) -> None:
    shipped_model("voxels")
    grid = l_shape()
    obj = voxel_surface_mesh(grid, size=0.05)
    obj.location = (-2.0, 1.0, 0.0)
    bpy.context.view_layer.update()
    # the solid spans the grid's width, so the add-on's 32^3 grid over its bounds is the very same
    choice = shipped.scene_inputs.detect(bpy.context, obj)
    assert np.array_equal(shipped.scene_inputs.read(bpy.context, choice).arrays["voxels"], grid)
    assert bpy.ops.occupancy.reconstruct(resolution=64) == {"FINISHED"}
    result = bpy.context.active_object
    assert result.occupancy.kind == "voxels"
    faces = world_vertices(obj).reshape(-1, 4, 3).mean(axis=1)  # samples of the blocky surface
    mesh = world_vertices(result)
    assert box_iou(world_vertices(obj), mesh) > 0.5
    to_result, to_source = distances(faces, mesh)
    assert to_result < 0.08 and to_source < 0.08


RENDER = """
import sys
import numpy as np
import torch
from PIL import Image
from backend.data.render import render

half = torch.tensor([0.4, 0.3, 0.2])  # a box, seen from the model's camera


def sdf(p):
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


image = render(sdf, 1, 64, np.random.default_rng(0))[0]
Image.fromarray(image).save(sys.argv[1])
"""


@pytest.mark.parametrize(("choice", "model"), [("", "views"), ("image", "image")])
def test_reference_image(
    shipped: ModuleType, tmp_path: Path, repo_root: Path, choice: str, model: str
) -> None:
    """Automatic reads one picture with the views model (as a single view through the image
    models' camera); either model's result stands in front of the picture, over the object."""
    shipped_model(model)
    path = tmp_path / "box.png"
    subprocess.run([sys.executable, "-c", RENDER, str(path)], check=True, cwd=repo_root)
    image = bpy.data.images.load(str(path))
    empty = bpy.data.objects.new("Photo", None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    empty.empty_display_size = 2.0
    empty.rotation_euler = (math.radians(90), 0.0, 0.0)  # as added in the front view
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    bpy.context.view_layer.update()
    assert bpy.ops.occupancy.reconstruct(resolution=64, model=choice) == {"FINISHED"}  # "": Automatic
    result = bpy.context.active_object
    assert result.occupancy.model == model
    to_local = np.array(empty.matrix_world.inverted())
    points = world_vertices(result) @ to_local[:3, :3].T + to_local[:3, 3]
    assert len(points) > 100
    assert points[:, 2].min() > -1e-3  # in front of the picture
    # the box seen through the camera covers this rectangle of the picture
    pixels = np.asarray(image.pixels[:], np.float32).reshape(64, 64, 4)[::-1, :, :3]
    background = pixels[0, 0]
    ys, xs = np.nonzero(np.abs(pixels - background).max(axis=2) > 0.05)
    to_picture = 2.0 / 64
    silhouette = np.array(
        [
            [xs.min() * to_picture - 1.0, 1.0 - (ys.max() + 1) * to_picture],
            [(xs.max() + 1) * to_picture - 1.0, 1.0 - ys.min() * to_picture],
        ]
    )
    projected = np.array([points[:, :2].min(0), points[:, :2].max(0)])
    inter = np.prod(
        np.clip(np.minimum(silhouette[1], projected[1]) - np.maximum(silhouette[0], projected[0]), 0, None)
    )
    union = np.prod(silhouette[1] - silhouette[0]) + np.prod(projected[1] - projected[0]) - inter
    assert inter / union > 0.5


def test_generate(shipped: ModuleType) -> None:
    shipped_model("unconditional")
    assert bpy.ops.occupancy.generate(seed=1, resolution=64) == {"FINISHED"}
    result = bpy.context.active_object
    points = world_vertices(result)
    assert len(points) > 100 and np.abs(points).max() <= 0.55 + 1e-3


RENDER_VIEWS = """
import json
import sys
import numpy as np
import torch
from PIL import Image
from backend.data.cameras import set_cameras
from backend.data.render import render_views

half = torch.tensor([0.45, 0.3, 0.2])  # a box in its unit frame, shot from the front, side and top


def sdf(p):
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


corners = np.stack(np.meshgrid(*[[-1.0, 1.0]] * 3, indexing="ij"), -1).reshape(-1, 3) * half.numpy()
surface = np.random.default_rng(0).uniform(-1, 1, (4000, 3)) * half.numpy()
cameras = set_cameras(np.concatenate([corners, surface]), "front-side-top")
rgba, _ = render_views(sdf, cameras, 96, np.random.default_rng(1))
for i, picture in enumerate(rgba):
    Image.fromarray(picture).save(f"{sys.argv[1]}/view{i}.png")
open(f"{sys.argv[1]}/cameras.json", "w").write(json.dumps(cameras.to_array().tolist()))
"""


def test_reference_views(shipped: ModuleType, tmp_path: Path, repo_root: Path) -> None:
    """Three cameras with background pictures of a box, placed in the world away from the
    origin: the shipped views model's result lands on the box."""
    shipped_model("views")
    subprocess.run([sys.executable, "-c", RENDER_VIEWS, str(tmp_path)], check=True, cwd=repo_root)
    offset, scale = np.array([2.0, -1.0, 0.5]), 3.0  # the box's unit frame in the world
    rows = np.asarray(json.loads((tmp_path / "cameras.json").read_text()))
    scene = bpy.context.scene
    scene.render.resolution_x = scene.render.resolution_y = 96
    for i, row in enumerate(rows):
        camera = bpy.data.objects.new(f"View{i}", bpy.data.cameras.new(f"View{i}"))
        placed = np.eye(4)
        placed[:3, :3], placed[:3, 3] = row[:9].reshape(3, 3).T, row[9:12] * scale + offset
        camera.matrix_world = Matrix(placed.tolist())
        camera.data.lens = row[12] * camera.data.sensor_width / 2  # the focal across the picture
        camera.data.background_images.new().image = bpy.data.images.load(str(tmp_path / f"view{i}.png"))
        scene.collection.objects.link(camera)
        camera.select_set(True)
    bpy.context.view_layer.objects.active = bpy.data.objects["View0"]
    bpy.context.view_layer.update()
    assert bpy.ops.occupancy.reconstruct(resolution=64) == {"FINISHED"}
    result = bpy.context.active_object
    assert result.occupancy.kind == "views"
    mesh = world_vertices(result)
    box = np.array([-0.45, -0.3, -0.2, 0.45, 0.3, 0.2]).reshape(2, 3) * scale + offset
    assert len(mesh) > 100 and box_iou(box, mesh) > 0.5
    assert np.linalg.norm(mesh.mean(0) - offset) < 0.15 * scale
    # the outlines option reaches the backend (which refuses unknown options) and the recipe
    assert json.loads(result.occupancy.recipe)["outlines"] is True
    bpy.context.view_layer.objects.active = bpy.data.objects["View0"]
    assert bpy.ops.occupancy.reconstruct(resolution=64, outlines=False) == {"FINISHED"}
    plain = bpy.context.active_object
    assert json.loads(plain.occupancy.recipe)["outlines"] is False
    plain_mesh = world_vertices(plain)
    assert plain_mesh.shape != mesh.shape or not np.allclose(plain_mesh, mesh)
