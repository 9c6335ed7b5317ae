"""Marching cubes (PyMCubes) restricted to the surface cells found by MISE.

PyMCubes scans every cell of the volume it is given (about 30 ns a point here), so a
dense 131^3 grid costs ~70 ms even where it is empty. Instead, the surface cells are
grouped into blocks of ``BLOCK^3`` cells; the blocks' values are laid side by side in one
volume and triangulated in a few calls; triangles are kept only where they belong to a
surface cell (which also drops those spanning the seams between blocks), and vertices
that neighbouring blocks both produced are merged by the lattice edge they lie on.

Conventions (checked by the tests on an analytic sphere): PyMCubes puts a vertex of
a volume index ``i`` exactly at ``i`` (no half-cell offset), counts a value as inside when
it is strictly above the level, and winds faces counter-clockwise seen from the side
with the lower values, so with logits (positive inside) the normals point outwards.

Where the surface leaves the box it is closed by a cap, as the original does by padding
the grid with -1e6. That puts the cap vertices of all edges leaving one boundary point at
(nearly) the same position, as separate vertices, which a loader that merges vertices by
position turns into a non-manifold mesh. Here the padding next to an inside boundary
point is set so that the cap crosses those edges at ``CAP_OFFSET`` of a cell outside the
box: distinct positions, still visually on the box.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import numpy as np

from .lattice import LatticeValues
from .types import CancelFn, Cancelled

BLOCK = 4  # cells per block edge
BLOCKS_PER_CALL = 2048  # bounds the memory of one marching cubes call (~250k points)
OUTSIDE = -1e6
CAP_OFFSET = 0.01  # where caps cross the edges leaving the box, as a fraction of a cell


def _mcubes() -> ModuleType:
    """PyMCubes, imported on first use: its import pulls in scipy (~0.3 s of the backend's start-up)."""
    import mcubes

    return mcubes


def cap_padding(boundary: np.ndarray, level: float) -> np.ndarray:
    """Values just outside the box next to boundary values: crossed at CAP_OFFSET if inside, else not."""
    gain = 1.0 / CAP_OFFSET - 1.0
    return (level - gain * np.maximum(boundary - level, 1e-3)).astype(np.float32)


def _block_volume(values: LatticeValues, origins: np.ndarray, n_points: int, level: float) -> np.ndarray:
    """Values of the (BLOCK + 1)^3 points of each block -> (blocks, B + 1, B + 1, B + 1).

    Off the lattice: the cap padding next to the box's faces, OUTSIDE beyond. Points that
    were never evaluated are corners of no surface cell, so any value would do; the nearest
    known point of a coarser level (the lower corner of the coarse cell around it) avoids
    most of the spurious triangles, later dropped, that a constant would cause.
    """
    vol = values.get_cubes(origins, BLOCK + 1)
    coords = origins[:, :, None] + np.arange(BLOCK + 1)  # (k, 3, B + 1)
    off = (coords < 0) | (coords >= n_points)
    if off.any():
        n_off = off[:, 0, :, None, None].astype(np.int8) + off[:, 1, None, :, None] + off[:, 2, None, None, :]
        padding = np.full(vol.shape, OUTSIDE, np.float32)
        for axis in range(3):
            for edge, step in ((-1, 1), (n_points, -1)):  # the padding layer and where its neighbour is
                layer = coords[:, axis, :] == edge  # (k, B + 1)
                if not layer.any():
                    continue
                shape = [len(origins), 1, 1, 1]
                shape[1 + axis] = BLOCK + 1
                face = layer.reshape(shape) & (n_off == 1)
                neighbour = np.roll(vol, -step, axis=1 + axis)  # the value one step into the box
                padding[face] = cap_padding(neighbour[face], level)
        outside = n_off > 0
        vol[outside] = padding[outside]
    step = 2
    while step <= BLOCK:
        unknown = np.isnan(vol)
        if not unknown.any():
            break
        coarse = vol[:, ::step, ::step, ::step]
        for axis in (1, 2, 3):
            coarse = np.repeat(coarse, step, axis=axis)
        vol = np.where(unknown, coarse[:, : BLOCK + 1, : BLOCK + 1, : BLOCK + 1], vol)
        step *= 2
    vol[np.isnan(vol)] = OUTSIDE
    return vol


def _padding_blocks(blocks: np.ndarray, resolution: int) -> np.ndarray:
    """Blocks just outside the lattice next to ``blocks`` (block coordinates) on its boundary.

    They hold the padding cells that cap surface cells on the box boundary.
    """
    last = resolution // BLOCK - 1
    lo, hi = blocks == 0, blocks == last
    edge = (lo | hi).any(axis=1)
    if not edge.any():
        return np.zeros((0, 3), blocks.dtype)
    blocks, lo, hi = blocks[edge], lo[edge], hi[edge]
    out = []
    for d in np.stack(np.meshgrid(*[[-1, 0, 1]] * 3, indexing="ij"), -1).reshape(-1, 3):
        if d.any():
            ok = (((d == -1) & lo) | ((d == 1) & hi) | (d == 0)).all(axis=1)
            out.append(blocks[ok] + d)
    return np.concatenate(out)


def _block_keys(cells: np.ndarray, nb: int) -> np.ndarray:
    """Key of the block holding each cell, ordered by (y, z, x) so that x-neighbours are consecutive."""
    return _keys_of_blocks(cells.astype(np.int64) // BLOCK, nb)


def _keys_of_blocks(blocks: np.ndarray, nb: int) -> np.ndarray:
    b = blocks.astype(np.int64) + 1  # blocks -1 .. R / B hold the padding cells
    return (b[:, 1] * nb + b[:, 2]) * nb + b[:, 0]


def _block_origins(keys: np.ndarray, nb: int) -> np.ndarray:
    b = np.stack([keys % nb, keys // (nb * nb), (keys // nb) % nb], axis=1)
    return (b - 1) * BLOCK


def _cell_codes(above: np.ndarray) -> np.ndarray:
    """Corner codes (bit 4a + 2b + c for corner (a, b, c)) of the cells of a volume of point flags.

    Pairs are combined one axis at a time (z, then y, then x): three shift-and-or steps.
    """
    a = above.view(np.uint8)
    a = a[:, :, :-1] | (a[:, :, 1:] << np.uint8(1))
    a = a[:, :-1, :] | (a[:, 1:, :] << np.uint8(2))
    return a[:-1] | (a[1:] << np.uint8(4))


def _triangle_counts() -> np.ndarray:
    """Triangles PyMCubes makes in a cell, per corner code (asked of PyMCubes itself)."""
    mcubes = _mcubes()
    counts = np.zeros(256, np.int64)
    corner = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1).reshape(8, 3)
    for code in range(256):
        vol = np.where((code >> np.arange(8)) & 1, 1.0, -1.0)[np.argsort(corner @ [4, 2, 1])].reshape(2, 2, 2)
        counts[code] = len(mcubes.marching_cubes(vol, 0.0)[1])
    return counts


_COUNTS: np.ndarray | None = None


def triangle_counts() -> np.ndarray:
    """``_triangle_counts()``, computed once (this also imports PyMCubes)."""
    global _COUNTS
    if _COUNTS is None:
        _COUNTS = _triangle_counts()
    return _COUNTS


def march_surface_cells(
    values: LatticeValues,
    cells: np.ndarray,
    resolution: int,
    level: float,
    progress: Callable[[float], None] | None = None,
    cancel: CancelFn | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate the level set in ``cells`` -> (vertices in lattice coordinates float64, faces int64).

    Cells on the box boundary also get the cap between them and the outside.

    Blocks that follow each other along x share their boundary layer in the volume, so
    only the seams between runs of blocks make triangles that are thrown away. PyMCubes
    emits triangles cell by cell in C order, a fixed number per corner code, which tells
    the cell of every triangle without looking at its vertices.
    """
    counts_per_code = triangle_counts()
    if len(cells) == 0:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    nb = resolution // BLOCK + 2
    keys, owner = np.unique(_block_keys(cells, nb), return_inverse=True)
    member = np.zeros((len(keys), BLOCK, BLOCK, BLOCK), bool)
    local = cells % BLOCK
    member[owner.reshape(-1), local[:, 0], local[:, 1], local[:, 2]] = True
    extra = np.setdiff1d(
        _keys_of_blocks(_padding_blocks(_block_origins(keys, nb) // BLOCK, resolution), nb), keys
    )
    every = np.sort(np.concatenate([keys, extra]))

    all_vertices, all_faces, all_edges = [], [], []
    n_vertices = 0
    for start in range(0, len(every), BLOCKS_PER_CALL):
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        if progress is not None:
            progress(start / len(every))
        group = every[start : start + BLOCKS_PER_CALL]
        origins = _block_origins(group, nb)
        vol = _block_volume(values, origins, resolution + 1, level)
        # a block right after its x-neighbour reuses that block's last layer as its first
        follows = np.zeros(len(group), bool)
        follows[1:] = group[1:] == group[:-1] + 1
        layer_kept = np.ones((len(group), BLOCK + 1), bool)
        layer_kept[follows, 0] = False
        layer_kept = layer_kept.reshape(-1)
        atlas = vol.reshape(-1, BLOCK + 1, BLOCK + 1)[layer_kept]
        layer_block = np.repeat(np.arange(len(group)), BLOCK + 1)[layer_kept]
        layer_x = (origins[:, 0, None] + np.arange(BLOCK + 1)).reshape(-1)[layer_kept]
        verts, faces = _mcubes().marching_cubes(atlas, float(level))
        if len(faces) == 0:
            continue
        counts = counts_per_code[_cell_codes(atlas > level)].reshape(-1)
        if counts.sum() != len(faces):
            raise RuntimeError("marching cubes made an unexpected number of triangles")
        # cells with triangles, in PyMCubes' order, and whether each is a kept surface cell
        busy = np.flatnonzero(counts)
        ax, rest = np.divmod(busy, BLOCK * BLOCK)
        ay, az = np.divmod(rest, BLOCK)
        real = (layer_x[ax + 1] == layer_x[ax] + 1) & (layer_block[ax + 1] - layer_block[ax] <= 1)
        real &= (layer_block[ax + 1] == layer_block[ax]) | follows[layer_block[ax + 1]]
        home = origins[layer_block[ax]]
        cell = np.stack([layer_x[ax], home[:, 1] + ay, home[:, 2] + az], axis=1)
        # a padding cell (outside the lattice) belongs to the boundary cell it caps
        cell = np.clip(cell, 0, resolution - 1)
        ckey = _block_keys(cell, nb)
        slot = np.minimum(np.searchsorted(keys, ckey), len(keys) - 1)
        local = cell % BLOCK
        keep = real & (keys[slot] == ckey) & member[slot, local[:, 0], local[:, 1], local[:, 2]]
        faces = faces[np.repeat(keep, counts[busy])].astype(np.int64)
        if len(faces) == 0:
            continue
        used = np.zeros(len(verts), bool)
        used[faces] = True
        faces, verts = (np.cumsum(used) - 1)[faces], verts[used]
        layer = np.floor(verts[:, 0]).astype(np.int64)
        verts[:, 0] += layer_x[layer] - layer
        verts[:, 1:] += origins[layer_block[layer], 1:]
        all_vertices.append(verts)
        all_edges.append(_edge_keys(verts, resolution))
        all_faces.append(faces + n_vertices)
        n_vertices += len(verts)
    if not all_faces:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    vertices = np.concatenate(all_vertices)
    faces = np.concatenate(all_faces)
    # runs of blocks that touch each other both made the vertices on their shared face: merge them
    _, first, inverse = np.unique(np.concatenate(all_edges), return_index=True, return_inverse=True)
    return vertices[first], inverse.reshape(-1)[faces]


def _edge_keys(verts: np.ndarray, resolution: int) -> np.ndarray:
    """An integer per vertex naming the lattice edge it lies on (its lower end and its axis)."""
    low = np.floor(verts)
    frac = verts - low
    axis = np.where(frac.max(axis=1) > 0, frac.argmax(axis=1), 3)
    n = resolution + 3  # lattice points -1 .. R + 1
    li = low.astype(np.int64) + 1
    return ((li[:, 0] * n + li[:, 1]) * n + li[:, 2]) * 4 + axis


def march_dense(volume: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes on a dense lattice of values, padded so that the surface is closed.

    Returns vertices in lattice coordinates (float64) and faces (int64). This is the plain
    method the adaptive one must agree with; it is used as the reference.
    """
    vol = np.asarray(volume, np.float32)
    padded = np.pad(vol, 1, mode="constant", constant_values=OUTSIDE)
    for axis in range(3):
        for side in (0, -1):
            at: list[slice | int] = [slice(1, -1)] * 3
            at[axis] = side
            padded[tuple(at)] = cap_padding(np.take(vol, side, axis=axis), level)
    verts, faces = _mcubes().marching_cubes(padded, float(level))
    return verts - 1.0, faces.astype(np.int64)
