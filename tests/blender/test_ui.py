"""The interactive parts that background mode never runs: panel drawing and the modal operator.

Blender as a module has no event loop, so nothing draws and no modal handler gets events. These
tests call the panels' ``draw`` with a layout that records what it is asked to show, and drive the
operators' ``modal`` with the timer and Esc events Blender would send, on an object that stands in
for the operator instance. Everything else (the scene, the add-on, the backend) is real.
"""

from __future__ import annotations

import json
import shutil
import time
import types
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import bpy
import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Layout:
    """Records labels, properties, operators and progress bars; nested layouts share the record."""

    def __init__(self, record: dict[str, list[Any]] | None = None) -> None:
        self.record = (
            record if record is not None else {"labels": [], "props": [], "operators": [], "progress": []}
        )
        self.enabled = self.active = True
        self.scale_y = 1.0

    def _nested(self, *args: Any, **kwargs: Any) -> Layout:
        return Layout(self.record)

    box = row = column = split = _nested

    def label(self, text: str = "", icon: str = "NONE") -> None:
        self.record["labels"].append(text)

    def prop(self, data: Any, name: str, **kwargs: Any) -> None:
        assert hasattr(data, name), name
        self.record["props"].append(name)

    def operator(self, idname: str, **kwargs: Any) -> SimpleNamespace:
        category, name = idname.split(".")
        getattr(getattr(bpy.ops, category), name).get_rna_type()  # the operator exists
        properties = SimpleNamespace()
        self.record["operators"].append((idname, properties))
        return properties

    def progress(self, factor: float = 0.0, text: str = "") -> None:
        self.record["progress"].append((factor, text))

    def template_ID(self, data: Any, name: str, **kwargs: Any) -> None:  # noqa: N802 - Blender's name
        self.record["props"].append(name)

    def template_list(self, *args: Any, **kwargs: Any) -> None:
        self.record["props"].append(args[3])


class Drawing:
    """Stands in for a panel (or the preferences) while its ``draw`` runs: our layout, and every
    other attribute from the real thing."""

    def __init__(self, target: Any, layout: Layout) -> None:
        self._target, self.layout = target, layout

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


def draw(panel: Any) -> dict[str, list[Any]]:
    """What ``panel`` (a panel class or the preferences) shows for the current context."""
    layout = Layout()
    draw_function = panel.draw if isinstance(panel, type) else type(panel).draw
    draw_function(Drawing(panel, layout), bpy.context)
    return layout.record


def test_panel_says_what_it_will_use(addon: ModuleType) -> None:
    panels = addon.panels
    shown = draw(panels.OCC_PT_reconstruct)
    assert "Nothing selected: select a mesh, point cloud, volume or image" in " ".join(shown["labels"])
    assert shown["operators"][-1][0] == "occupancy.reconstruct"

    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    shown = draw(panels.OCC_PT_reconstruct)
    assert "Point cloud: 3,000 points" in shown["labels"]
    assert "Model: pointcloud (point cloud)" in shown["labels"]
    # how many points the model gets follows from the model file: all, or its training size
    shipped = (
        addon.model_files.shipped_weights_dir(Path(addon.backend_link.backend_root()))
        / "pointcloud.safetensors"
    )
    budget = addon.backend_link.load_protocol().point_budget(
        addon.backend_link.load_protocol().read_model_header(shipped)
    )
    expected = (
        "Uses all 3,000 points"
        if budget is None or budget >= 3000
        else f"Uses {budget:,} (its training size)"
    )
    assert expected in shown["labels"]
    # a sparse cloud: Automatic takes the model whose file names its size (under 400 points)
    chair = bpy.context.active_object
    sparse = bpy.data.objects.new("sparse", bpy.data.meshes.new("sparse"))
    sparse.data.from_pydata([tuple(v.co) for v in chair.data.vertices[:300]], [], [])
    bpy.context.collection.objects.link(sparse)
    bpy.context.view_layer.objects.active = sparse
    labels = draw(panels.OCC_PT_reconstruct)["labels"]
    assert "Point cloud: 300 points" in labels and "Model: pointcloud-sparse (point cloud)" in labels
    bpy.context.view_layer.objects.active = chair
    assert "Backend not started (starts on first use)" in shown["labels"]
    assert {"input_mode", "model", "resolution", "refine", "simplify", "threshold"} <= set(shown["props"])
    # the button carries the panel's settings to the operator
    bpy.context.scene.occupancy.resolution = "64"
    bpy.context.scene.occupancy.use_model_threshold = False
    bpy.context.scene.occupancy.threshold = 0.3
    (idname, properties) = draw(panels.OCC_PT_reconstruct)["operators"][-1]
    assert idname == "occupancy.reconstruct"
    assert (properties.resolution, properties.threshold, properties.model) == (64, pytest.approx(0.3), "")

    bpy.ops.mesh.primitive_cube_add()
    assert "Voxels: 6 faces, 32\u00b3 grid" in draw(panels.OCC_PT_reconstruct)["labels"]
    bpy.ops.object.camera_add()
    assert any("'Camera' is a camera object" in text for text in draw(panels.OCC_PT_reconstruct)["labels"])


