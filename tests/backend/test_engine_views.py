"""Several reference pictures with their cameras, as the engine reads them for a views model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from backend.commands.reconstruct import default_model
from backend.data.cameras import Cameras, random_cameras
from backend.data.render import render_views
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import InputError, Observation, ReconstructOptions
from backend.engine.views import prepare_views
from backend.models.views import ViewSet
from tests.backend.conftest import write_model
from tests.backend.test_views import box, box_surface

WORLD_CENTRE = np.array([3.0, -1.0, 2.0])
WORLD_SCALE = 2.5  # the box's longest side in the world (0.8 in the unit frame)


def world_views(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """n pictures of the box placed in the world, their world cameras, the box's unit surface and
    its exact outline in each picture."""
    rng = np.random.default_rng(seed)
    surface = box_surface(4000, rng)
    unit = random_cameras(surface, n, rng)
    rgba, outline = render_views(box, unit, 96, rng)
    scale = WORLD_SCALE / 0.8
    world = Cameras(
        unit.rotation,
        unit.centre * scale + torch.tensor(WORLD_CENTRE, dtype=torch.float32),
        unit.focal,
        unit.principal,
    )
    return rgba, world.to_array(), surface, outline


def test_pictures_and_cameras_give_the_object_its_place_and_size() -> None:
    pictures, cameras, surface, _ = world_views(3)
    prepared = prepare_views(pictures, cameras, 64)
    frame = prepared.frame
    # the outlines' centres and widths, seen in perspective, place and size the object roughly
    assert np.linalg.norm(frame.center - WORLD_CENTRE) < 0.15 * WORLD_SCALE
    assert 0.9 * WORLD_SCALE < frame.scale < 1.3 * WORLD_SCALE
    views = prepared.inputs
    assert isinstance(views, ViewSet)
    assert views.images.shape == (1, 3, 3, 64, 64) and views.cameras.shape == (1, 3, 15)
    # the object, taken into the prepared frame, lands on itself in every framed picture
    world = surface * (WORLD_SCALE / 0.8) + WORLD_CENTRE
    unit = torch.tensor(frame.to_unit(world), dtype=torch.float32)
    uv, depth = Cameras.from_rows(views.cameras[0]).project(unit.expand(3, -1, -1))
    assert bool((depth > 0).all())
    col = ((uv[..., 0] + 1) / 2 * 64).long().clamp(0, 63)
    row = ((1 - uv[..., 1]) / 2 * 64).long().clamp(0, 63)
    for v in range(3):
        pixels = views.images[0, v][:, row[v], col[v]]  # (3, K)
        assert float((pixels.sum(0) < 3 * 0.97).float().mean()) > 0.95  # on the object, not the white


def test_one_picture_is_placed_where_its_ray_passes_the_origin() -> None:
    pictures, cameras, _, _ = world_views(1, seed=4)
    frame = prepare_views(pictures, cameras, 64).frame
    camera = Cameras.from_array(cameras)
    uv, depth = camera.project(torch.tensor(frame.center, dtype=torch.float32)[None, None])
    assert float(depth) > 0 and float(uv.abs().max()) < 0.5  # on the view axis's side of the picture


def test_bad_views_are_refused_by_name() -> None:
    pictures, cameras, _, _ = world_views(3, seed=1)
    elsewhere = cameras.copy()
    elsewhere[1, 9:12] += np.array([40.0, 0.0, 0.0])  # camera 2 moved far to the side
    with pytest.raises(InputError, match="picture 2 does not show the object the other pictures agree on"):
        prepare_views(pictures, elsewhere, 64)
    blank = pictures.copy()
    blank[0, ..., :3] = 255
    blank[0, ..., 3] = 255
    with pytest.raises(InputError, match="picture 1: no object found"):
        prepare_views(blank, cameras, 64)
    with pytest.raises(InputError, match="1 to 4 pictures"):
        prepare_views(np.concatenate([pictures, pictures]), np.concatenate([cameras, cameras]), 64)
    with pytest.raises(InputError, match=r"cameras must have shape \(3, 15\)"):
        prepare_views(pictures, cameras[:2], 64)
    bad = cameras.copy()
    bad[2, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        prepare_views(pictures, bad, 64)
    bad = cameras.copy()
    bad[1, :9] *= 2
    with pytest.raises(InputError, match="camera 2's rotation is not a rotation"):
        prepare_views(pictures, bad, 64)


def test_a_views_model_reconstructs_in_the_world(tmp_path: Path) -> None:
    write_model(tmp_path, "views", 5, kind="views", local_features=True, image_size=64)
    engine = Reconstructor(device="cpu", weights_dir=tmp_path)
    pictures, cameras, _, _ = world_views(2, seed=2)
    mesh = engine.reconstruct(
        "views", Observation(views=pictures, cameras=cameras), ReconstructOptions(tau=0.5, resolution=32)
    )
    if len(mesh.faces):  # an untrained model: whatever it predicts lands in the objects' box
        centre = 0.5 * (mesh.vertices.min(0) + mesh.vertices.max(0))
        assert np.linalg.norm(centre - WORLD_CENTRE) < 1.5 * WORLD_SCALE
        assert trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).is_watertight
    with pytest.raises(InputError, match="needs each picture's camera"):
        engine.reconstruct("views", Observation(views=pictures), ReconstructOptions(resolution=32))


def test_one_plain_picture_goes_to_a_views_model_through_the_image_models_camera(tmp_path: Path) -> None:
    """An image observation given to a views model is one view through ``Cameras.canonical``:
    the same mesh as that view given explicitly, in the picture's camera frame (in front of the
    camera, on the object's side of the picture), and a mask given with it is used."""
    from backend.engine.views import picture_as_view

    write_model(tmp_path, "views", 5, kind="views", local_features=True, image_size=64)
    engine = Reconstructor(device="cpu", weights_dir=tmp_path)
    pictures, _, _, outline = world_views(1, seed=3)
    options = ReconstructOptions(tau=0.5, resolution=32, keep_field=False)
    plain = engine.reconstruct("views", Observation(image=pictures[0]), options)
    canonical = Cameras.canonical(1).to_array()
    explicit = engine.reconstruct("views", Observation(views=pictures[:1], cameras=canonical), options)
    np.testing.assert_array_equal(plain.vertices, explicit.vertices)
    np.testing.assert_array_equal(plain.faces, explicit.faces)
    assert default_model(engine, "image") == "views"  # the CLI's Automatic for a picture

    view = picture_as_view(Observation(image=pictures[0]))
    frame = prepare_views(view.views, view.cameras, 64).frame
    uv, depth = Cameras.canonical(1).project(torch.tensor(frame.center, dtype=torch.float32)[None, None])
    rows, cols = np.nonzero(outline[0])
    size = outline.shape[-1]
    middle = np.array([(cols.mean() + 0.5) / size * 2 - 1, 1 - (rows.mean() + 0.5) / size * 2])
    assert float(depth) > 0 and np.abs(uv[0, 0].numpy() - middle).max() < 0.15

    masked = np.zeros(pictures.shape[1:3], np.float32)
    masked[outline[0]] = 1.0  # the exact outline, as a user's mask
    framed = prepare_views(view.views, view.cameras, 64, mask=masked).frame
    assert np.linalg.norm(framed.center - frame.center) < 0.1 * frame.scale
    masked[:, int(cols.mean()) :] = 0.0  # only the object's left part: the object moves left
    left = prepare_views(view.views, view.cameras, 64, mask=masked).frame
    assert left.center[0] < frame.center[0] - 0.05 * frame.scale
    with pytest.raises(InputError, match="a mask goes with a single picture"):
        prepare_views(np.concatenate([pictures, pictures]), np.concatenate([canonical] * 2), 64, mask=masked)
