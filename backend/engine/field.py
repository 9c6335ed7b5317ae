"""Occupancy fields in the normalised frame: logits, positive inside.

A field answers two questions: batched inference at many points (MISE), in chunks with
progress and cancellation between them, and differentiable logits at a few points
(vertex normals, refinement). ``NetworkField`` is an encoded observation; ``FunctionField``
wraps any torch function (analytic shapes for tests and benchmarks).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ..models import OccupancyNetwork
from ..models.onet import Evidence, ModelInputError
from .fold import FoldedDecoder, fold_decoder
from .types import CancelFn, Cancelled, FractionFn

CPU_CHUNK = 8192  # best throughput here: the activations of a chunk stay in cache
CUDA_CHUNK = 262144


def default_chunk(device: torch.device) -> int:
    return CUDA_CHUNK if device.type == "cuda" else CPU_CHUNK


class Field:
    """Base class: subclasses implement ``_infer`` (batched, no grad) and ``logits`` (differentiable)."""

    def __init__(self, device: torch.device, chunk: int | None = None) -> None:
        self.device = device
        self.chunk = chunk or default_chunk(device)
        self.evaluations = 0  # points evaluated by ``evaluate`` so far

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        """Differentiable logits at points p (M, 3) on ``self.device`` -> (M,)."""
        raise NotImplementedError

    def _infer(self, p: torch.Tensor) -> torch.Tensor:
        """Logits of one chunk under inference mode; subclasses may use a faster path."""
        return self.logits(p)

    @property
    def nbytes(self) -> int:
        """Memory held by this field itself (not by a shared model)."""
        return 0

    def evaluate(
        self, points: np.ndarray, progress: FractionFn | None = None, cancel: CancelFn | None = None
    ) -> np.ndarray:
        """Logits at points (K, 3) float32 -> (K,) float32, in chunks.

        The points go to the device in one copy and the logits come back in one copy.
        """
        n = len(points)
        if n == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            p = torch.from_numpy(np.ascontiguousarray(points, dtype=np.float32)).to(self.device)
            out = torch.empty(n, dtype=torch.float32, device=self.device)
            for start in range(0, n, self.chunk):
                if cancel is not None and cancel():
                    raise Cancelled("cancelled")
                stop = min(start + self.chunk, n)
                out[start:stop] = self._infer(p[start:stop])
                if progress is not None:
                    progress(stop / n)
            self.evaluations += n
            return out.cpu().numpy()


class FunctionField(Field):
    """A field given by a torch function of points (M, 3) -> logits (M,)."""

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device | str = "cpu",
        chunk: int | None = None,
    ) -> None:
        super().__init__(torch.device(device), chunk)
        self.fn = fn

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        return self.fn(p)


class NetworkField(Field):
    """The field of an occupancy network for one code c (and latent z)."""

    def __init__(
        self,
        model: OccupancyNetwork,
        c: torch.Tensor,
        z: torch.Tensor | None = None,
        half: torch.dtype | None = None,
        chunk: int | None = None,
        fold: bool = True,
        obs: Evidence | None = None,
    ) -> None:
        if model.local is not None and obs is None:
            raise ModelInputError("this model reads its observation at every query point: pass obs")
        device = c.device
        super().__init__(device, chunk)
        self.model, self.c, self.z = model, c, z
        self.obs = obs if model.local is not None else None  # read at every point (local features)
        self.half = half  # the 16-bit float of batched inference (``precision.half_dtype``), or None
        self._fast: FoldedDecoder | None = None
        self._grad: FoldedDecoder | None = None  # float32 even with ``half``: gradients need the precision
        if fold:
            self._grad = fold_decoder(model.decoder, z, c)
            self._fast = fold_decoder(model.decoder, z, c, half) if half is not None else self._grad
        self.folded = self._fast is not None

    @property
    def nbytes(self) -> int:
        own = sum(4 * t.numel() for t in (self.c, self.z) if t is not None)
        if isinstance(self.obs, torch.Tensor):
            own += 4 * self.obs.numel()
        elif self.obs is not None:
            own += self.obs.nbytes
        folded = {id(f): f.nbytes for f in (self._fast, self._grad) if f is not None}
        return int(own + sum(folded.values()))

    def _points(self, p: torch.Tensor, half: torch.dtype | None = None) -> torch.Tensor:
        """The folded decoder's per-point input: xyz, then local features read from the observation
        (their matrix products in ``half`` if given, under autocast; the result is float32)."""
        if self.obs is None:
            return p
        if half is None:
            return self.model.decoder_inputs(p[None], self.obs)[0]
        with torch.autocast(self.device.type, dtype=half):
            return self.model.decoder_inputs(p[None], self.obs)[0].float()

    def logits(self, p: torch.Tensor) -> torch.Tensor:
        if self._grad is not None:
            return self._grad.grad(self._points(p))
        return self.model.decode(p[None], self.z, self.c, self.obs)[0]

    def _infer(self, p: torch.Tensor) -> torch.Tensor:
        if self._fast is not None:
            return self._fast(self._points(p, self.half))
        return self.model.decode(p[None], self.z, self.c, self.obs)[0]
