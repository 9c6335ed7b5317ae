"""Reference views from the command line: a JSON camera file naming each picture and its camera."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trimesh
from PIL import Image

from backend.engine.inputs import read_observation
from backend.engine.types import InputError
from backend.engine.views import prepare_views
from backend.wire.views import look_at_rows
from tests.backend.conftest import write_model
from tests.backend.test_cli_fuzz import run_in_process
from tests.backend.test_engine_views import WORLD_CENTRE, WORLD_SCALE, world_views


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """Three pictures of the box in the world, written as PNG files, and their camera rows."""
    folder = tmp_path_factory.mktemp("views")
    pictures, rows, _, _ = world_views(3, seed=3)
    for i, picture in enumerate(pictures):
        Image.fromarray(picture).save(folder / f"view{i}.png")
    return folder, rows


def write_views(folder: Path, views: list[dict[str, object]], name: str = "views.json") -> Path:
    path = folder / name
    path.write_text(json.dumps({"views": views}))
    return path


def as_entries(rows: np.ndarray) -> list[dict[str, object]]:
    """The rows as a camera file's entries, in its rotation + focal form."""
    return [
        {
            "image": f"view{i}.png",
            "position": row[9:12].tolist(),
            "rotation": row[:9].reshape(3, 3).tolist(),
            "focal": float(row[12]),
            "principal": row[13:15].tolist(),
        }
        for i, row in enumerate(rows)
    ]


def test_a_camera_file_gives_the_pictures_and_their_cameras(scene: tuple[Path, np.ndarray]) -> None:
    folder, rows = scene
    observation = read_observation(write_views(folder, as_entries(rows)))
    assert observation.views is not None and observation.cameras is not None
    assert observation.views.shape == (3, 96, 96, 4)
    np.testing.assert_allclose(observation.cameras, rows, atol=1e-5)
    assert (
        np.linalg.norm(prepare_views(observation.views, observation.cameras, 64).frame.center - WORLD_CENTRE)
        < 0.5
    )
    # the look-at form names the same camera as its rotation (the world's +z up)
    eye, target = rows[0, 9:12], WORLD_CENTRE
    entry = {"image": "view0.png", "position": eye.tolist(), "look_at": target.tolist(), "fov_degrees": 40}
    looked = read_observation(write_views(folder, [entry], "one.json"))
    np.testing.assert_allclose(
        looked.cameras, look_at_rows(eye[None], target[None], np.array([40.0])), atol=1e-6
    )


def test_pictures_of_other_sizes_are_padded_with_their_cameras(scene: tuple[Path, np.ndarray]) -> None:
    folder, rows = scene
    Image.open(folder / "view1.png").resize((48, 48)).save(folder / "small.png")
    entries = as_entries(rows)
    entries[1]["image"] = "small.png"
    observation = read_observation(write_views(folder, entries, "mixed.json"))
    assert observation.views is not None and observation.cameras is not None
    assert observation.views.shape == (3, 96, 96, 4)
    np.testing.assert_allclose(observation.cameras[1, 12], rows[1, 12] / 2, rtol=1e-6)  # half as wide


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e.pop("image"), r'view 1 in .* needs "image"'),
        (lambda e: e.update(image="missing.png"), "picture not found: .*missing.png"),
        (lambda e: e.update(image="views.json"), "'views.json' is not a picture"),
        (lambda e: e.pop("position"), r'view 1 in .* needs "position"'),
        (lambda e: e.update(position=[0, 1]), r'"position" must hold 3 finite numbers'),
        (lambda e: e.update(look_at=[0, 0, 0]), r'needs either "look_at" or "rotation" \(one of them\)'),
        (lambda e: e.update(fov_degrees=40), r'needs either "fov_degrees" or "focal"'),
        (lambda e: e.update(focal=-1.0), r'"focal" must be positive'),
        (lambda e: e.update(rotation=[[2, 0, 0], [0, 1, 0], [0, 0, 1]]), r'"rotation" must be a rotation'),
        (lambda e: e.update(principal="middle"), r'"principal" must hold numbers'),
    ],
)
def test_a_bad_camera_file_is_refused_by_name(
    scene: tuple[Path, np.ndarray], change: object, message: str
) -> None:
    folder, rows = scene
    entries = as_entries(rows)
    change(entries[0])  # type: ignore[operator]
    with pytest.raises(InputError, match=message):
        read_observation(write_views(folder, entries, "bad.json"))


def test_a_file_that_is_not_a_camera_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read .* as a camera file"):
        read_observation(tmp_path / "a.json")
    (tmp_path / "b.json").write_text('{"views": []}')
    with pytest.raises(InputError, match='needs a "views" list'):
        read_observation(tmp_path / "b.json")