def test_result_panel_and_device(addon: ModuleType) -> None:
    panels = addon.panels
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    assert not panels.OCC_PT_threshold.poll(bpy.context)
    assert bpy.ops.occupancy.reconstruct(resolution=32) == {"FINISHED"}
    assert panels.OCC_PT_threshold.poll(bpy.context)
    shown = draw(panels.OCC_PT_threshold)
    assert shown["props"] == ["threshold"]
    assert "Mesh at threshold 0.500" in shown["labels"] and "From: chair_points" in shown["labels"]
    assert "Device: cpu (backend running)" in draw(panels.OCC_PT_reconstruct)["labels"]
    assert draw(panels.OCC_PT_generate)["operators"][0][0] == "occupancy.generate"
    assert "Device: cpu (backend running)" in draw(panels.OCC_PT_backend)["labels"]
    # with the backend up, the model picker lists what the backend reported it has
    reported = addon.runtime.service.ready_message().fields["models"]
    addon.settings.forget_models()
    models, _ = addon.settings.available_models(bpy.context)
    assert [(m.name, m.kind) for m in models] == [(m["name"], m["kind"]) for m in reported]
    names = ["image", "pointcloud", "pointcloud-sparse", "unconditional", "views", "voxels"]
    assert [m.name for m in models] == names
    assert [m.automatic_points for m in models[1:3]] == [None, (0, 400)]  # as the backend reported it


def test_preferences_draw(addon: ModuleType) -> None:
    preferences = bpy.context.preferences.addons[addon.__name__].preferences
    shown = draw(preferences)
    labels = " ".join(shown["labels"])
    assert "(from OCC_BACKEND_PYTHON)" in labels
    assert "pointcloud (point cloud), threshold 0.50" in labels
    operators = [idname for idname, _ in shown["operators"]]
    for idname in ("occupancy.check_backend", "occupancy.install_backend", "occupancy.restart_backend"):
        assert idname in operators
    assert {"backend_python", "device", "cache_mb", "models_folder", "checkpoints"} <= set(shown["props"])
    assert "torch_build" in shown["props"]


def test_the_installed_torch_build_and_the_gpu_are_shown(addon: ModuleType) -> None:
    preferences = bpy.context.preferences.addons[addon.__name__].preferences
    choices = preferences.bl_rna.properties["torch_build"].enum_items
    assert [item.identifier for item in choices] == list(addon.torch_build.CHOICES)
    assert preferences.torch_build == "AUTO"
    preferences.device = "auto"
    venv = addon.settings.installed_venv()
    venv.mkdir(parents=True)
    record = {"build": "CUDA", "index": addon.torch_build.CUDA_INDEX, "torch": "2.7.1+cu128"}
    (venv / addon.torch_build.RECORD_NAME).write_text(json.dumps(record))  # as the check step writes it
    addon.runtime.status.torch = addon.backend_process.TorchInfo("2.7.1+cu128", True, ("NVIDIA H200",))
    try:
        labels = draw(preferences)["labels"]
        backend = draw(addon.panels.OCC_PT_backend)["labels"]
    finally:
        shutil.rmtree(venv)
        addon.runtime.status.torch = None
    assert "Installed: CUDA build, torch 2.7.1+cu128" in labels
    assert "torch 2.7.1+cu128 (CUDA 12.8 build), CUDA (NVIDIA H200)" in labels
    assert "torch 2.7.1+cu128 (CUDA 12.8 build)" in backend and "CUDA (NVIDIA H200)" in backend


