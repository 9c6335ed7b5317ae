"""A small sphere-tracing renderer for signed distance fields, in torch.

Camera convention (also the image model's prediction frame): the camera sits at
(0, 0, CAMERA_DISTANCE) and looks down -z, with x to the right and y up (Blender's
and OpenGL's camera convention). The object is centred on the origin and scaled
so that the longest side of its bounding box, in this frame, is 1.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ..wire.constants import CAMERA_DISTANCE, FOV_DEGREES
from .cameras import Cameras

SdfFn = Callable[[torch.Tensor], torch.Tensor]  # (S, M, 3) -> (S, M)


def camera_rays(size: int) -> torch.Tensor:
    """Unit ray directions (size*size, 3), row-major from the top-left pixel."""
    half = math.tan(math.radians(FOV_DEGREES) / 2)
    t = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    y, x = torch.meshgrid(-t * half, t * half, indexing="ij")  # rows go down, y goes up
    d = torch.stack([x, y, -torch.ones_like(x)], -1).reshape(-1, 3)
    return d / d.norm(dim=-1, keepdim=True)


def _trace(
    sdf: SdfFn, origin: torch.Tensor, dirs: torch.Tensor, near: torch.Tensor, far: torch.Tensor, steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sphere tracing from ``origin`` along ``dirs`` (S, M, 3) between ``near`` and ``far`` ->
    (hit (S, M) bool, hit points (S, M, 3)).

    Each step evaluates only the rays still marching (per shape, padded to the most any shape
    has): most rays hit or leave early, and a ray that has stopped would not move again.
    """
    s, m = dirs.shape[:2]
    t = near.expand(s, m).clone()
    far = far.expand(s, m)
    start = origin.expand(s, 1, 3) if origin.ndim == 1 else origin
    hit = torch.zeros(s, m, dtype=torch.bool)
    rows = torch.arange(s)[:, None]
    for _ in range(steps):
        going = ~hit & (t <= far)
        count = going.sum(1)
        k = int(count.max())
        if k == 0:
            break
        # the marching rays of each shape first (a stable sort keeps them in order), then padding
        ray = torch.argsort((~going).to(torch.uint8), dim=1, stable=True)[:, :k]
        real = torch.arange(k)[None] < count[:, None]
        tk = t[rows, ray]
        d = sdf(start + tk[..., None] * dirs[rows, ray])
        now = (d.abs() < 1e-3) & real
        step = torch.where(now | ~real, tk, tk + 0.8 * d.clamp(min=-0.05))  # 0.8: some SDFs are bounds
        t[rows, ray] = torch.where(real, step, t[rows, ray])
        hit[rows, ray] |= now
    hit &= t < far
    return hit, start + t[..., None] * dirs


def _normals(sdf: SdfFn, p: torch.Tensor) -> torch.Tensor:
    """Unit normals (S, M, 3) at points p by central differences."""
    eps = 1e-3
    grads = []
    for axis in range(3):
        e = torch.zeros(3)
        e[axis] = eps
        grads.append(sdf(p + e) - sdf(p - e))
    n = torch.stack(grads, -1)
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-9)


def render(
    sdf: SdfFn,
    n_shapes: int,
    size: int,
    rng: np.random.Generator,
    steps: int = 64,
) -> np.ndarray:
    """Render S shapes with random colour, light and background -> (S, size, size, 3) uint8."""
    dirs = camera_rays(size).expand(n_shapes, -1, -1)
    origin = torch.tensor([0.0, 0.0, CAMERA_DISTANCE])
    near, far = torch.tensor(CAMERA_DISTANCE - 0.9), torch.tensor(CAMERA_DISTANCE + 0.9)  # radius 0.87
    hit, p = _trace(sdf, origin, dirs, near, far, steps)
    n = _normals(sdf, p)

    s = n_shapes
    light = torch.from_numpy(rng.normal(size=(s, 3)).astype(np.float32))
    light[:, 2] = light[:, 2].abs() + 0.5  # mostly from the camera side
    light = light / light.norm(dim=-1, keepdim=True)
    albedo = torch.from_numpy(rng.uniform(0.15, 0.95, (s, 1, 3)).astype(np.float32))
    ambient = torch.from_numpy(rng.uniform(0.15, 0.4, (s, 1, 1)).astype(np.float32))
    background = torch.from_numpy(rng.uniform(0.85, 1.0, (s, 1, 1)).astype(np.float32)).expand(s, 1, 3)
    diffuse = (n * light[:, None]).sum(-1, keepdim=True).clamp(min=0)
    half_vec = light[:, None] - dirs
    half_vec = half_vec / half_vec.norm(dim=-1, keepdim=True)
    spec = (n * half_vec).sum(-1, keepdim=True).clamp(min=0) ** 32 * 0.3
    color = albedo * (ambient + (1 - ambient) * diffuse) + spec
    img = torch.where(hit[..., None], color, background).clamp(0, 1)
    return (img.reshape(s, size, size, 3) * 255 + 0.5).to(torch.uint8).numpy()


