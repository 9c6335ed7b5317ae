"""Live threshold preview: the slider on a result re-extracts its mesh from the backend's cached field.

Dragging calls the property's update on every step. Requests are coalesced per object (only the
newest value is sent once the running one is done) and replies are applied on the main thread:
from a ``bpy.app.timers`` poll in the UI, or at once, blocking, in background mode, where timers
never run (so ``obj.occupancy.threshold = 0.3`` in a script updates the mesh before it returns).

When the backend no longer holds the field (another process since, a reloaded .blend, or evicted
from its cache) the result is made again from its recipe at the new threshold, which needs the
source object (or, for a generated shape, nothing but the seed).
"""

from __future__ import annotations

import sys

import bpy

from . import runtime
from .coalesce import Coalescer
from .errors import FieldGoneError, JobCancelled, UserError
from .mesh_write import write_mesh
from .properties import OCC_PG_result, quiet_updates, result_settings
from .redraw import tag_redraw
from .results import Plan, Recipe, plan_generation, plan_reconstruction, reply_mesh, send
from .service import BackendRequest
from .settings import backend_config

POLL_S = 0.005  # how often the UI timer looks for replies while a preview is in flight


def _find(key: int) -> bpy.types.Object | None:
    return next((obj for obj in bpy.data.objects if obj.session_uid == key), None)


def _send(key: int, tau: float) -> BackendRequest:
    obj = _find(key)
    if obj is None:
        raise UserError("The result object is gone")
    result = result_settings(obj)
    context = bpy.context
    if result.field_id and result.backend_token == runtime.service.token:
        job = runtime.service.request(backend_config(context), "extract", result.field_id, tau)
    else:
        job = send(context, remake_plan(context, result), tau)
    return job


def remake_plan(context: bpy.types.Context, result: OCC_PG_result) -> Plan:
    """The plan that makes ``result`` again from its recipe (its source must still exist)."""
    recipe = Recipe.from_json(result.recipe)
    if recipe.kind == "unconditional":
        return plan_generation(context, recipe)
    image = bpy.data.images.get(recipe.image) if recipe.image else None
    if result.source is None and image is None:
        raise UserError(
            "The backend no longer holds this result's field and its source object is gone: "
            "the threshold cannot change any more"
        )
    return plan_reconstruction(context, result.source, recipe, image)


def _finish(key: int, tau: float, job: BackendRequest) -> None:
    try:
        reply = job.outcome()
    except JobCancelled:
        return
    except FieldGoneError:
        obj = _find(key)
        if obj is not None:
            result_settings(obj).field_id = ""
            _coalescer.request(key, tau)  # made again from the recipe at this threshold
        return
    obj = _find(key)
    if obj is None or not isinstance(obj.data, bpy.types.Mesh):
        return
    vertices, faces = reply_mesh(reply)  # UserError leaves the mesh as it was
    write_mesh(obj.data, vertices, faces)
    result = result_settings(obj)
    with quiet_updates():
        result.applied_threshold = float(reply.fields["tau"])
        if job.what != "extract":
            result.field_id = reply.fields.get("field_id") or ""
            result.backend_token = job.token
    runtime.clear_error()
    tag_redraw(getattr(bpy.context, "screen", None), ("VIEW_3D",))


def _fail(key: int, error: Exception) -> None:
    if isinstance(error, UserError):
        runtime.set_error(error.message, error.crashed)
    else:
        runtime.set_error(f"Updating the threshold failed: {type(error).__name__}: {error}")
    print(f"Occupancy Reconstruct: {runtime.status.error}", file=sys.stderr)
    tag_redraw(getattr(bpy.context, "screen", None), ("VIEW_3D",))


_coalescer: Coalescer[int, BackendRequest] = Coalescer(_send, lambda job: job.done(), _finish, _fail)


def threshold_changed(result: OCC_PG_result) -> None:
    """What a change of ``Object.occupancy.threshold`` runs (``register()`` wires it in)."""
    if not result.is_result:
        return
    obj = result.id_data
    if not isinstance(obj, bpy.types.Object):
        return
    _coalescer.request(obj.session_uid, float(result.threshold))
    if bpy.app.background:
        flush()
    elif not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=POLL_S)


def _tick() -> float | None:
    return POLL_S if _coalescer.poll() else None


def flush(timeout: float | None = None) -> None:
    """Block until every pending preview is applied (background mode, scripts and tests)."""
    while _coalescer.busy():
        for job in _coalescer.jobs():
            job.join(timeout)
        _coalescer.poll()


def busy() -> bool:
    return _coalescer.busy()


def reset() -> None:
    """Forget pending previews (the backend was restarted or the add-on is being disabled)."""
    _coalescer.forget()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
