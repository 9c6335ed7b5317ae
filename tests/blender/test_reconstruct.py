"""Reconstruct, Generate and the live threshold in real Blender, with tiny random models.

Tiny models are untrained, so these tests check the plumbing: which input is read, that the result
sits where the input is, that the threshold re-extracts, that cancelling and a dying backend leave
the scene as it was. How well results overlap their inputs is checked with the shipped models in
test_overlap.py.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import bpy
import numpy as np
import pytest
from mathutils import Matrix

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def world_vertices(obj: bpy.types.Object) -> np.ndarray:
    local = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", local)
    local = local.reshape(-1, 3).astype(np.float64)
    matrix = np.array(obj.matrix_world)
    return local @ matrix[:3, :3].T + matrix[:3, 3]


def mesh_arrays(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.empty(len(obj.data.vertices) * 3, np.float32)
    obj.data.vertices.foreach_get("co", vertices)
    corners = np.empty(len(obj.data.loops), np.int32)
    obj.data.loops.foreach_get("vertex_index", corners)
    return vertices.reshape(-1, 3), corners.reshape(-1, 3)


def import_chair(transform: bool = True) -> bpy.types.Object:
    assert bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply")) == {"FINISHED"}
    obj = bpy.context.active_object
    if transform:  # an arbitrary placement: the result must follow it
        obj.location = (3.0, -2.0, 1.0)
        obj.rotation_euler = (0.3, -0.5, 1.2)
        obj.scale = (2.0, 2.0, 2.0)
        bpy.context.view_layer.update()
    return obj


def cubic_world_box(obj: bpy.types.Object, margin: float) -> tuple[np.ndarray, np.ndarray]:
    """The cube the model works in (the input's local bounding cube, padded), in world space:
    any result of an untrained model still lies inside it."""
    local = np.array([corner[:] for corner in obj.bound_box])
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo).max() / 2 * (1 + margin)
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)]) * half + centre
    matrix = np.array(obj.matrix_world)
    world = corners @ matrix[:3, :3].T + matrix[:3, 3]
    return world.min(axis=0), world.max(axis=0)


def snapshot(obj: bpy.types.Object) -> tuple[object, ...]:
    """What must never change on an input object."""
    data = obj.data
    vertices = None
    if isinstance(data, bpy.types.Mesh):
        vertices = np.empty(len(data.vertices) * 3, np.float32)
        data.vertices.foreach_get("co", vertices)
        return (
            obj.name,
            tuple(map(tuple, obj.matrix_world)),
            data.name,
            vertices.tobytes(),
            len(data.polygons),
        )
    return (obj.name, tuple(map(tuple, obj.matrix_world)), getattr(data, "name", None))


def reconstruct(**options: object) -> bpy.types.Object:
    options.setdefault("resolution", 32)
    assert bpy.ops.occupancy.reconstruct(**options) == {"FINISHED"}
    return bpy.context.active_object


# ---------------------------------------------------------------------------------------------------------
# Input kinds


def test_point_cloud_mesh_becomes_a_result_over_the_input(addon: ModuleType) -> None:
    chair = import_chair()
    before = snapshot(chair)
    result = reconstruct()
    assert result.name == "chair_points.occupancy" and result.data.name == "chair_points.occupancy"
    assert result.occupancy.kind == "pointcloud" and result.occupancy.source == chair
    assert len(result.data.polygons) > 0
    # exactly over the input: the same world matrix, the mesh in the input's local frame
    assert np.allclose(np.array(result.matrix_world), np.array(chair.matrix_world), atol=1e-6)
    lo, hi = cubic_world_box(chair, margin=0.15)
    points = world_vertices(result)
    assert (points >= lo - 1e-4).all() and (points <= hi + 1e-4).all()
    assert snapshot(chair) == before
    assert result.select_get() and bpy.context.view_layer.objects.active == result
    assert result.name in bpy.context.scene.collection.all_objects


def test_pointcloud_object(addon: ModuleType) -> None:
    chair = import_chair()
    bpy.ops.object.convert(target="POINTCLOUD")
    cloud = bpy.context.active_object
    assert cloud.type == "POINTCLOUD" and len(cloud.data.points) == 3000
    choice = addon.scene_inputs.detect(bpy.context, cloud)
    assert (choice.kind, choice.description) == ("pointcloud", "Point cloud: 3,000 points")
    before = snapshot(cloud)
    result = reconstruct()
    assert result.name == f"{cloud.name}.occupancy" and result.occupancy.kind == "pointcloud"
    assert np.allclose(np.array(result.matrix_world), np.array(chair.matrix_world), atol=1e-6)
    lo, hi = cubic_world_box(cloud, margin=0.15)
    points = world_vertices(result)
    assert (points >= lo - 1e-4).all() and (points <= hi + 1e-4).all()
    assert snapshot(cloud) == before


def test_evaluated_points_of_a_geometry_nodes_modifier(addon: ModuleType) -> None:
    bpy.ops.mesh.primitive_uv_sphere_add(segments=16, ring_count=8)
    sphere = bpy.context.active_object
    modifier = sphere.modifiers.new("to points", "NODES")
    tree = bpy.data.node_groups.new("to points", "GeometryNodeTree")
    tree.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    tree.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    group_in, group_out = tree.nodes.new("NodeGroupInput"), tree.nodes.new("NodeGroupOutput")
    to_points = tree.nodes.new("GeometryNodeMeshToPoints")
    tree.links.new(group_in.outputs[0], to_points.inputs["Mesh"])
    tree.links.new(to_points.outputs["Points"], group_out.inputs[0])
    modifier.node_group = tree
    evaluated = addon.scene_inputs.detect(bpy.context, sphere)
    assert (evaluated.kind, evaluated.description) == (
        "pointcloud",
        f"Point cloud: {len(sphere.data.vertices):,} points",
    )
    original = addon.scene_inputs.detect(bpy.context, sphere, evaluated=False)
    assert original.kind == "voxels"  # without the modifier it is a closed mesh
    result = reconstruct()
    assert result.occupancy.kind == "pointcloud"


def test_voxel_mesh(addon: ModuleType) -> None:
    bpy.ops.mesh.primitive_cylinder_add(
        radius=0.5, depth=2.0, location=(1.0, 2.0, 0.5), rotation=(0.4, 0.0, 0.7)
    )
    cylinder = bpy.context.active_object
    cylinder.scale = (1.5, 1.0, 2.0)
    bpy.context.view_layer.update()
    choice = addon.scene_inputs.detect(bpy.context, cylinder)
    assert (choice.kind, choice.description) == ("voxels", "Voxels: 34 faces, 32\u00b3 grid")
    data = addon.scene_inputs.read(bpy.context, choice)
    grid, bounds = data.arrays["voxels"], data.arrays["bounds"]
    assert grid.shape == (32, 32, 32) and np.allclose(bounds, [[-1, -1, -1], [1, 1, 1]])
    assert grid[16, 16, :].all() and not grid[0, 0, :].any()  # the axis is inside, a corner is not
    before = snapshot(cylinder)
    result = reconstruct()
    assert result.name == "Cylinder.occupancy" and result.occupancy.kind == "voxels"
    assert np.allclose(np.array(result.matrix_world), np.array(cylinder.matrix_world), atol=1e-6)
    lo, hi = cubic_world_box(cylinder, margin=0.15)
    points = world_vertices(result)
    assert len(points) and (points >= lo - 1e-4).all() and (points <= hi + 1e-4).all()
    assert snapshot(cylinder) == before


def test_volume_goes_through_blenders_mesh_conversion(addon: ModuleType) -> None:
    bpy.ops.mesh.primitive_ico_sphere_add(radius=1.0, location=(5.0, 0.0, 0.0))
    sphere = bpy.context.active_object
    bpy.ops.object.volume_add(location=(5.0, 0.0, 0.0))
    volume = bpy.context.active_object
    modifier = volume.modifiers.new("from mesh", "MESH_TO_VOLUME")
    modifier.object = sphere
    choice = addon.scene_inputs.detect(bpy.context, volume)
    assert choice.kind == "voxels"
    data = addon.scene_inputs.read(bpy.context, choice)
    grid, bounds = data.arrays["voxels"], data.arrays["bounds"]
    assert grid.shape == (32, 32, 32) and grid.dtype == bool
    # the sphere of radius 1 around the volume's origin, in the volume's frame
    assert np.allclose(bounds, [[-1, -1, -1], [1, 1, 1]], atol=0.1)
    assert 0.3 < grid.mean() < 0.7  # a ball fills pi/6 of its cube
    assert [o.name for o in bpy.data.objects] == ["Icosphere", "Volume"]  # the helper is gone
    result = reconstruct()
    assert result.name == "Volume.occupancy"


def test_image_empty_result_stands_in_front_of_the_picture(addon: ModuleType) -> None:
    image = bpy.data.images.new("photo", 96, 64, alpha=True)
    pixels = np.ones((64, 96, 4), np.float32)
    pixels[16:48, 32:64, :3] = (0.8, 0.2, 0.1)  # a red block on white
    image.pixels.foreach_set(pixels.ravel())
    empty = bpy.data.objects.new("Reference", None)
    empty.empty_display_type = "IMAGE"
    empty.data = image
    empty.empty_display_size = 3.0
    empty.location = (0.0, 4.0, 1.0)
    empty.rotation_euler = (math.radians(90), 0.0, math.radians(20))
    bpy.context.scene.collection.objects.link(empty)
    bpy.context.view_layer.objects.active = empty
    stored = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(stored)
    choice = addon.scene_inputs.detect(bpy.context, empty)
    assert (choice.kind, choice.description) == ("image", "Image: photo (96 \u00d7 64)")
    # the image model's placement (Automatic would take the views model: test_overlap.py); untrained,
    # so a low threshold surely has a surface
    result = reconstruct(threshold=0.05, model="image")
    assert result.name == "Reference.occupancy" and result.occupancy.kind == "image"
    # In the empty's frame the model's padded unit cube, scaled so that the camera's view covers
    # the picture's long side (3 units), stands on the picture's centre, in front of it (+z).
    to_local = np.array(empty.matrix_world.inverted())
    points = world_vertices(result) @ to_local[:3, :3].T + to_local[:3, 3]
    half = 0.55 * 3.0 / (4.0 * math.tan(math.radians(20.0)))
    assert len(points)
    assert np.abs(points[:, :2]).max() <= half + 1e-3
    assert points[:, 2].min() >= -1e-3 and points[:, 2].max() <= 2 * half + 1e-3
    after = np.empty(len(image.pixels), np.float32)
    image.pixels.foreach_get(after)
    assert np.array_equal(after, stored)


def test_image_chosen_in_the_panel(addon: ModuleType) -> None:
    image = bpy.data.images.new("sketch", 32, 32)
    pixels = np.ones((32, 32, 4), np.float32)
    pixels[8:24, 8:24, :3] = 0.2  # a dark square on white, centred
    image.pixels.foreach_set(pixels.ravel())
    bpy.context.scene.occupancy.image = image
    bpy.context.scene.cursor.location = (1.0, 1.0, 1.0)
    choice = addon.scene_inputs.detect(bpy.context, None, chosen_image=image)
    assert choice.kind == "image" and choice.obj is None
    result = reconstruct(image="sketch", threshold=0.05)
    assert result.name == "sketch.occupancy"
    # as if seen from the front view: half the model's padded cube in front of the cursor (-y)
    depth = 0.55 / (4.0 * math.tan(math.radians(20.0)))
    assert tuple(result.matrix_world.translation) == pytest.approx((1.0, 1.0 - depth, 1.0))


def test_result_redirects_to_its_source(addon: ModuleType) -> None:
    chair = import_chair(transform=False)
    result = reconstruct()
    choice = addon.scene_inputs.detect(bpy.context, result)
    assert choice.obj == chair and choice.kind == "pointcloud"
    again = reconstruct()  # the active object is the result: it reconstructs the chair again
    assert again.name == "chair_points.occupancy.001" and again.occupancy.source == chair


# ---------------------------------------------------------------------------------------------------------
# Threshold


def test_threshold_reextracts_and_matches_a_fresh_reconstruction(addon: ModuleType) -> None:
    import_chair(transform=False)
    result = reconstruct(resolution=64)
    field_id = result.occupancy.field_id
    assert field_id and result.occupancy.applied_threshold == pytest.approx(0.5)
    before = mesh_arrays(result)
    result.occupancy.threshold = 0.45  # background mode: the update blocks until the mesh is there
    after = mesh_arrays(result)
    assert result.occupancy.applied_threshold == pytest.approx(0.45)
    assert result.occupancy.field_id == field_id  # re-extracted from the cached field
    assert len(after[0]) != len(before[0]) or not np.array_equal(after[0], before[0])

    bpy.context.view_layer.objects.active = bpy.data.objects["chair_points"]
    fresh = reconstruct(resolution=64, threshold=0.45)
    assert fresh.occupancy.applied_threshold == pytest.approx(0.45)
    fresh_vertices, fresh_faces = mesh_arrays(fresh)
    assert fresh_vertices.shape == after[0].shape and np.array_equal(fresh_faces, after[1])
    assert np.allclose(fresh_vertices, after[0], atol=1e-5)


@pytest.mark.parametrize("option", ["fit_points", "open_cavities"])
def test_point_cloud_options_travel_with_the_recipe(addon: ModuleType, option: str) -> None:
    """Fit to Points and Carve Open Cavities reach the backend (which refuses unknown options)
    and stay with the result, so that a threshold change re-extracts the same way."""
    import_chair(transform=False)
    fitted = reconstruct()
    assert json.loads(fitted.occupancy.recipe)[option] is True
    bpy.context.view_layer.objects.active = bpy.data.objects["chair_points"]
    plain = reconstruct(**{option: False})
    assert json.loads(plain.occupancy.recipe)[option] is False
    plain.occupancy.threshold = 0.45
    assert plain.occupancy.applied_threshold == pytest.approx(0.45)
    assert json.loads(plain.occupancy.recipe)[option] is False


def test_threshold_operator_and_stored_tau(addon: ModuleType) -> None:
    import_chair(transform=False)
    result = reconstruct()
    assert bpy.ops.occupancy.set_threshold(threshold=0.55) == {"FINISHED"}
    assert result.occupancy.threshold == pytest.approx(0.55)
    assert result.occupancy.applied_threshold == pytest.approx(0.55)


def test_threshold_after_a_backend_restart_remakes_the_field(addon: ModuleType) -> None:
    import_chair(transform=False)
    result = reconstruct()
    old_field = result.occupancy.field_id
    assert bpy.ops.occupancy.restart_backend() == {"FINISHED"}
    result.occupancy.threshold = 0.45
    assert result.occupancy.applied_threshold == pytest.approx(0.45)
    assert result.occupancy.field_id and result.occupancy.field_id != old_field
    assert len(result.data.polygons) > 0


def test_updates_are_coalesced_while_one_is_in_flight(addon: ModuleType) -> None:
    import_chair(transform=False)
    result = reconstruct()
    preview = addon.preview
    sent = preview._coalescer.sent
    # what a dragged slider does between two timer ticks: many values, no wait in between
    with addon.properties.quiet_updates():
        result.occupancy.threshold = 0.3
    key = result.session_uid
    for tau in (0.31, 0.32, 0.33, 0.34, 0.35):
        preview._coalescer.request(key, tau)
    preview.flush()
    assert preview._coalescer.sent - sent == 2  # the first value, then only the newest
    assert result.occupancy.applied_threshold == pytest.approx(0.35)


# ---------------------------------------------------------------------------------------------------------
# Generate


def test_generate_samples_at_the_cursor_with_a_seed(addon: ModuleType) -> None:
    bpy.context.scene.cursor.location = (2.0, 0.0, 0.0)
    assert bpy.ops.occupancy.generate(seed=7, resolution=32, threshold=0.3) == {"FINISHED"}
    first = bpy.context.active_object
    assert first.name == "Generated.occupancy" and first.occupancy.kind == "unconditional"
    assert tuple(first.matrix_world.translation) == pytest.approx((2.0, 0.0, 0.0))
    assert bpy.ops.occupancy.generate(seed=7, resolution=32, threshold=0.3) == {"FINISHED"}
    second = bpy.context.active_object
    assert np.array_equal(mesh_arrays(first)[0], mesh_arrays(second)[0])  # the seed decides the shape


# ---------------------------------------------------------------------------------------------------------
# Cancel, crash, undo


def test_cancel_stops_the_backend_and_changes_nothing(
    addon: ModuleType, run_and_interrupt: Callable[..., object]
) -> None:
    chair = import_chair(transform=False)
    names = sorted(o.name for o in bpy.data.objects)
    outcome = run_and_interrupt(
        lambda: bpy.ops.occupancy.reconstruct(resolution=512), lambda task: addon.runtime.request_cancel()
    )
    assert outcome == {"CANCELLED"}
    assert sorted(o.name for o in bpy.data.objects) == names and len(bpy.data.meshes) == 1
    assert addon.runtime.task is None and not addon.runtime.status.error
    bpy.context.view_layer.objects.active = chair
    assert reconstruct().name == "chair_points.occupancy"  # the same backend serves on


def test_backend_killed_mid_run_then_restart(
    addon: ModuleType, run_and_interrupt: Callable[..., object]
) -> None:
    chair = import_chair(transform=False)
    reconstruct()  # the backend is up
    bpy.context.view_layer.objects.active = chair
    killed = []

    def kill(task: object) -> None:
        killed.append(addon.runtime.service.process.pid)
        addon.runtime.service.process.kill()

    with pytest.raises(RuntimeError, match="The backend stopped unexpectedly") as failure:
        run_and_interrupt(lambda: bpy.ops.occupancy.reconstruct(resolution=512), kill)
    assert "Press Restart Backend" in str(failure.value) and "Nothing in the scene was changed" in str(
        failure.value
    )
    assert killed and addon.runtime.status.crashed
    assert sorted(o.name for o in bpy.data.objects) == ["chair_points", "chair_points.occupancy"]
    # it stays stopped until the user restarts it: no silent crash loop
    with pytest.raises(RuntimeError, match="Press Restart Backend"):
        reconstruct()
    assert bpy.ops.occupancy.restart_backend() == {"FINISHED"}
    assert not addon.runtime.status.crashed
    bpy.context.view_layer.objects.active = chair
    result = reconstruct()
    assert result.name == "chair_points.occupancy.001"
    assert addon.runtime.service.process.pid != killed[0]


def test_one_undo_step_removes_the_result(addon: ModuleType) -> None:
    """Background mode keeps no undo history of its own (operators push nothing until a script
    creates the undo stack), so the test does what the UI does around an operator with the UNDO
    flag: an undo step before and one after. One undo must then remove exactly the result."""
    assert "UNDO" in addon.operators.OCC_OT_reconstruct.bl_options
    assert "UNDO" in addon.operators.OCC_OT_generate.bl_options
    chair = import_chair(transform=False)
    before = snapshot(chair)
    bpy.ops.ed.undo_push(message="before")
    reconstruct()
    bpy.ops.ed.undo_push(message="Reconstruct")
    assert sorted(o.name for o in bpy.data.objects) == ["chair_points", "chair_points.occupancy"]
    bpy.ops.ed.undo()
    assert [o.name for o in bpy.data.objects] == ["chair_points"]
    assert "chair_points.occupancy" not in bpy.data.meshes
    assert snapshot(bpy.data.objects["chair_points"]) == before
    bpy.ops.ed.redo()
    assert sorted(o.name for o in bpy.data.objects) == ["chair_points", "chair_points.occupancy"]
    assert bpy.data.objects["chair_points.occupancy"].occupancy.is_result


def test_result_is_saved_with_the_blend(addon: ModuleType, tmp_path: Path) -> None:
    import_chair(transform=False)
    result = reconstruct()
    result.occupancy.threshold = 0.45
    faces = len(result.data.polygons)
    path = tmp_path / "scene.blend"
    assert bpy.ops.wm.save_as_mainfile(filepath=str(path)) == {"FINISHED"}
    assert bpy.ops.wm.open_mainfile(filepath=str(path)) == {"FINISHED"}
    reopened = bpy.data.objects["chair_points.occupancy"]
    assert len(reopened.data.polygons) == faces
    assert reopened.occupancy.applied_threshold == pytest.approx(0.45)
    assert reopened.occupancy.source == bpy.data.objects["chair_points"]
    assert Matrix(reopened.matrix_world) == Matrix(bpy.data.objects["chair_points"].matrix_world)