MATERIALS = ("grey", "colour", "texture")  # drawn with MATERIAL_ODDS
MATERIAL_ODDS = (0.3, 0.4, 0.3)
BACKDROPS = ("white", "colour", "transparent")  # drawn with BACKDROP_ODDS
BACKDROP_ODDS = (0.4, 0.3, 0.3)
NOISE_MAX = 0.02  # sensor noise std, of the full range
JPEG_ODDS, JPEG_QUALITY = 0.5, (40, 95)  # opaque pictures saved as JPEG, at a quality in this range


@dataclass(frozen=True)
class Looks:
    """How ``render_views`` lights and saves a picture: the ambient light's share, the highlights'
    strength, the most sensor noise, the JPEG quality range, and whether the key light comes from
    behind the object (grazing it) instead of from the camera's side."""

    ambient: tuple[float, float]
    shine: tuple[float, float]
    noise_max: float
    jpeg_quality: tuple[int, int]
    backlit: bool


TRAINING_LOOKS = Looks((0.15, 0.4), (0.0, 0.4), NOISE_MAX, JPEG_QUALITY, backlit=False)
# held-out pictures lit and saved outside those ranges: dim ambient light, the key light grazing
# the object or from behind it, strong highlights, twice the noise, worse JPEG
OUTSIDE_LOOKS = Looks((0.03, 0.15), (0.4, 0.8), 0.04, (15, 40), backlit=True)


