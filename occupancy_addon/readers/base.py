"""The interface of a reader (see the package's docstring)."""

from __future__ import annotations

from typing import ClassVar, TypeAlias

import bpy

from ..scene_data import InputChoice, InputData

Context: TypeAlias = bpy.types.Context
MaybeObject: TypeAlias = bpy.types.Object | None
MaybeImage: TypeAlias = bpy.types.Image | None


class Reader:
    kind: ClassVar[str]  # the backend's name for it
    mode: ClassVar[tuple[str, str, str]]  # (identifier, name, description) in the Input menu

    def claims(self, obj: bpy.types.Object, context: bpy.types.Context, evaluated: bool) -> bool:
        """Is ``obj`` this kind of input when the Input menu says Auto?"""
        raise NotImplementedError

    def detect(self, obj: MaybeObject, context: Context, evaluated: bool, image: MaybeImage) -> InputChoice:
        """What Reconstruct would use (cheap: counts only); UserError says why it cannot."""
        raise NotImplementedError

    def read(self, context: bpy.types.Context, choice: InputChoice, evaluated: bool) -> InputData:
        """The input's arrays for the backend and where the result goes; UserError when unusable."""
        raise NotImplementedError
