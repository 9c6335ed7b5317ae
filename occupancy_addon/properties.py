"""Settings saved in the .blend: the panel's choices (``Scene.occupancy``) and, on every result
object, how it was made and at which threshold (``Object.occupancy``).

What a change of a result's threshold does (the live preview) is wired in by ``register()`` with
``on_threshold_change``: the preview builds on the modules that read these settings, so this
module cannot import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty

from .backend_link import load_protocol
from .scene_inputs import MODES
from .settings import available_models

_wire = load_protocol()  # the resolutions and the threshold range, as the backend defines them
AUTO_MODEL = "AUTO"
_RESOLUTION_NOTES = {
    32: "Coarsest grid: fastest",
    128: "The default grid",
    256: "Fine details; slower and needs more memory",
    512: "Finest grid; slow",
}
RESOLUTIONS = [(str(r), str(r), _RESOLUTION_NOTES.get(r, "")) for r in _wire.RESOLUTIONS]

# Blender keeps only pointers to the strings of dynamic enum items: they must outlive the callback.
_model_items_alive: list[tuple[str, str, str]] = []


def _model_items(self: Any, context: bpy.types.Context | None) -> list[tuple[str, str, str]]:
    best = "The best installed model for the input (for one picture, a views model if there is one)"
    items = [(AUTO_MODEL, "Automatic", best)]
    if context is not None:
        models, _ = available_models(context)
        items += [(m.name, m.label, str(m.path)) for m in models]
    _model_items_alive[:] = items
    return _model_items_alive


class OCC_PG_settings(bpy.types.PropertyGroup):
    input_mode: EnumProperty(  # type: ignore[valid-type]
        name="Input", description="What to reconstruct from", items=MODES, default="AUTO"
    )
    image: PointerProperty(  # type: ignore[valid-type]
        name="Image",
        type=bpy.types.Image,
        description="A picture to reconstruct from when no image empty is selected",
    )
    use_modifiers: BoolProperty(  # type: ignore[valid-type]
        name="Use Modifiers",
        description="Read the object as its modifiers leave it (evaluated geometry)",
        default=True,
    )
    model: EnumProperty(  # type: ignore[valid-type]
        name="Model", description="The network that reconstructs", items=_model_items
    )
    resolution: EnumProperty(  # type: ignore[valid-type]
        name="Resolution",
        description="Cells per axis of the extraction grid",
        items=RESOLUTIONS,
        default="128",
    )
    refine: BoolProperty(  # type: ignore[valid-type]
        name="Refine", description="Move vertices onto the surface with the network's gradient", default=False
    )
    refine_steps: IntProperty(name="Steps", default=30, min=1, soft_max=200)  # type: ignore[valid-type]
    simplify: BoolProperty(  # type: ignore[valid-type]
        name="Simplify", description="Reduce the number of faces", default=False
    )
    simplify_faces: IntProperty(name="Faces", default=20000, min=4, soft_max=500000)  # type: ignore[valid-type]
    fit_points: BoolProperty(  # type: ignore[valid-type]
        name="Fit to Points",
        description="Point clouds: move the surface onto the points where the scan is dense; "
        "off: keep the network's smoother surface",
        default=True,
    )
    open_cavities: BoolProperty(  # type: ignore[valid-type]
        name="Carve Open Cavities",
        description="Point clouds: empty a bowl's or a cup's inside where the network filled it over "
        "scanned points; off: keep the network's surface",
        default=True,
    )
    outlines: BoolProperty(  # type: ignore[valid-type]
        name="Keep to Outlines",
        description="Reference views and pictures read by a views model: pull the surface to the "
        "pictures' outlines where the network is in doubt; off: keep the network's own surface",
        default=True,
    )
    use_model_threshold: BoolProperty(  # type: ignore[valid-type]
        name="Model's Threshold",
        description="Use the threshold the model was tuned with",
        default=True,
    )
    threshold: FloatProperty(  # type: ignore[valid-type]
        name="Threshold",
        description="Occupancy probability at which the surface is extracted",
        min=_wire.THRESHOLD_MIN,
        max=_wire.THRESHOLD_MAX,
        default=0.2,  # the value all published Occupancy Network models use
        precision=3,
    )
    seed: IntProperty(  # type: ignore[valid-type]
        name="Seed", description="Which shape Generate draws", default=0, min=0
    )


ThresholdListener = Callable[["OCC_PG_result"], None]
_threshold_listener: ThresholdListener | None = None
_quiet = 0


def on_threshold_change(listener: ThresholdListener | None) -> None:
    """Set what runs when a result's threshold changes (None: nothing, as while unregistered)."""
    global _threshold_listener
    _threshold_listener = listener


@contextmanager
def quiet_updates() -> Iterator[None]:
    """Set result properties without triggering a re-extraction (when the add-on writes them)."""
    global _quiet
    _quiet += 1
    try:
        yield
    finally:
        _quiet -= 1


def _threshold_changed(self: OCC_PG_result, context: bpy.types.Context) -> None:
    if not _quiet and _threshold_listener is not None:
        _threshold_listener(self)


class OCC_PG_result(bpy.types.PropertyGroup):
    is_result: BoolProperty(default=False)  # type: ignore[valid-type]
    source: PointerProperty(  # type: ignore[valid-type]
        name="Source", type=bpy.types.Object, description="The object this result was reconstructed from"
    )
    kind: StringProperty(name="Input Kind")  # type: ignore[valid-type]
    model: StringProperty(name="Model")  # type: ignore[valid-type]
    recipe: StringProperty(  # type: ignore[valid-type]
        name="Recipe", description="The request that made this result (JSON), to make it again"
    )
    threshold: FloatProperty(  # type: ignore[valid-type]
        name="Threshold",
        description="Occupancy probability of the surface; dragging re-extracts the mesh live",
        min=_wire.THRESHOLD_MIN,
        max=_wire.THRESHOLD_MAX,
        default=0.2,
        precision=3,
        update=_threshold_changed,
    )
    applied_threshold: FloatProperty(  # type: ignore[valid-type]
        name="Applied Threshold", description="The threshold of the mesh as it is now", precision=3
    )
    field_id: StringProperty()  # type: ignore[valid-type]
    backend_token: StringProperty()  # type: ignore[valid-type]


def scene_settings(scene: bpy.types.Scene) -> OCC_PG_settings:
    settings = scene.occupancy  # type: ignore[attr-defined]
    assert isinstance(settings, OCC_PG_settings)
    return settings


def result_settings(obj: bpy.types.Object) -> OCC_PG_result:
    result = obj.occupancy  # type: ignore[attr-defined]
    assert isinstance(result, OCC_PG_result)
    return result


CLASSES = (OCC_PG_settings, OCC_PG_result)