def test_the_command_line_reconstructs_views_in_the_world(
    scene: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    folder, rows = scene
    model = write_model(tmp_path, "views", 5, kind="views", local_features=True, image_size=64)
    out = tmp_path / "out.ply"
    args = [str(write_views(folder, as_entries(rows))), "-o", str(out), "--model", str(model)]
    status, stderr = run_in_process(["reconstruct", *args, "--resolution", "32", "--tau", "0.05"])
    assert status == 0, stderr
    mesh = trimesh.load(out, force="mesh", process=False)
    if len(mesh.faces):  # an untrained model: whatever it predicts stands around the object
        assert np.linalg.norm(np.asarray(mesh.vertices).mean(0) - WORLD_CENTRE) < 4.0
    status, stderr = run_in_process(
        ["reconstruct", *args[:-2], "-o", str(tmp_path / "b.ply"), "--weights-dir", str(tmp_path / "none")]
    )
    assert status == 2 and "error:" in stderr


def busy_scene(folder: Path) -> tuple[list[dict[str, object]], np.ndarray]:
    """The box's three views pasted on noise, each with a mask file of its outline, as entries."""
    rng = np.random.default_rng(5)
    pictures, rows, _, outlines = world_views(3, seed=3)
    entries = as_entries(rows)
    for i, (picture, found) in enumerate(zip(pictures, outlines, strict=True)):
        noisy = np.where(found[..., None], picture[..., :3], rng.integers(0, 256, picture[..., :3].shape))
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"busy{i}.png")
        Image.fromarray((found * 255).astype(np.uint8)).save(folder / f"mask{i}.png")
        entries[i].update(image=f"busy{i}.png", mask=f"mask{i}.png")
    return entries, rows


def test_a_mask_per_view_finds_the_object_on_a_busy_backdrop(tmp_path: Path) -> None:
    """Pictures on noise cannot be framed by their backdrop; with masks they give the frame the
    plain pictures give."""
    entries, rows = busy_scene(tmp_path)
    unmasked = [{k: v for k, v in e.items() if k != "mask"} for e in entries]
    busy = read_observation(write_views(tmp_path, unmasked, "busy.json"))
    with pytest.raises(InputError, match="picture 1: no plain background"):
        prepare_views(busy.views, busy.cameras, 64)
    masked = read_observation(write_views(tmp_path, entries, "masked.json"))
    assert masked.views is not None and masked.cameras is not None
    plain, _, _, _ = world_views(3, seed=3)
    frame = prepare_views(masked.views, masked.cameras, 64).frame
    reference = prepare_views(plain, rows, 64).frame
    np.testing.assert_allclose(frame.center, reference.center, atol=0.02 * reference.scale)
    assert frame.scale == pytest.approx(reference.scale, rel=0.03)


@pytest.mark.parametrize(
    ("mask", "message"),
    [
        (np.zeros((96, 96), np.uint8), "view 2 in .*: the mask is empty: it marks no object"),
        (np.full((96, 96), 255, np.uint8), "view 2 in .*: the mask covers the whole picture"),
        (
            np.full((48, 96), 255, np.uint8),
            r"view 2 in .*: the mask is \(96, 48\) pixels but the picture is \(96, 96\)",
        ),
        (None, "mask file not found: .*nowhere.png"),
    ],
)
def test_a_mask_that_is_empty_covers_everything_or_does_not_fit_is_refused_by_view(
    tmp_path: Path, mask: np.ndarray | None, message: str
) -> None:
    entries, _ = busy_scene(tmp_path)
    if mask is None:
        entries[1]["mask"] = "nowhere.png"
    else:
        Image.fromarray(mask).save(tmp_path / "mask1.png")
    with pytest.raises(InputError, match=message):
        read_observation(write_views(tmp_path, entries, "bad-mask.json"))


def test_the_shipped_views_model_reconstructs_a_camera_file_where_the_box_is(
    scene: tuple[Path, np.ndarray], tmp_path: Path
) -> None:
    """Without --model a camera file goes to the shipped views model, whose mesh lands on the box
    (0.8 x 0.3 x 0.5 in its unit frame, scaled and moved into the world)."""
    shipped = Path(__file__).resolve().parents[2] / "backend" / "weights" / "views.safetensors"
    if not shipped.is_file():
        pytest.skip("no shipped views model (backend/weights/views.safetensors)")
    folder, rows = scene
    out = tmp_path / "box.ply"
    args = ["reconstruct", str(write_views(folder, as_entries(rows))), "-o", str(out), "--resolution", "64"]
    status, stderr = run_in_process(args)
    assert status == 0, stderr
    vertices = np.asarray(trimesh.load(out, force="mesh", process=False).vertices)
    half = np.array([0.4, 0.15, 0.25]) * WORLD_SCALE / 0.8
    lo, hi = (
        np.maximum(vertices.min(0), WORLD_CENTRE - half),
        np.minimum(vertices.max(0), WORLD_CENTRE + half),
    )
    covered = np.prod(np.clip(hi - lo, 0, None)) / np.prod(2 * half)
    assert covered > 0.8  # the mesh's box holds most of the box: it is where the box is
    assert np.all(np.ptp(vertices, 0) < 4 * 2 * half + 0.1 * WORLD_SCALE)  # and of its order of size
    assert np.linalg.norm((vertices.min(0) + vertices.max(0)) / 2 - WORLD_CENTRE) < 0.2 * WORLD_SCALE
