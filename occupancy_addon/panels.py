"""Sidebar panels in the 3D viewport (tab "Reconstruct")."""

from __future__ import annotations

from typing import Any

import bpy

from . import runtime
from .errors import UserError
from .model_files import points_used
from .progress import describe, overall_fraction
from .properties import AUTO_MODEL, OCC_PG_settings, result_settings, scene_settings
from .results import choose_model
from .scene_inputs import detect
from .settings import addon_preferences


def _draw_status(layout: bpy.types.UILayout) -> None:
    """Progress of the running task with a Cancel button, or the last failure."""
    task = runtime.task
    if task is not None:
        stage, fraction = task.job.progress
        box = layout.box()
        box.label(text=task.label, icon="SORTTIME")
        box.progress(
            factor=overall_fraction(stage, fraction) if stage else 0.0, text=describe(stage, fraction)
        )
        box.operator("occupancy.cancel", icon="CANCEL")
        return
    if runtime.status.error:
        box = layout.box()
        column = box.column(align=True)
        for index, line in enumerate(_wrap(runtime.status.error, 48)):
            column.label(text=line, icon="ERROR" if index == 0 else "BLANK1")
        if runtime.status.crashed:
            box.operator("occupancy.restart_backend", icon="FILE_REFRESH")


def _wrap(text: str, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


class _SidebarTab:
    """Where every panel of the add-on lives: the 3D Viewport's sidebar, tab "Reconstruct"."""

    # typed Any: the stubs declare these as enum literals that a mixin cannot restate
    bl_space_type: Any = "VIEW_3D"
    bl_region_type: Any = "UI"
    bl_category = "Reconstruct"


class OCC_PT_reconstruct(_SidebarTab, bpy.types.Panel):
    bl_idname = "OCC_PT_reconstruct"
    bl_label = "Occupancy Reconstruct"

    def draw(self, context: bpy.types.Context) -> None:
        layout, scene = self.layout, context.scene
        assert layout is not None and scene is not None  # always set while a panel draws
        settings = scene_settings(scene)
        layout.prop(settings, "input_mode", expand=True)
        if settings.input_mode in ("IMAGE", "AUTO"):
            layout.template_ID(settings, "image", open="image.open")
        layout.prop(settings, "use_modifiers")

        ready = self._draw_input(layout, context, settings)
        column = layout.column(align=True)
        column.prop(settings, "model")
        column.prop(settings, "resolution")
        if settings.input_mode in ("POINTCLOUD", "AUTO"):
            layout.prop(settings, "fit_points")
            layout.prop(settings, "open_cavities")
        if settings.input_mode in ("VIEWS", "IMAGE", "AUTO"):  # a picture may go to the views model
            layout.prop(settings, "outlines")
        row = layout.row(align=True)
        row.prop(settings, "refine")
        sub = row.row(align=True)
        sub.active = settings.refine
        sub.prop(settings, "refine_steps")
        row = layout.row(align=True)
        row.prop(settings, "simplify")
        sub = row.row(align=True)
        sub.active = settings.simplify
        sub.prop(settings, "simplify_faces")
        row = layout.row(align=True)
        row.prop(settings, "use_model_threshold")
        sub = row.row(align=True)
        sub.active = not settings.use_model_threshold
        sub.prop(settings, "threshold")

        layout.label(text=runtime.service.describe(), icon="SETTINGS")
        _draw_status(layout)
        row = layout.row()
        row.scale_y = 1.5
        row.enabled = ready and runtime.task is None
        op: Any = row.operator("occupancy.reconstruct", icon="MESH_ICOSPHERE")
        op.input_mode = settings.input_mode
        op.use_modifiers = settings.use_modifiers
        op.image = settings.image.name if settings.image is not None else ""
        op.model = "" if settings.model == AUTO_MODEL else settings.model
        _set_options(op, settings)

    @staticmethod
    def _draw_input(
        layout: bpy.types.UILayout, context: bpy.types.Context, settings: OCC_PG_settings
    ) -> bool:
        """Say what Reconstruct would use (and with which model); False when it cannot run."""
        box = layout.box()
        try:
            choice = detect(
                context,
                context.active_object,
                settings.input_mode,
                settings.use_modifiers,
                settings.image,
                drawing=True,
            )
            model = choose_model(context, settings.model, choice.kind, choice.count or None)
        except UserError as error:
            column = box.column(align=True)
            for index, line in enumerate(_wrap(error.message, 48)):
                column.label(text=line, icon="INFO" if index == 0 else "BLANK1")
            return False
        box.label(text=choice.description, icon="CHECKMARK")
        box.label(text=f"Model: {model.label}", icon="BLANK1")
        if choice.count:
            used = points_used(model, choice.count)
            whole = used == choice.count
            box.label(text=f"Uses all {used:,} points" if whole else f"Uses {used:,} (its training size)")
        return True


def _set_options(op: Any, settings: OCC_PG_settings) -> None:
    """The options Reconstruct and Generate share, from the panel's settings."""
    op.resolution = int(settings.resolution)
    op.refine_steps = settings.refine_steps if settings.refine else 0
    op.simplify_faces = settings.simplify_faces if settings.simplify else 0
    op.fit_points = settings.fit_points
    op.open_cavities = settings.open_cavities
    op.outlines = settings.outlines
    op.threshold = 0.0 if settings.use_model_threshold else settings.threshold


class OCC_PT_threshold(_SidebarTab, bpy.types.Panel):
    """The live threshold of the active result."""

    bl_idname = "OCC_PT_threshold"
    bl_label = "Result"

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        obj = context.active_object
        return obj is not None and result_settings(obj).is_result

    def draw(self, context: bpy.types.Context) -> None:
        layout, obj = self.layout, context.active_object
        assert layout is not None and obj is not None
        result = result_settings(obj)
        layout.prop(result, "threshold", slider=True)
        layout.label(text=f"Mesh at threshold {result.applied_threshold:.3f}", icon="MESH_DATA")
        source = result.source.name if result.source is not None else "none"
        layout.label(text=f"From: {source}", icon="OBJECT_DATA")
        layout.label(text=f"Model: {result.model}", icon="BLANK1")


class OCC_PT_generate(_SidebarTab, bpy.types.Panel):
    bl_idname = "OCC_PT_generate"
    bl_label = "Generate"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout, scene = self.layout, context.scene
        assert layout is not None and scene is not None
        settings = scene_settings(scene)
        layout.prop(settings, "seed")
        try:
            choose_model(context, "", "unconditional")
            available = True
        except UserError as error:
            layout.label(text=error.message[:60], icon="INFO")
            available = False
        row = layout.row()
        row.enabled = available and runtime.task is None
        op: Any = row.operator("occupancy.generate", icon="OUTLINER_OB_POINTCLOUD")
        op.seed = settings.seed
        _set_options(op, settings)


class OCC_PT_backend(_SidebarTab, bpy.types.Panel):
    bl_idname = "OCC_PT_backend"
    bl_label = "Backend"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        assert layout is not None
        layout.label(text=runtime.service.describe())
        torch = runtime.status.torch
        if torch is not None:
            preferences = addon_preferences(context)
            layout.label(text=f"torch {torch.version} ({torch.build_text()})")
            layout.label(text=torch.device_text(preferences.device if preferences else "auto"))
        layout.operator("occupancy.check_backend", icon="CHECKMARK")
        layout.operator("occupancy.restart_backend", text="Release GPU Memory", icon="FILE_REFRESH")


CLASSES = (OCC_PT_reconstruct, OCC_PT_threshold, OCC_PT_generate, OCC_PT_backend)
