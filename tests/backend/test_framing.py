"""Framing a user's picture as the training renders are framed (backend/engine/framing.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backend.engine.framing import TRAINING_FILL, TRAINING_OFFSET, Framing, frame, object_mask
from backend.engine.observation import prepare_image
from backend.engine.reconstructor import Reconstructor
from backend.engine.types import InputError, Observation, ReconstructOptions
from backend.wire.constants import VIEW_WIDTH

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def picture(size: tuple[int, int], box: tuple[int, int, int, int], backdrop=(0.2, 0.5, 0.3)) -> np.ndarray:
    """An (H, W, 3) float picture: a two-tone block (rows top:bottom, cols left:right) on a backdrop."""
    h, w = size
    top, bottom, left, right = box
    img = np.empty((h, w, 3), np.float32)
    img[:] = backdrop
    img[top:bottom, left:right] = (0.9, 0.8, 0.1)
    img[top : (top + bottom) // 2, left:right] = (0.7, 0.1, 0.1)
    return img


def test_the_backdrop_colour_comes_from_the_border() -> None:
    img = picture((40, 60), (10, 30, 20, 35))
    weights = object_mask(img)
    assert weights[10:30, 20:35].min() == 1.0 and weights.sum() == 20 * 15


def test_alpha_wins_over_the_border_and_a_mask_over_both() -> None:
    img = picture((32, 32), (4, 28, 4, 28))
    alpha = np.zeros((32, 32), np.float32)
    alpha[8:12, 8:12] = 1.0
    assert object_mask(img, alpha).sum() == 16
    mask = np.zeros((32, 32), bool)
    mask[20:22, 20:30] = True
    assert object_mask(img, alpha, mask).sum() == 20
    assert object_mask(img, np.ones((32, 32), np.float32)).sum() == 24 * 24  # opaque: alpha says nothing


def test_a_picture_framed_as_in_training_is_left_whole() -> None:
    img = picture((40, 40), (8, 32, 10, 30))  # the block fills 0.6 of the picture, centred
    square, framing = frame(*with_mask(img))
    assert framing == Framing.whole() and square.shape == (40, 40, 3)
    np.testing.assert_array_equal(square[8:32, 10:30], img[8:32, 10:30])
    assert (square[:8] == 1.0).all()  # the backdrop is cut away to white


def test_loose_and_tight_pictures_are_brought_to_the_nearest_training_framing() -> None:
    low, high = TRAINING_FILL
    loose, loose_framing = frame(*with_mask(picture((200, 300), (40, 160, 200, 300))))  # 120 / 300
    assert loose.shape == (267, 267, 3) and box_in(loose)[2] - box_in(loose)[0] == pytest.approx(
        low, abs=0.01
    )
    # the crop moves towards the object, and leaves it as far off centre as training renders go
    offset = (250 - 150) / 300 - loose_framing.centre[0]
    assert offset == pytest.approx(TRAINING_OFFSET * 267 / 300, abs=0.01)
    assert loose_framing.side == pytest.approx(267 / 300)
    tight, tight_framing = frame(*with_mask(picture((40, 40), (1, 39, 10, 30))))  # 38 / 40
    assert tight.shape == (48, 48, 3) and tight_framing.side == pytest.approx(48 / 40)
    assert box_in(tight)[2] - box_in(tight)[0] == pytest.approx(high, abs=0.02)


def with_mask(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return img, object_mask(img)


def box_in(crop: np.ndarray) -> np.ndarray:
    """The object's box in a square crop: top, left, bottom, right as fractions of its side."""
    found = object_mask(crop) > 0.5
    rows, cols = np.flatnonzero(found.any(axis=1)), np.flatnonzero(found.any(axis=0))
    return np.array([rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]) / len(crop)


def test_the_crop_maps_back_to_the_whole_pictures_camera_frame() -> None:
    centre, scale = Framing((0.25, -0.1), 0.5).to_picture()
    np.testing.assert_allclose(centre, [0.25 * VIEW_WIDTH, -0.1 * VIEW_WIDTH, 0.0])
    assert scale == 0.5
    whole_centre, whole_scale = Framing.whole().to_picture()
    assert whole_scale == 1.0 and not whole_centre.any()


