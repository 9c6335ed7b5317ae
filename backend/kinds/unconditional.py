"""No observation: the VAE prior's samples (``backend sample``)."""

from __future__ import annotations

from .base import InputKind


class Unconditional(InputKind):
    name = "unconditional"
