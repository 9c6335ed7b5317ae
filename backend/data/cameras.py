"""Pinhole cameras for reference pictures: where each one stands, where it looks, and its lens.

Convention (Blender's and OpenGL's, as ``wire/constants.py`` states for the image models): a
camera looks down its own -z axis, x to the right and y up, and its pictures are square. A world
point p is at q = R (p - centre) in the camera's frame and lands at

    u = focal * q_x / -q_z + principal_x,    v = focal * q_y / -q_z + principal_y

with u to the right and v up, both -1..1 across the picture; focal = 1 / tan(fov / 2). Cutting a
square out of a picture makes the same camera with another focal and principal point
(``Cameras.crop``), so framing a picture (``engine/framing.py``) keeps the camera exact.

``Cameras`` holds V of them as tensors, one row each, so that every view of a batch projects in
one call. ``random_cameras`` draws the training renders' cameras: field of view 20-60 degrees,
elevation -10 to 60 degrees over the world's z (Blender's up), roll within 10 degrees, at the
distance where the object fills a drawn share of the picture.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ..wire.constants import CAMERA_DISTANCE, FOV_DEGREES
from ..wire.views import CAMERA_ROW, VIEW_SETS, look_at_rows

if TYPE_CHECKING:
    from ..engine.framing import Framing

FOV_RANGE = (20.0, 60.0)  # degrees
ELEVATION_RANGE = (-10.0, 60.0)  # degrees above the horizon
ROLL_LIMIT = 10.0  # degrees either way
FILL_RANGE = (0.5, 0.95)  # the silhouette's longest side over the picture's
SET_FOV_DEGREES, SET_FILL = 40.0, 0.75  # a named set's cameras (front, side, top)
FRAMING_ITERATIONS = 10  # distance corrections: the fill then lies within about 0.01 of the drawn one
ARRAY_WIDTH = CAMERA_ROW  # rotation (9), centre (3), focal (1), principal point (2)
# held-out pictures shot outside those ranges (data.cameras = "outside"), to measure how far the
# views model carries: each value from one of its bands beyond the training range's ends
OUTSIDE_FOV = ((10.0, 20.0), (60.0, 80.0))
OUTSIDE_ELEVATION = ((-30.0, -10.0), (60.0, 80.0))
OUTSIDE_ROLL = ((-25.0, -10.0), (10.0, 25.0))
OUTSIDE_FILL = ((0.3, 0.5),)
Bands = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ShotRanges:
    """Where ``random_cameras`` draws from: each value uniform in one of its bands (in degrees,
    fill as a share of the picture)."""

    elevation: Bands
    fov: Bands
    roll: Bands
    fill: Bands


TRAINING_SHOTS = ShotRanges((ELEVATION_RANGE,), (FOV_RANGE,), ((-ROLL_LIMIT, ROLL_LIMIT),), (FILL_RANGE,))
OUTSIDE_SHOTS = ShotRanges(OUTSIDE_ELEVATION, OUTSIDE_FOV, OUTSIDE_ROLL, OUTSIDE_FILL)


@dataclass(frozen=True)
class Cameras:
    """V pinhole cameras: ``rotation`` (V, 3, 3) world to camera (rows: the camera's x, y, z axes
    in the world), ``centre`` (V, 3), ``focal`` (V,) and ``principal`` (V, 2), as above."""

    rotation: torch.Tensor
    centre: torch.Tensor
    focal: torch.Tensor
    principal: torch.Tensor

    def __len__(self) -> int:
        return int(self.centre.shape[0])

    @staticmethod
    def canonical(n: int = 1) -> Cameras:
        """The image models' fixed camera (``wire/constants.py``), n times."""
        focal = 1.0 / math.tan(math.radians(FOV_DEGREES) / 2)
        return Cameras(
            torch.eye(3).expand(n, 3, 3).clone(),
            torch.tensor([0.0, 0.0, CAMERA_DISTANCE]).expand(n, 3).clone(),
            torch.full((n,), focal),
            torch.zeros(n, 2),
        )

    @staticmethod
    def look_at(
        eye: torch.Tensor,
        target: torch.Tensor,
        fov_degrees: torch.Tensor,
        roll_degrees: torch.Tensor | None = None,
    ) -> Cameras:
        """Cameras at ``eye`` (V, 3) looking at ``target`` (V, 3) (``wire.views.look_at_rows``)."""
        roll = None if roll_degrees is None else roll_degrees.numpy()
        return Cameras.from_array(look_at_rows(eye.numpy(), target.numpy(), fov_degrees.numpy(), roll))

    def to_camera(self, p: torch.Tensor) -> torch.Tensor:
        """World points (V, M, 3), one set per camera -> the same points in each camera's frame;
        in the points' precision even under autocast (``--half``): in bfloat16 the points would
        land up to about a tenth of a pixel off, and the surface turns rough."""
        with torch.autocast(p.device.type, enabled=False):
            return torch.einsum("vij,vmj->vmi", self.rotation, p - self.centre[:, None])

    def project(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World points (V, M, 3) -> picture coordinates (V, M, 2) as (u, v) above, and their depth
        (V, M) in front of the camera (negative behind it)."""
        q = self.to_camera(p)
        depth = -q[..., 2]
        uv = q[..., :2] / depth.clamp(min=1e-6)[..., None] * self.focal[:, None, None]
        uv = uv + self.principal[:, None]
        return uv, depth

    def sample(
        self, maps: torch.Tensor, p: torch.Tensor, padding: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each camera's picture-aligned maps (V, C, H, W), read bilinearly where points (V, M, 3)
        project (``padding``: grid_sample's, beyond the picture) -> (V, C, M), with the points'
        picture coordinates (V, M, 2) and depths (V, M) from ``project``."""
        uv, depth = self.project(p)
        where = torch.stack([uv[..., 0], -uv[..., 1]], -1)[:, None]  # grid_sample's y runs down
        values = F.grid_sample(maps, where, mode="bilinear", padding_mode=padding, align_corners=False)
        return values[:, :, 0], uv, depth

    def silhouettes(self, points: np.ndarray, size: int) -> np.ndarray:
        """The (V, size, size) pixels, row-major from the top-left, that points (K, 3) in front of
        each camera fall into: dense surface samples give a shape's mask as each camera sees it.
        (In float64, so that a sample on a pixel's edge falls the same way on every machine.)"""
        exact = Cameras(
            self.rotation.double(), self.centre.double(), self.focal.double(), self.principal.double()
        )
        p = torch.as_tensor(np.asarray(points, np.float64)).expand(len(self), -1, -1)
        uv, depth = exact.project(p)
        col = torch.floor((uv[..., 0] + 1) / 2 * size).long()
        row = torch.floor((1 - uv[..., 1]) / 2 * size).long()
        inside = (depth > 1e-6) & (col >= 0) & (col < size) & (row >= 0) & (row < size)
        view = torch.arange(len(self))[:, None].expand_as(col)
        masks = torch.zeros(len(self), size, size, dtype=torch.bool)
        masks[view[inside], row[inside], col[inside]] = True
        return masks.numpy()

    def rays(self, size: int) -> torch.Tensor:
        """Unit world directions (V, size * size, 3) through the pixel centres, row-major from the
        top-left pixel; every ray starts at its camera's ``centre``."""
        t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        v, u = torch.meshgrid(-t, t, indexing="ij")  # rows go down, v goes up
        uv = torch.stack([u, v], -1).reshape(1, -1, 2)
        xy = (uv - self.principal[:, None]) / self.focal[:, None, None]
        d = torch.cat([xy, -torch.ones_like(xy[..., :1])], -1)
        d = torch.einsum("vji,vmj->vmi", self.rotation, d)  # camera to world: the rotation's transpose
        return d / d.norm(dim=-1, keepdim=True)

    def one(self, i: int) -> Cameras:
        """Camera ``i`` alone."""
        return Cameras(
            self.rotation[i : i + 1], self.centre[i : i + 1], self.focal[i : i + 1], self.principal[i : i + 1]
        )

    def crop(self, centre: torch.Tensor, half: torch.Tensor) -> Cameras:
        """The cameras of square crops with centre ``centre`` (V, 2) in (u, v) and half-side ``half``
        (V,) in the same units: the crop spans -1..1 again."""
        return Cameras(
            self.rotation, self.centre, self.focal / half, (self.principal - centre) / half[:, None]
        )

    def framed(self, framing: Framing) -> Cameras:
        """This one camera for its picture cropped as ``engine.framing.frame`` crops it (the crop's
        centre and side are in units of the picture's longest side: twice that in (u, v))."""
        centre = torch.tensor([[2.0 * framing.centre[0], 2.0 * framing.centre[1]]])
        return self.crop(centre, torch.tensor([framing.side]))

    def to_rows(self) -> torch.Tensor:
        """(V, ARRAY_WIDTH): rotation, centre, focal and principal point, one camera per row."""
        return torch.cat([self.rotation.reshape(-1, 9), self.centre, self.focal[:, None], self.principal], 1)

    def to_array(self) -> np.ndarray:
        """``to_rows`` as float32 numpy: how cameras are stored with a shape and sent on the wire."""
        return self.to_rows().detach().cpu().numpy().astype(np.float32)

    @staticmethod
    def from_array(array: np.ndarray) -> Cameras:
        return Cameras.from_rows(torch.as_tensor(np.asarray(array, np.float32)))

    @staticmethod
    def from_rows(rows: torch.Tensor) -> Cameras:
        """Cameras from rows (..., ARRAY_WIDTH) as ``to_array`` writes them, on the rows' device."""
        a = rows.reshape(-1, ARRAY_WIDTH)
        return Cameras(a[:, :9].reshape(-1, 3, 3), a[:, 9:12], a[:, 12], a[:, 13:15])

    def transformed(self, matrix: torch.Tensor) -> Cameras:
        """The same cameras after the world is rotated or mirrored by ``matrix`` (V, 3, 3): p -> M p.
        (A mirror makes a left-handed camera, which projects the mirrored world exactly.)"""
        rotation = self.rotation @ matrix.transpose(1, 2)  # M is orthogonal: its inverse is its transpose
        return Cameras(rotation, torch.einsum("vij,vj->vi", matrix, self.centre), self.focal, self.principal)


def random_cameras(surface: np.ndarray, n: int, rng: np.random.Generator, outside: bool = False) -> Cameras:
    """n cameras around an object given by its surface samples (K, 3), each drawn from the ranges
    above (or, ``outside``, from the bands beyond them) and framed as drawn (``framed_cameras``)."""
    ranges = OUTSIDE_SHOTS if outside else TRAINING_SHOTS
    azimuth = np.radians(rng.uniform(0.0, 360.0, n))
    elevation = np.radians(_from_bands(rng, ranges.elevation, n))
    fov, roll, fill = (_from_bands(rng, bands, n) for bands in (ranges.fov, ranges.roll, ranges.fill))
    ground = np.cos(elevation)
    direction = np.stack([ground * np.cos(azimuth), ground * np.sin(azimuth), np.sin(elevation)], 1)
    return framed_cameras(surface, direction, fov, roll, fill)


def _from_bands(rng: np.random.Generator, bands: Bands, n: int) -> np.ndarray:
    """n values, each uniform in one of ``bands`` (chosen uniformly; one band costs no draw)."""
    if len(bands) == 1:
        return rng.uniform(*bands[0], n)
    low, high = np.asarray(bands, np.float64)[rng.integers(len(bands), size=n)].T
    return rng.uniform(low, high)


def set_cameras(surface: np.ndarray, name: str) -> Cameras:
    """The cameras of a named set of views (``wire.views.VIEW_SETS``: front, side, top), framed
    as a modeller frames reference pictures (``SET_FOV_DEGREES``, ``SET_FILL``)."""
    direction = np.asarray(VIEW_SETS[name], np.float64)
    n = len(direction)
    return framed_cameras(surface, direction, np.full(n, SET_FOV_DEGREES), np.zeros(n), np.full(n, SET_FILL))


def framed_cameras(
    surface: np.ndarray, direction: np.ndarray, fov: np.ndarray, roll: np.ndarray, fill: np.ndarray
) -> Cameras:
    """Cameras looking at an object (its surface samples, (K, 3)) from the unit ``direction``s
    (n, 3), with fields of view ``fov`` (degrees) and ``roll``, each moved along its view axis
    until the object's silhouette fills ``fill`` of the picture (measured on the samples'
    projection, so a flat object seen edge-on is framed by its real outline, not its bounding
    sphere)."""
    points = torch.as_tensor(np.asarray(surface, np.float32))
    target = 0.5 * (points.min(0).values + points.max(0).values)
    radius = float((points - target).norm(dim=-1).max())
    n = len(direction)
    direction_t = torch.from_numpy(np.asarray(direction, np.float32))
    fov_t = torch.from_numpy(np.asarray(fov, np.float32))
    roll_t = torch.from_numpy(np.asarray(roll, np.float32))
    fill_t = torch.from_numpy(np.asarray(fill, np.float32))
    # a sphere of the object's radius fills `fill` at this distance; then correct by measurement
    distance = radius / torch.sin(torch.atan(fill_t * torch.tan(torch.deg2rad(fov_t) / 2)))
    for _ in range(FRAMING_ITERATIONS):
        cameras = Cameras.look_at(
            target + direction_t * distance[:, None], target.expand(n, 3), fov_t, roll_t
        )
        uv, _ = cameras.project(points.expand(n, -1, -1))
        extent = (uv.max(1).values - uv.min(1).values).max(-1).values / 2  # of the picture's side
        # the silhouette shrinks about as 1 / distance, measured from the object's centre
        distance = (distance * extent / fill_t).clamp(min=radius * 1.05)
    return Cameras.look_at(target + direction_t * distance[:, None], target.expand(n, 3), fov_t, roll_t)
