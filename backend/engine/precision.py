"""Which 16-bit float the network runs in where the hardware has one (``--half``).

On CUDA that is float16. On a CPU it is bfloat16, but only where the CPU multiplies bfloat16
matrices in hardware (Intel AMX tiles): there a matrix product runs about 8x faster than in
float32, and a reconstruction from 3,000 points takes an eighth less time (0.46 against 0.53 s,
bench/bench_dense.py ``--half``: the neighbours and the patches are the rest); elsewhere bfloat16
is emulated and slower, so it is not offered. The input layer still
reads the points in float32 (bfloat16 keeps 8 bits: 0.002 of the object at its edge), and the
meshes stay within a small fraction of a grid cell of float32's (tests/backend).
"""

from __future__ import annotations

import torch


def cpu_has_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX), as torch reports it."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)  # private, so probed
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


def half_dtype(device: torch.device) -> torch.dtype | None:
    """The 16-bit float that pays on ``device``, or None where none does."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_bfloat16():
        return torch.bfloat16
    return None


HALF_UNAVAILABLE = "half precision needs a CUDA device or a CPU with bfloat16 matrix units (AMX)"
