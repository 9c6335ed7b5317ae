"""Add-on preferences: which Python runs the backend, on which device, with which models.

The rest of the add-on reads them with ``settings.addon_preferences``, never through this module.
"""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, CollectionProperty, EnumProperty, IntProperty, StringProperty

from . import runtime, settings
from .backend_python import ENV_VAR
from .model_files import WEIGHTS_ENV_VAR
from .torch_build import read_record

TORCH_BUILD_ITEMS = [
    ("AUTO", "Auto", "CUDA build with an NVIDIA GPU, otherwise CPU build (macOS: PyPI's build, with Metal)"),
    ("CUDA", "CUDA", "torch's CUDA build from PyTorch's package index (Windows and Linux)"),
    ("CPU", "CPU", "torch's CPU-only build from PyTorch's package index (smaller download)"),
    ("DEFAULT", "Default", "The build PyPI gives this platform"),
]
DEVICE_ITEMS = [
    ("auto", "Auto", "CUDA when the backend's torch sees a GPU, otherwise CPU"),
    ("cuda", "CUDA", "Run the network on the GPU (needs a CUDA build of torch)"),
    ("cpu", "CPU", "Run the network on the CPU"),
]


class OCC_PG_checkpoint(bpy.types.PropertyGroup):
    """A model file the user added next to the shipped models."""

    filepath: StringProperty(  # type: ignore[valid-type]
        name="Checkpoint",
        description="A .safetensors model file trained with this project's backend",
        subtype="FILE_PATH",
    )


class OCC_UL_checkpoints(bpy.types.UIList):
    def draw_item(
        self,
        context: bpy.types.Context | None,
        layout: bpy.types.UILayout,
        data: object,
        item: object,
        icon: int | None,
        active_data: object,
        active_property: str | None,
        index: int | None = 0,
        flt_flag: int | None = 0,
    ) -> None:
        layout.prop(item, "filepath", text="", emboss=False, icon="FILE")


class OCC_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    backend_python: StringProperty(  # type: ignore[valid-type]
        name="Backend Python",
        description=(
            "Python interpreter with torch and the backend's dependencies installed. Empty: use "
            f"{ENV_VAR}, the project's .venv, an installed backend, or Blender's Python if it has torch"
        ),
        subtype="FILE_PATH",
    )
    torch_build: EnumProperty(  # type: ignore[valid-type]
        name="Torch Build",
        description="Which build of torch Install Backend installs",
        items=TORCH_BUILD_ITEMS,
        default="AUTO",
    )
    device: EnumProperty(  # type: ignore[valid-type]
        name="Device",
        description="Where the backend runs the network",
        items=DEVICE_ITEMS,
        default="auto",
    )
    cache_mb: IntProperty(  # type: ignore[valid-type]
        name="Field Cache (MB)",
        description=(
            "Memory the backend keeps for fields of recent results, so that their threshold can be "
            "changed without running the network again (least recently used go first)"
        ),
        default=512,
        min=16,
        soft_max=8192,
    )
    half_precision: BoolProperty(  # type: ignore[valid-type]
        name="Half Precision",
        description=(
            "Run the network in 16 bits where that is faster: on CUDA, and on CPUs with AMX "
            "(bfloat16). The surface moves by a small fraction of a grid cell; elsewhere this is ignored"
        ),
        default=True,
    )
    models_folder: StringProperty(  # type: ignore[valid-type]
        name="Models Folder",
        description=(
            f"Folder of .safetensors models used instead of the shipped ones. Empty: {WEIGHTS_ENV_VAR}, "
            "else the weights inside the extension"
        ),
        subtype="DIR_PATH",
    )
    checkpoints: CollectionProperty(type=OCC_PG_checkpoint)  # type: ignore[valid-type]
    checkpoint_index: IntProperty(default=0)  # type: ignore[valid-type]

    def draw(self, context: bpy.types.Context) -> None:
        layout = self.layout
        box = layout.box()
        box.label(text="Backend", icon="CONSOLE")
        box.prop(self, "backend_python")
        try:
            python = settings.resolve_backend_python(context)
            box.label(text=f"Using {python.path} (from {python.source})")
        except Exception as error:  # shown, never raised in a draw
            box.label(text=str(error), icon="ERROR")
        if runtime.status.torch is not None:
            info = runtime.status.torch
            box.label(
                text=f"torch {info.version} ({info.build_text()}), {info.device_text(self.device)}",
                icon="CHECKMARK",
            )
        elif runtime.status.torch_error:
            box.label(text=runtime.status.torch_error, icon="ERROR")
        row = box.row()
        row.operator("occupancy.check_backend", icon="CHECKMARK")
        row.operator("occupancy.install_backend", icon="IMPORT")
        row.prop(self, "torch_build", text="")
        installed = read_record(settings.installed_venv())
        if installed:
            box.label(text=f"Installed: {installed}", icon="PACKAGE")
        install = runtime.installer
        if install is not None and not install.finished:
            box.progress(factor=install.fraction, text=install.text)
        elif install is not None and install.error:
            box.label(text=install.error, icon="ERROR")
        box.prop(self, "device")
        box.prop(self, "cache_mb")
        box.prop(self, "half_precision")
        row = box.row()
        row.label(text=runtime.service.describe())
        row.operator("occupancy.restart_backend", text="Release GPU Memory", icon="FILE_REFRESH")

        box = layout.box()
        box.label(text="Models", icon="MESH_MONKEY")
        box.prop(self, "models_folder")
        row = box.row()
        row.template_list("OCC_UL_checkpoints", "", self, "checkpoints", self, "checkpoint_index", rows=2)
        column = row.column(align=True)
        column.operator("occupancy.add_checkpoint", icon="ADD", text="")
        column.operator("occupancy.remove_checkpoint", icon="REMOVE", text="")
        models, problems = settings.available_models(context)
        for model in models:
            box.label(text=f"{model.label}, threshold {model.tau:.2f}", icon="DOT")
        for problem in problems:
            box.label(text=problem, icon="ERROR")
        if not models:
            box.label(text="No models found", icon="ERROR")


CLASSES = (OCC_PG_checkpoint, OCC_UL_checkpoints, OCC_AddonPreferences)
