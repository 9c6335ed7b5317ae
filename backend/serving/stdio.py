"""Taking the standard streams over for the wire protocol."""

from __future__ import annotations

import io
import os
import sys


def claim_stdio() -> tuple[io.FileIO, io.FileIO]:
    """Return private (wire_in, wire_out) copies of stdin/stdout and neutralise the originals.

    After this, fd 1 and ``sys.stdout`` point at stderr, and fd 0 and ``sys.stdin`` at the null
    device: a stray ``print`` (ours or any library's, C code included) lands in the log instead
    of corrupting the frame stream, and nothing else can consume bytes meant for the reader.
    """
    sys.stdout.flush()
    wire_out = os.dup(1)
    wire_in = os.dup(0)
    os.dup2(2, 1)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    sys.stdout = sys.stderr
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115 - lives as long as the process
    return io.FileIO(wire_in, "rb"), io.FileIO(wire_out, "wb")
