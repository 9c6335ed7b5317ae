"""Making a reconstruction: the request built from the scene, and the result object built from
the reply. Shared by the operators (modal or blocking) and the live threshold preview."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import bpy
import numpy as np
from mathutils import Matrix

from . import runtime, scene_inputs, settings
from .backend_link import load_protocol
from .errors import UserError
from .mesh_write import checked_mesh, write_mesh
from .model_files import ModelFile, ModelFileError, pick_model
from .properties import quiet_updates, result_settings
from .service import BackendRequest

if TYPE_CHECKING:  # at run time the wire package is loaded by path (backend_link.load_protocol)
    from backend.wire import Message

RESULT_SUFFIX = ".occupancy"
GENERATED_NAME = "Generated"
RESOLUTION_CHOICES: tuple[int, ...] = tuple(load_protocol().RESOLUTIONS)


@dataclass
class Recipe:
    """Everything needed to make a result again (stored as JSON on the result object)."""

    kind: str  # the model's kind: pointcloud, voxels, image or unconditional
    model: str  # the name or checkpoint path sent to the backend
    resolution: int = 128
    refine_steps: int = 0
    simplify_faces: int = 0  # 0: off
    fit_points: bool = True  # point clouds: the surface fitted to the points where they are dense
    open_cavities: bool = True  # point clouds: cavities the network filled over scanned points carved
    outlines: bool = True  # reference views: the surface pulled to the pictures' outlines
    input_mode: str = "AUTO"
    use_modifiers: bool = True
    image: str = ""  # the name of an image chosen in the panel (no image empty)
    seed: int = 0

    def options(self, tau: float | None) -> dict[str, Any]:
        """The backend's reconstruct/sample options; ``tau`` None is the model's own threshold."""
        return {
            "resolution": self.resolution,
            "refine_steps": self.refine_steps,
            "simplify_faces": self.simplify_faces or None,
            "fit_points": self.fit_points,
            "open_cavities": self.open_cavities,
            "outlines": self.outlines,
            "tau": tau,
            "seed": self.seed,
            "keep_field": True,
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> Recipe:
        try:
            values = json.loads(text)
            return Recipe(**values)
        except (ValueError, TypeError) as error:
            raise UserError(f"This result has no readable recipe to make it again ({error})") from None


@dataclass
class Plan:
    """A request ready to send: what, with which model, and where the result goes."""

    recipe: Recipe
    model: ModelFile
    name: str  # of the result object
    matrix_world: np.ndarray
    arrays: dict[str, np.ndarray]
    source: str = ""  # name of the input object ("" for a chosen image or a generated shape)
    description: str = ""
    warnings: list[str] = field(default_factory=list)  # about the input, reported with the result


def check_options(resolution: int, refine_steps: int, simplify_faces: int, threshold: float) -> None:
    if resolution not in RESOLUTION_CHOICES:
        raise UserError(
            f"Resolution must be one of {', '.join(map(str, RESOLUTION_CHOICES))}, got {resolution}"
        )
    if refine_steps < 0:
        raise UserError(f"Refinement steps must be 0 or more, got {refine_steps}")
    if simplify_faces != 0 and simplify_faces < 4:
        raise UserError(f"Simplify to at least 4 faces (or 0 for no simplification), got {simplify_faces}")
    if not 0.0 <= threshold < 1.0:
        raise UserError(f"Threshold must lie in (0, 1), or be 0 for the model's own, got {threshold}")


def choose_model(context: bpy.types.Context, choice: str, kind: str, count: int | None = None) -> ModelFile:
    """The chosen model, or Automatic's for an input of ``kind`` (a cloud of ``count`` points)."""
    models, _ = settings.available_models(context)
    try:
        return pick_model(models, "" if choice == "AUTO" else choice, kind, count)
    except ModelFileError as error:
        raise UserError(f"Model missing: {error}") from None