@pytest.mark.parametrize(
    ("img", "message"),
    [
        (np.full((16, 16, 3), 0.7, np.float32), "no object found"),
        (np.random.default_rng(0).random((16, 16, 3)).astype(np.float32), "no plain background"),
    ],
)
def test_pictures_without_a_findable_object_are_refused(img: np.ndarray, message: str) -> None:
    with pytest.raises(InputError, match=message):
        frame(img, object_mask(img))


def test_masks_that_are_empty_cover_everything_or_do_not_fit_are_refused() -> None:
    img = picture((16, 16), (4, 12, 4, 12))
    with pytest.raises(InputError, match="the mask is empty: it marks no object"):
        object_mask(img, mask=np.zeros((16, 16)))
    with pytest.raises(InputError, match="the mask covers the whole picture"):
        object_mask(img, mask=np.ones((16, 16)))
    with pytest.raises(InputError, match="the mask holds NaN"):
        object_mask(img, mask=np.full((16, 16), np.nan))
    with pytest.raises(InputError, match=r"the mask is \(8, 16\) pixels but the picture is \(16, 16\)"):
        object_mask(img, mask=np.ones((16, 8)))


def test_without_framing_the_whole_picture_is_padded_as_before() -> None:
    img = picture((20, 40), (5, 15, 10, 30))
    prepared = prepare_image(img, 40, framed=False)
    assert prepared.frame.scale == 1.0 and not prepared.frame.center.any()
    x = prepared.inputs[0].numpy()
    assert np.allclose(x[:, :10], 1.0) and np.allclose(x[:, 30:], 1.0)  # white padding above and below


def test_two_loose_pictures_give_one_shape_at_their_own_sizes() -> None:
    """End to end with the shipped image model: an object at a tenth and at a fifth of the
    picture is framed alike, so the mesh is the same, scaled and moved with the picture."""
    engine = Reconstructor("cpu")
    options = ReconstructOptions(resolution=32, keep_field=False)
    small = engine.reconstruct("image", Observation(image=picture((240, 240), (108, 132, 110, 130))), options)
    large = engine.reconstruct("image", Observation(image=picture((120, 120), (48, 72, 50, 70))), options)
    assert len(small.vertices) and len(large.vertices)
    np.testing.assert_allclose(np.ptp(small.vertices, axis=0) * 2, np.ptp(large.vertices, axis=0), rtol=0.1)
    np.testing.assert_allclose(small.vertices.mean(axis=0) * 2, large.vertices.mean(axis=0), atol=0.05)


def test_the_command_line_takes_a_mask_where_the_backdrop_is_not_plain(tmp_path: Path) -> None:
    """A picture on a busy backdrop is refused, and reconstructed once a mask says where the object is."""
    rng = np.random.default_rng(1)
    img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)  # noise everywhere...
    img[12:36, 14:34] = (200, 40, 40)  # ...around a red block
    mask = np.zeros((48, 48), np.uint8)
    mask[12:36, 14:34] = 255
    Image.fromarray(img).save(tmp_path / "photo.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray(mask[:24]).save(tmp_path / "half.png")
    out = tmp_path / "mesh.ply"
    base = ["reconstruct", str(tmp_path / "photo.png"), "-o", str(out), "--resolution", "32"]

    refused = run_cli(base)
    assert refused.returncode == 2 and "no plain background" in refused.stderr and not out.exists()
    misfit = run_cli([*base, "--mask", str(tmp_path / "half.png")])
    assert misfit.returncode == 2 and "the mask is (48, 24) pixels but the picture is (48, 48)" in (
        misfit.stderr
    )
    cloud = ["reconstruct", str(EXAMPLES / "chair_points.ply"), "-o", str(out)]
    wrong_input = run_cli([*cloud, "--mask", str(tmp_path / "mask.png")])
    assert wrong_input.returncode == 2 and "a mask only applies to a picture" in wrong_input.stderr
    done = run_cli([*base, "--mask", str(tmp_path / "mask.png")])
    assert done.returncode == 0, done.stderr
    assert out.is_file() and out.stat().st_size > 0


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "backend", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