def modal_operator(addon: ModuleType, **properties: Any) -> SimpleNamespace:
    """An object that behaves like an OCC_OT_reconstruct instance for the operator's own methods."""
    cls = addon.operators.OCC_OT_reconstruct
    defaults = {
        "object": "",
        "input_mode": "AUTO",
        "image": "",
        "use_modifiers": True,
        "model": "",
        "resolution": 32,
        "refine_steps": 0,
        "simplify_faces": 0,
        "fit_points": True,
        "open_cavities": True,
        "outlines": True,
        "threshold": 0.0,
    }
    reports: list[tuple[str, str]] = []
    fake = SimpleNamespace(**{**defaults, **properties}, reports=reports)
    fake.report = lambda kind, text: reports.append((next(iter(kind)), text))
    for name in ("_plan", "_label", "_start", "_fail", "_conclude", "modal", "cancel", "_show_progress"):
        setattr(fake, name, types.MethodType(getattr(cls, name), fake))
    return fake


def run_modal(fake: SimpleNamespace, esc_after_progress: bool = False) -> set[str]:
    """Send timer events (and Esc) to a started operator, as Blender would, until it ends."""
    context = bpy.context
    fake._timer = context.window_manager.event_timer_add(0.1, window=context.window)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if esc_after_progress and fake._job.pending.progress is not None:
            assert fake.modal(context, SimpleNamespace(type="ESC", value="PRESS")) == {"RUNNING_MODAL"}
            esc_after_progress = False
        result = fake.modal(context, SimpleNamespace(type="TIMER", value="NOTHING"))
        if result != {"PASS_THROUGH"}:
            return set(result)
        # everything else reaches the rest of the UI: it keeps working while the backend does
        assert fake.modal(context, SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"PASS_THROUGH"}
        time.sleep(0.02)
    raise AssertionError("the modal operator never finished")


def test_modal_reconstruct_shows_progress_and_finishes(addon: ModuleType) -> None:
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    fake = modal_operator(addon, resolution=64)
    fake._start(bpy.context)
    assert addon.runtime.task is not None and addon.runtime.task.label == "Reconstructing 'chair_points'"
    shown = draw(addon.panels.OCC_PT_reconstruct)
    assert shown["progress"] and "occupancy.cancel" in [idname for idname, _ in shown["operators"]]
    assert run_modal(fake) == {"FINISHED"}
    assert addon.runtime.task is None
    assert bpy.context.active_object.name == "chair_points.occupancy"
    assert fake.reports[-1][0] == "INFO" and fake.reports[-1][1].startswith("Made 'chair_points.occupancy'")


def test_modal_reconstruct_cancelled_with_esc(addon: ModuleType) -> None:
    bpy.ops.wm.ply_import(filepath=str(EXAMPLES / "chair_points.ply"))
    fake = modal_operator(addon, resolution=512)
    fake._start(bpy.context)
    assert run_modal(fake, esc_after_progress=True) == {"CANCELLED"}
    assert fake.reports[-1] == ("INFO", "Cancelled; nothing was changed")
    assert [o.name for o in bpy.data.objects] == ["chair_points"] and addon.runtime.task is None


def test_modal_reconstruct_failure_is_reported(addon: ModuleType) -> None:
    fake = modal_operator(addon)
    with pytest.raises(addon.errors.UserError, match="Nothing selected"):
        fake._start(bpy.context)
    assert addon.runtime.task is None