def _albedo(p: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """One object's material at points p (S, M, 3) seen in S views: a grey, a colour or a
    two-colour texture (stripes or checks in the object's own coordinates, so the pattern stays
    on the surface from every side) -> (S, M, 3)."""
    kind = MATERIALS[rng.choice(len(MATERIALS), p=MATERIAL_ODDS)]
    if kind == "grey":
        return torch.full_like(p, float(rng.uniform(0.55, 0.95)))
    first = torch.from_numpy(rng.uniform(0.1, 0.95, 3).astype(np.float32))
    if kind == "colour":
        return first.expand_as(p).clone()
    second = torch.from_numpy(rng.uniform(0.1, 0.95, 3).astype(np.float32))
    frequency = float(rng.uniform(4.0, 12.0)) * math.pi
    if rng.random() < 0.5:  # stripes across a random direction
        axis = torch.from_numpy(rng.normal(size=3).astype(np.float32))
        pattern = torch.sin(frequency * (p @ (axis / axis.norm()))) > 0
    else:  # checks
        pattern = torch.sin(frequency * p).prod(-1) > 0
    return torch.where(pattern[..., None], first, second)


def _soft_shadow(sdf: SdfFn, p: torch.Tensor, light: torch.Tensor, steps: int = 24) -> torch.Tensor:
    """How much of the light (S, 3) reaches points p (S, M, 3): 0 in shadow, 1 in full light, soft
    in between (the nearest miss along the ray to the light, relative to the distance travelled)."""
    lit = torch.ones(p.shape[:2])
    t = torch.full(p.shape[:2], 0.01)
    for _ in range(steps):
        h = sdf(p + t[..., None] * light[:, None])
        lit = torch.minimum(lit, (8.0 * h / t).clamp(0.0, 1.0))
        t = t + h.clamp(0.01, 0.2)
    return lit


def render_views(
    sdf: SdfFn, cameras: Cameras, size: int, rng: np.random.Generator, steps: int = 96, outside: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Render one object (``sdf`` batched over views, S of them) through S cameras, looking as
    users' pictures do: one grey, coloured or textured material; in each view a key light with
    soft shadows, a white, coloured or transparent backdrop, sensor noise and, for opaque
    pictures, JPEG artefacts. ``outside``: lit and saved outside the training ranges (``OUTSIDE_LOOKS``).

    Returns (S, size, size, 4) uint8 RGBA (alpha 0 only on a transparent backdrop) and the exact
    object mask (S, size, size) bool. The object lies within radius 0.9 of the origin.
    """
    s = len(cameras)
    dirs = cameras.rays(size)
    origin = cameras.centre[:, None]
    distance = cameras.centre.norm(dim=-1)[:, None]
    hit, p = _trace(sdf, origin, dirs, (distance - 0.9).clamp(min=0.0), distance + 0.9, steps)
    # shade only the pixels on the object: each view's hits, padded to the most any view has
    rank = hit.cumsum(1) - 1  # a hit pixel's place among its view's hits
    k = max(int(hit.sum(1).max()), 1)
    view, pixel = hit.nonzero(as_tuple=True)
    spot = torch.zeros(s, k, dtype=torch.long)
    spot[view, rank[view, pixel]] = pixel
    on = torch.gather(p, 1, spot[..., None].expand(-1, -1, 3))  # (S, k, 3)
    toward = torch.gather(dirs, 1, spot[..., None].expand(-1, -1, 3))
    n = _normals(sdf, on)
    n = torch.where((n * toward).sum(-1, keepdim=True) > 0, -n, n)  # seen from the front
    # the key light comes from the camera's side of the object, in the camera's frame
    looks = OUTSIDE_LOOKS if outside else TRAINING_LOOKS
    key = torch.from_numpy(rng.normal(size=(s, 3)).astype(np.float32))
    key[:, 2] = -key[:, 2].abs() * 0.5 if looks.backlit else key[:, 2].abs() + 0.3
    light = torch.einsum("vji,vj->vi", cameras.rotation, key / key.norm(dim=-1, keepdim=True))
    ambient = torch.from_numpy(rng.uniform(*looks.ambient, (s, 1, 1)).astype(np.float32))
    diffuse = (n * light[:, None]).sum(-1, keepdim=True).clamp(min=0)
    diffuse = diffuse * _soft_shadow(sdf, on + 2e-3 * n, light)[..., None]
    half_vec = light[:, None] - toward
    half_vec = half_vec / half_vec.norm(dim=-1, keepdim=True)
    shine = torch.from_numpy(rng.uniform(*looks.shine, (s, 1, 1)).astype(np.float32))
    spec = (n * half_vec).sum(-1, keepdim=True).clamp(min=0) ** 32 * shine
    shaded = _albedo(on, rng) * (ambient + (1 - ambient) * diffuse) + spec
    color = torch.zeros_like(p)
    color[view, pixel] = shaded[view, rank[view, pixel]]
    backdrops = rng.choice(len(BACKDROPS), size=s, p=BACKDROP_ODDS)
    plain = torch.from_numpy(rng.uniform(0.9, 1.0, (s, 1, 1)).astype(np.float32)).expand(s, 1, 3)
    coloured = torch.from_numpy(rng.uniform(0.0, 1.0, (s, 1, 3)).astype(np.float32))
    is_colour = torch.from_numpy(np.asarray(BACKDROPS)[backdrops] == "colour")[:, None, None]
    img = torch.where(hit[..., None], color, torch.where(is_colour, coloured, plain))
    noise = torch.from_numpy(rng.uniform(0.0, looks.noise_max, (s, 1, 1)).astype(np.float32))
    grain = torch.randn(img.shape, generator=torch.Generator().manual_seed(int(rng.integers(2**31))))
    img = img + noise * grain
    rgb = (img.clamp(0, 1).reshape(s, size, size, 3) * 255 + 0.5).to(torch.uint8).numpy()
    mask = hit.reshape(s, size, size).numpy()
    alpha = np.full((s, size, size, 1), 255, np.uint8)
    for i in range(s):
        if BACKDROPS[backdrops[i]] == "transparent":
            alpha[i, ..., 0] = np.where(mask[i], 255, 0)
        elif rng.random() < JPEG_ODDS:
            low, high = looks.jpeg_quality
            rgb[i] = _jpeg(rgb[i], int(rng.integers(low, high + 1)))
    return np.concatenate([rgb, alpha], -1), mask


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """The picture after a JPEG round trip at ``quality``."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))
