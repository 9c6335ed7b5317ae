"""Operators: reconstruct, generate, threshold, cancel and the backend's upkeep.

Reconstruct and Generate run modal in the UI (a timer polls the backend's reply, Esc or the
panel's Cancel button stops it, the UI stays responsive) and block in background mode and when
a script calls them (``bpy.ops.occupancy.reconstruct()`` runs ``execute``), because timers and
modal handlers never run without Blender's event loop. Failures are reported as errors, which a
script receives as a RuntimeError carrying the message; a cancel returns ``{'CANCELLED'}``.
The scene is changed only once the reply is there, in one undo step.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, IntProperty, StringProperty

from . import preview, runtime, settings
from .backend_link import BackendMissingError, backend_root, load_protocol
from .backend_process import BackendCommandError, probe_backend
from .backend_python import BackendPythonNotFoundError
from .errors import JobCancelled, UserError
from .installer import InstallJob, install_steps
from .model_files import ModelFileError, read_model_file
from .progress import describe, overall_fraction
from .properties import result_settings, scene_settings
from .redraw import tag_redraw
from .results import Plan, Recipe, check_options, create_result, plan_generation, plan_reconstruction, send
from .results import warnings_of as _warnings
from .scene_inputs import MODES
from .service import BackendRequest
from .settings import addon_preferences
from .torch_build import TorchBuildError, choose_build, has_nvidia_gpu, read_record

if TYPE_CHECKING:
    from bpy.stub_internal.rna_enums import OperatorReturnItems

TIMER_S = 0.1
_wire = load_protocol()  # the resolutions and the threshold range, as the backend defines them
_RESOLUTIONS_TEXT = ", ".join(map(str, _wire.RESOLUTIONS[:-1])) + f" or {_wire.RESOLUTIONS[-1]}"


def _redraw_panels(context: bpy.types.Context) -> None:
    """The sidebar and the preferences, which show the task's progress and the installer's."""
    tag_redraw(context.screen, ("VIEW_3D", "PREFERENCES"))


def _print_progress(stage: str | None, fraction: float) -> None:
    print(f"Occupancy Reconstruct: {describe(stage, fraction)}", flush=True)


def _end_modal(context: bpy.types.Context, timer: Any) -> None:
    """Remove the timer, the progress bar and the status text that a modal run put up."""
    if context.window_manager is not None:
        context.window_manager.event_timer_remove(timer)
        context.window_manager.progress_end()
    if context.workspace is not None:
        context.workspace.status_text_set(None)


def _recipe(op: Any, kind: str, **extra: Any) -> Recipe:
    """A recipe from the options Reconstruct and Generate share, plus ``extra``."""
    return Recipe(
        kind=kind,
        model=op.model,
        resolution=op.resolution,
        refine_steps=op.refine_steps,
        simplify_faces=op.simplify_faces,
        fit_points=op.fit_points,
        open_cavities=op.open_cavities,
        outlines=op.outlines,
        **extra,
    )


class _BackendTask(bpy.types.Operator):
    """What Reconstruct and Generate share: start a request, wait for it (modal or blocking),
    then build the result. Subclasses provide ``_plan`` and ``_label``."""

    bl_options = {"UNDO"}  # one undo step; no redo panel, which would re-run the network

    model: StringProperty(  # type: ignore[valid-type]
        name="Model",
        description="Model name or .safetensors checkpoint path; empty: Automatic (the best installed model)",
    )
    resolution: IntProperty(  # type: ignore[valid-type]
        name="Resolution",
        description=f"Grid cells per axis: {_RESOLUTIONS_TEXT}",
        default=128,
        min=_wire.RESOLUTIONS[0],
        max=_wire.RESOLUTIONS[-1],
    )
    refine_steps: IntProperty(  # type: ignore[valid-type]
        name="Refinement Steps",
        description="Gradient steps that move vertices onto the surface (0: off)",
        min=0,
    )
    simplify_faces: IntProperty(  # type: ignore[valid-type]
        name="Simplify To", description="Target face count (0: no simplification)", default=0, min=0
    )
    fit_points: BoolProperty(  # type: ignore[valid-type]
        name="Fit to Points",
        description="Point clouds: move the surface onto the points where the scan is dense",
        default=True,
    )
    open_cavities: BoolProperty(  # type: ignore[valid-type]
        name="Carve Open Cavities",
        description="Point clouds: empty a cavity the network filled over scanned points",
        default=True,
    )
    outlines: BoolProperty(  # type: ignore[valid-type]
        name="Keep to Outlines",
        description="Reference views: pull the surface to the pictures' outlines where the network "
        "is in doubt",
        default=True,
    )
    threshold: FloatProperty(  # type: ignore[valid-type]
        name="Threshold",
        description="Occupancy probability of the surface (0: the model's own threshold)",
        default=0.0,
        min=0.0,
        max=_wire.THRESHOLD_MAX,
        precision=3,
    )

    def _plan(self, context: bpy.types.Context) -> Plan:
        raise NotImplementedError

    def _label(self, plan: Plan) -> str:
        raise NotImplementedError

    def _start(self, context: bpy.types.Context) -> BackendRequest:
        if runtime.task is not None:
            raise UserError(f"Busy: {runtime.task.label}. Wait for it or press Cancel")
        check_options(self.resolution, self.refine_steps, self.simplify_faces, self.threshold)
        plan = self._plan(context)
        threshold = float(self.threshold)
        job = send(context, plan, threshold if threshold > 0 else None)
        self._plan_made, self._job = plan, job
        runtime.task = runtime.Task(self._label(plan), job)
        return job

    def _fail(self, error: UserError) -> set[OperatorReturnItems]:
        runtime.set_error(error.message, error.crashed)
        self.report({"ERROR"}, error.message)
        return {"CANCELLED"}

    def _conclude(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        """Turn the finished job into a result object or a report."""
        runtime.task = None
        try:
            reply = self._job.outcome()
            obj = create_result(context, self._plan_made, reply, self._job.token)
        except JobCancelled:
            runtime.clear_error()
            self.report({"INFO"}, "Cancelled; nothing was changed")
            return {"CANCELLED"}
        except UserError as error:
            return self._fail(error)
        runtime.clear_error()
        for warning in [*self._plan_made.warnings, *_warnings(reply)]:
            self.report({"WARNING"}, warning)
        faces = len(reply.arrays["faces"])
        seconds = reply.fields.get("timings", {}).get("total", 0.0)
        self.report(
            {"INFO"},
            f"Made '{obj.name}': {faces:,} faces at threshold {reply.fields['tau']:.3f} in {seconds:.1f} s",
        )
        return {"FINISHED"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        """Blocking: scripts and background mode."""
        try:
            job = self._start(context)
        except UserError as error:
            return self._fail(error)
        try:
            job.wait(report=_print_progress if bpy.app.background else None)
        except KeyboardInterrupt:
            runtime.task = None
            raise
        return self._conclude(context)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        if bpy.app.background or context.window is None or context.window_manager is None:
            return self.execute(context)
        try:
            self._start(context)
        except UserError as error:
            return self._fail(error)
        wm = context.window_manager
        self._timer = wm.event_timer_add(TIMER_S, window=context.window)
        wm.modal_handler_add(self)
        wm.progress_begin(0, 100)
        self._show_progress(context)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        if event.type == "ESC" and event.value == "PRESS":
            runtime.request_cancel()
            return {"RUNNING_MODAL"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}  # the rest of the UI keeps working while the backend does
        if not self._job.done():
            self._show_progress(context)
            return {"PASS_THROUGH"}
        _end_modal(context, self._timer)
        result = self._conclude(context)
        _redraw_panels(context)
        return result

    def cancel(self, context: bpy.types.Context) -> None:
        """Blender ends the modal run (a file is loaded, the window closes): stop the request too."""
        if runtime.task is not None and runtime.task.job is self._job:
            runtime.request_cancel()
            runtime.task = None
        _end_modal(context, self._timer)

    def _show_progress(self, context: bpy.types.Context) -> None:
        stage, fraction = self._job.progress
        overall = overall_fraction(stage, fraction) if stage else 0.0
        text = f"{runtime.task.label if runtime.task else ''}: {describe(stage, fraction)} (Esc to cancel)"
        if context.workspace is not None:
            context.workspace.status_text_set(text)
        if context.window_manager is not None:
            context.window_manager.progress_update(int(100 * overall))
        _redraw_panels(context)


class OCC_OT_reconstruct(_BackendTask):
    """Reconstruct a closed mesh from the active object (point cloud, voxels or image)"""

    bl_idname = "occupancy.reconstruct"
    bl_label = "Reconstruct"

    object: StringProperty(  # type: ignore[valid-type]
        name="Object", description="Name of the object to reconstruct (empty: the active object)"
    )
    input_mode: EnumProperty(name="Input", items=MODES, default="AUTO")  # type: ignore[valid-type]
    image: StringProperty(  # type: ignore[valid-type]
        name="Image", description="Name of an image to use when no image empty is given"
    )
    use_modifiers: bpy.props.BoolProperty(  # type: ignore[valid-type]
        name="Use Modifiers", description="Read the object's evaluated geometry", default=True
    )

    def _plan(self, context: bpy.types.Context) -> Plan:
        if self.object:
            obj = bpy.data.objects.get(self.object)
            if obj is None:
                raise UserError(f"No object named '{self.object}'")
        else:
            obj = context.active_object
        image = None
        if self.image:
            image = bpy.data.images.get(self.image)
            if image is None:
                raise UserError(f"No image named '{self.image}'")
        elif context.scene is not None:
            image = scene_settings(context.scene).image
        recipe = _recipe(self, "", input_mode=self.input_mode, use_modifiers=self.use_modifiers)
        return plan_reconstruction(context, obj, recipe, image)

    def _label(self, plan: Plan) -> str:
        return f"Reconstructing '{plan.name.removesuffix('.occupancy')}'"


class OCC_OT_generate(_BackendTask):
    """Sample a new shape from the unconditional model, at the 3D cursor"""

    bl_idname = "occupancy.generate"
    bl_label = "Generate"

    seed: IntProperty(name="Seed", description="Which shape to draw", default=0, min=0)  # type: ignore[valid-type]

    def _plan(self, context: bpy.types.Context) -> Plan:
        return plan_generation(context, _recipe(self, "unconditional", seed=self.seed))

    def _label(self, plan: Plan) -> str:
        return f"Generating shape {plan.recipe.seed}"


class OCC_OT_set_threshold(bpy.types.Operator):
    """Re-extract a result's mesh at another threshold from the backend's cached field"""

    bl_idname = "occupancy.set_threshold"
    bl_label = "Set Threshold"
    bl_options = {"REGISTER", "UNDO"}

    threshold: FloatProperty(  # type: ignore[valid-type]
        name="Threshold", default=0.2, min=_wire.THRESHOLD_MIN, max=_wire.THRESHOLD_MAX, precision=3
    )
    object: StringProperty(name="Object", description="The result object (empty: the active object)")  # type: ignore[valid-type]

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        obj = bpy.data.objects.get(self.object) if self.object else context.active_object
        result = result_settings(obj) if obj is not None else None
        if result is None or not result.is_result:
            self.report({"ERROR"}, "Select a reconstructed object to change its threshold")
            return {"CANCELLED"}
        runtime.clear_error()
        result.threshold = self.threshold
        preview.flush()  # blocking here: a script expects the new mesh when this returns
        if runtime.status.error:
            self.report({"ERROR"}, runtime.status.error)
            return {"CANCELLED"}
        return {"FINISHED"}


class OCC_OT_cancel(bpy.types.Operator):
    """Stop the reconstruction in progress"""

    bl_idname = "occupancy.cancel"
    bl_label = "Cancel"

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        if not runtime.request_cancel():
            self.report({"INFO"}, "Nothing is running")
        return {"FINISHED"}


class OCC_OT_restart_backend(bpy.types.Operator):
    """Stop the backend process, freeing all of its memory (GPU memory too); it starts again on next use"""

    bl_idname = "occupancy.restart_backend"
    bl_label = "Restart Backend"

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        runtime.request_cancel()
        runtime.task = None
        preview.reset()
        runtime.service.restart()
        runtime.clear_error()
        self.report({"INFO"}, "Backend stopped; it starts again on the next reconstruction")
        return {"FINISHED"}


class OCC_OT_check_backend(bpy.types.Operator):
    """Start the backend Python once and report the backend version, torch version and device"""

    bl_idname = "occupancy.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        runtime.status.torch, runtime.status.torch_error = None, ""
        try:
            python = settings.resolve_backend_python(context)
            root = backend_root()
            info = probe_backend(python.path, root)
        except (BackendPythonNotFoundError, BackendMissingError, BackendCommandError) as error:
            runtime.status.torch_error = str(error)
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        runtime.status.torch = torch = info.torch
        preferences = addon_preferences(context)
        device = torch.device_text(preferences.device if preferences else "auto")
        self.report(
            {"INFO"},
            f"Backend {info.version} runs with {python.path} (from {python.source}): "
            f"torch {torch.version}, {device}",
        )
        return {"FINISHED"}


def network_permitted() -> tuple[bool, str]:
    """Whether the extension may download: its manifest asks for network access and Blender
    allows online access. The reason says what is missing."""
    try:
        manifest = tomllib.loads((backend_root() / "blender_manifest.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, BackendMissingError) as error:
        return False, f"cannot read the extension manifest: {error}"
    if "network" not in manifest.get("permissions", {}):
        return False, "the extension has no network permission"
    if not bpy.app.online_access:
        return False, (
            "Blender does not allow online access: enable Allow Online Access in Preferences > System"
        )
    return True, ""


class OCC_OT_install_backend(bpy.types.Operator):
    """Create a virtual environment in the extension's user folder and install the backend's packages"""

    bl_idname = "occupancy.install_backend"
    bl_label = "Install Backend"

    _timer: Any

    def _begin(self, context: bpy.types.Context) -> InstallJob | None:
        allowed, reason = network_permitted()
        if not allowed:
            self.report({"ERROR"}, f"Cannot install the backend: {reason}")
            return None
        if runtime.installer is not None and not runtime.installer.finished:
            self.report({"ERROR"}, "The backend is already being installed")
            return None
        preferences = addon_preferences(context)
        choice = preferences.torch_build if preferences is not None else "AUTO"
        try:
            build = choose_build(choice, sys.platform, has_nvidia_gpu(sys.platform))
        except TorchBuildError as error:
            self.report({"ERROR"}, f"Cannot install the backend: {error}")
            return None
        steps = install_steps(Path(sys.executable), settings.installed_venv(), build)
        runtime.installer = InstallJob(steps).start()
        return runtime.installer

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        job = self._begin(context)
        if job is None:
            return {"CANCELLED"}
        job.wait()
        return self._report(job)

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        if bpy.app.background or context.window_manager is None:
            return self.execute(context)
        if self._begin(context) is None:
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(0.25, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        job = runtime.installer
        if event.type == "ESC" and event.value == "PRESS" and job is not None:
            job.cancel()
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        _redraw_panels(context)
        if job is not None and not job.finished:
            return {"PASS_THROUGH"}
        assert context.window_manager is not None
        context.window_manager.event_timer_remove(self._timer)
        return self._report(job) if job is not None else {"CANCELLED"}

    def _report(self, job: InstallJob) -> set[OperatorReturnItems]:
        if job.error:
            self.report({"ERROR"}, job.error)
            return {"CANCELLED"}
        runtime.service.restart()  # the next request uses the new environment
        installed = read_record(settings.installed_venv()) or "torch"
        self.report({"INFO"}, f"Backend installed ({installed}); press Check Backend to see its device")
        return {"FINISHED"}


class OCC_OT_add_checkpoint(bpy.types.Operator):
    """Add a model checkpoint file (.safetensors) to the models the panel offers"""

    bl_idname = "occupancy.add_checkpoint"
    bl_label = "Add Checkpoint"

    filepath: StringProperty(subtype="FILE_PATH")  # type: ignore[valid-type]
    filter_glob: StringProperty(default="*.safetensors", options={"HIDDEN"})  # type: ignore[valid-type]

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event) -> set[OperatorReturnItems]:
        assert context.window_manager is not None
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        preferences = addon_preferences(context)
        if preferences is None:
            self.report({"ERROR"}, "The add-on's preferences are not available")
            return {"CANCELLED"}
        path = bpy.path.abspath(self.filepath)
        try:
            model = read_model_file(Path(path))
        except ModelFileError as error:
            self.report({"ERROR"}, str(error))
            return {"CANCELLED"}
        item = preferences.checkpoints.add()
        item.filepath = path
        preferences.checkpoint_index = len(preferences.checkpoints) - 1
        settings.forget_models()
        self.report({"INFO"}, f"Added {model.label}")
        return {"FINISHED"}


class OCC_OT_remove_checkpoint(bpy.types.Operator):
    """Remove the selected checkpoint file from the list (the file itself stays)"""

    bl_idname = "occupancy.remove_checkpoint"
    bl_label = "Remove Checkpoint"

    def execute(self, context: bpy.types.Context) -> set[OperatorReturnItems]:
        preferences = addon_preferences(context)
        if preferences is None or not 0 <= preferences.checkpoint_index < len(preferences.checkpoints):
            return {"CANCELLED"}
        preferences.checkpoints.remove(preferences.checkpoint_index)
        preferences.checkpoint_index = max(0, preferences.checkpoint_index - 1)
        settings.forget_models()
        return {"FINISHED"}


CLASSES = (
    OCC_OT_reconstruct,
    OCC_OT_generate,
    OCC_OT_set_threshold,
    OCC_OT_cancel,
    OCC_OT_restart_backend,
    OCC_OT_check_backend,
    OCC_OT_install_backend,
    OCC_OT_add_checkpoint,
    OCC_OT_remove_checkpoint,
)
