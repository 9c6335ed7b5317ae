"""Asking Blender to redraw the add-on's panels after state it shows changed outside a draw."""

from __future__ import annotations

from collections.abc import Collection

import bpy


def tag_redraw(screen: bpy.types.Screen | None, area_types: Collection[str]) -> None:
    """Redraw the areas of ``screen`` whose type is in ``area_types`` (none without a screen, as in
    background mode)."""
    if screen is None:
        return
    for area in screen.areas:
        if area.type in area_types:
            area.tag_redraw()
