"""Local patches: the k input points nearest to each query point, read by a small PointNet.

A feature grid carries no detail finer than its cells (1/16 of the object for the point-cloud
U-Net), however many points fall into a cell. The nearest input points do: where a dense scan
has a point every 0.005, the patch around a query says how far the surface is and which way it
runs, at the scan's own resolution. The grid still decides inside from outside, which needs
context from far away; the patch adds the precision. Evidence this local carries over to
unfamiliar shapes, as patch-based Points2Surf did in Sulzer et al.'s benchmark (README).

The k-d trees (``point_tree``) are built once per observation (``PointEvidence``) and queried for every
chunk of query points, so the cost is O(N log N) once plus O(M k log N) per M queries, for any N.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from torch import nn

from ..point_tree import PointTree

PATCH_SCALE = 20.0  # offsets are read in units of 0.05 of the object, the near-surface band
# queries per step without autograd: a step's (chunk * k, width) activations stay in cache
INFERENCE_CHUNK = 2048


class NeighbourIndex:
    """k-d trees over each batch item's points (B, N, 3), on the CPU whatever the points' device."""

    def __init__(self, points: torch.Tensor) -> None:
        self.n = int(points.shape[1])
        self.trees = [PointTree(x) for x in points.detach().to("cpu", torch.float32).numpy()]

    def query(self, p: torch.Tensor, k: int) -> torch.Tensor:
        """Indices (B, M, k) of the k nearest points to each query p (B, M, 3); with fewer than k
        points the nearest ones repeat (harmless under the max over the patch)."""
        q = p.detach().to("cpu", torch.float32).numpy()
        kk = min(k, self.n)
        out = np.empty((*q.shape[:2], k), np.int64)
        for b, tree in enumerate(self.trees):
            _, idx = tree.query(q[b], k=kk)
            out[b] = idx if kk == k else idx[:, np.arange(k) % kk]
        return torch.from_numpy(out).to(p.device)

    @property
    def nbytes(self) -> int:
        return sum(tree.nbytes for tree in self.trees)


@dataclass
class PointEvidence:
    """What a point-cloud model with patches reads at each query: the U-Net's feature grid, the
    input points and their neighbour index."""

    grid: torch.Tensor  # (B, C, R, R, R)
    points: torch.Tensor  # (B, N, 3)
    index: NeighbourIndex

    @property
    def nbytes(self) -> int:
        tensors = self.grid.numel() * self.grid.element_size() + self.points.numel() * 4
        return int(tensors + self.index.nbytes)


class PatchFeatures(nn.Module):
    """Per query point: offsets to its k nearest input points and their lengths, each through a
    two-layer MLP, max-pooled over the patch -> (B, M, width)."""

    def __init__(self, k: int, width: int) -> None:
        super().__init__()
        self.k, self.width = k, width
        self.mlp = nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, width))

    def dims(self) -> int:
        return self.width

    def forward(self, p: torch.Tensor, points: torch.Tensor, index: NeighbourIndex) -> torch.Tensor:
        idx = index.query(p, self.k)  # (B, M, k)
        points = points.to(p.dtype)
        if not torch.is_grad_enabled():
            return self._infer(p, points, idx)
        b, m, k = idx.shape
        flat = idx.reshape(b, m * k, 1).expand(-1, -1, 3)
        near = torch.gather(points, 1, flat).reshape(b, m, k, 3)
        offset = (near - p[:, :, None]) * PATCH_SCALE
        feats = torch.cat([offset, offset.norm(dim=-1, keepdim=True)], -1)
        return self.mlp(feats).max(dim=2).values

    def _infer(self, p: torch.Tensor, points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The same features without autograd, ~2.5x faster: a few thousand queries at a time, in
        place, with the last bias added after the max (which it commutes with, exactly)."""
        first, last = cast(nn.Linear, self.mlp[0]), cast(nn.Linear, self.mlp[2])
        w0, w1 = first.weight.t(), last.weight.t()
        b, m, k = idx.shape
        out = p.new_empty(b, m, self.width)
        for i in range(b):
            for start in range(0, m, INFERENCE_CHUNK):
                stop = min(start + INFERENCE_CHUNK, m)
                n = stop - start
                offset = points[i, idx[i, start:stop].reshape(-1)].reshape(n, k, 3)
                offset.sub_(p[i, start:stop, None]).mul_(PATCH_SCALE)
                feats = torch.cat([offset, torch.linalg.vector_norm(offset, dim=-1, keepdim=True)], -1)
                hidden = torch.addmm(first.bias, feats.reshape(n * k, 4), w0).relu_()
                # assigned, not amax(out=): under autocast (``--half``) the products are 16-bit
                out[i, start:stop] = torch.amax(torch.mm(hidden, w1).reshape(n, k, self.width), dim=1)
        return out.add_(last.bias)