def plan_reconstruction(
    context: bpy.types.Context,
    obj: bpy.types.Object | None,
    recipe: Recipe,
    chosen_image: bpy.types.Image | None,
) -> Plan:
    """Detect and read the input, pick the model; UserError says what is wrong."""
    choice = scene_inputs.detect(context, obj, recipe.input_mode, recipe.use_modifiers, chosen_image)
    model = choose_model(context, recipe.model, choice.kind, choice.count or None)
    data = scene_inputs.read(context, choice, recipe.use_modifiers)
    recipe.kind, recipe.model = model.kind, model.name
    if choice.obj is None and choice.image is not None:
        recipe.image = choice.image.name
    return Plan(
        recipe,
        model,
        choice.name + RESULT_SUFFIX,
        data.matrix_world,
        data.arrays,
        source=choice.obj.name if choice.obj is not None else "",
        description=choice.description,
        warnings=data.warnings,
    )


def plan_generation(context: bpy.types.Context, recipe: Recipe) -> Plan:
    """A shape from the unconditional model, placed at the 3D cursor."""
    model = choose_model(context, recipe.model, "unconditional")
    recipe.kind, recipe.model = model.kind, model.name
    matrix = np.eye(4)
    if context.scene is not None:
        cursor: Any = context.scene.cursor.location
        matrix[:3, 3] = (cursor[0], cursor[1], cursor[2])
    return Plan(recipe, model, GENERATED_NAME + RESULT_SUFFIX, matrix, {}, description=f"seed {recipe.seed}")


def send(context: bpy.types.Context, plan: Plan, tau: float | None) -> BackendRequest:
    """Start the backend request of ``plan``; the reply comes back on the returned request."""
    config = settings.backend_config(context)
    options = plan.recipe.options(tau)
    if plan.recipe.kind == "unconditional":
        return runtime.service.request(config, "sample", plan.model.name, plan.recipe.seed, options)
    return runtime.service.request(
        config, "reconstruct", model=plan.model.name, options=options, **plan.arrays
    )


def _collection_for(context: bpy.types.Context, source: bpy.types.Object | None) -> bpy.types.Collection:
    if source is not None and source.users_collection:
        return source.users_collection[0]
    if context.collection is not None:
        return context.collection
    assert context.scene is not None
    return context.scene.collection


def reply_mesh(reply: Message) -> tuple[np.ndarray, np.ndarray]:
    """The vertices and triangles of a ``result``, checked before they go anywhere near the scene
    (the last line of defence against a mesh with NaN or infinite vertices)."""
    try:
        return checked_mesh(reply.arrays["vertices"], reply.arrays["faces"])
    except ValueError as error:
        raise UserError(
            f"The backend sent a mesh that cannot be used ({error}); nothing in the scene was changed"
        ) from None


def create_result(context: bpy.types.Context, plan: Plan, reply: Message, token: str) -> bpy.types.Object:
    """A new mesh object from a ``result`` reply, placed by the plan, selected and active.
    UserError, with nothing created, when the reply's mesh is unusable."""
    vertices, faces = reply_mesh(reply)
    mesh = bpy.data.meshes.new(plan.name)
    write_mesh(mesh, vertices, faces)
    obj = bpy.data.objects.new(plan.name, mesh)
    source = bpy.data.objects.get(plan.source) if plan.source else None
    _collection_for(context, source).objects.link(obj)
    obj.matrix_world = Matrix(plan.matrix_world.tolist())
    result = result_settings(obj)
    tau = float(reply.fields["tau"])
    with quiet_updates():
        result.is_result = True
        result.source = source
        result.kind = plan.recipe.kind
        result.model = plan.model.name
        result.recipe = plan.recipe.to_json()
        result.threshold = tau
        result.applied_threshold = tau
        result.field_id = reply.fields.get("field_id") or ""
        result.backend_token = token
    view_layer = context.view_layer
    if view_layer is not None:
        view_layer.update()  # the new object only counts as part of the view layer after this
        if view_layer.objects.get(obj.name) is not None:
            obj.select_set(True, view_layer=view_layer)
            view_layer.objects.active = obj
    return obj


def warnings_of(reply: Message) -> list[str]:
    return [str(w) for w in reply.fields.get("warnings", [])]
