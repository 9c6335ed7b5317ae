"""What one kind of observation means to each part of the backend, in one class per kind.

A kind (point cloud, voxels, image, none) decides the network's encoder and what it reads at
each query point, the shape of the tensor the network takes, how a user's observation becomes
that tensor (engine), how training shapes are observed and augmented (data), how a held-out
shape is observed for evaluation, and which arrays carry it over the wire. Each kind module
(``pointcloud.py``, ``voxels.py``, ``image.py``, ``unconditional.py``) subclasses ``InputKind``;
``backend.kinds.REGISTRY`` names them. A new kind is one new module here and one reader in the
add-on's ``readers/`` (how it is found in the scene and read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Generator, Tensor, nn

from ..config import DataConfig, ModelConfig
from ..data.augment import apply_to_points, random_symmetries
from ..engine.observation import Prepared
from ..engine.types import Observation, ReconstructOptions
from ..models.local import LocalFeatures
from ..models.views import ModelInput
from ..wire.constants import KIND_ARRAYS

if TYPE_CHECKING:
    from ..checkpoint import ModelMeta
    from ..data.cameras import Cameras
    from ..data.dataset import ShapePool


class InputKind:
    """The defaults are those of a kind without an observation; subclasses override."""

    name: ClassVar[str]
    noun: ClassVar[str] = "nothing"  # for messages: "a point cloud"
    viewed: ClassVar[bool] = False  # predicted in the frame of a rendered view (image models)

    @property
    def array(self) -> str | None:
        """The Observation field and wire array that carry it (``wire.constants.KIND_ARRAYS``)."""
        arrays = KIND_ARRAYS[self.name]
        return arrays[0] if arrays else None

    @property
    def extra_arrays(self) -> tuple[str, ...]:
        """Optional companions on the wire (a voxel grid's bounds)."""
        return KIND_ARRAYS[self.name][1:]

    # ------------------------------------------------------------------ the network
    def input_size(self, cfg: ModelConfig) -> int:
        """The grid or image side the encoder expects (0: any size)."""
        return 0

    def input_shape(self, size: int) -> tuple[int | None, ...]:
        """The network's input shape after the batch axis; None: any length."""
        raise NotImplementedError(f"a {self.name} model takes no observation")

    def encoder(self, cfg: ModelConfig) -> nn.Module | None:
        return None

    def local_features(self, cfg: ModelConfig, encoder: nn.Module | None) -> LocalFeatures | None:
        """What the decoder reads of the observation at each point (cfg.local_features)."""
        return None

    # ------------------------------------------------------------------ the engine
    def prepare(self, observation: Observation, meta: ModelMeta, options: ReconstructOptions) -> Prepared:
        """A user's observation -> the network's input (batch of one) and the frame of the result."""
        raise NotImplementedError(f"a {self.name} model does not reconstruct an observation")

    # ------------------------------------------------------------------ training data
    def observe(
        self, pool: ShapePool, idx: Tensor, cfg: DataConfig, gen: Generator, views: Tensor | None
    ) -> ModelInput | None:
        """The network's input for shapes ``idx`` of a pool (``views``: their rendered views)."""
        return None

    def symmetries(self, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Random symmetries that map an observation and its shape together (data/augment.py)."""
        return random_symmetries(n, gen)

    def augment(self, inputs: ModelInput, perm: torch.Tensor, sign: torch.Tensor) -> ModelInput:
        """``inputs`` mapped by the symmetries (``symmetries``) that map the shapes' points."""
        assert isinstance(inputs, torch.Tensor)
        return apply_to_points(inputs, perm, sign)

    # ------------------------------------------------------------------ evaluation
    def silhouette_cameras(self, observation: Observation) -> Cameras | None:
        """The cameras the observation was seen through, in the frame the prediction is scored in,
        for the silhouette metric (None: nothing was seen through a camera)."""
        return None

    def test_observation(
        self, pool: ShapePool, i: int, cfg: DataConfig, gen: Generator, views: int
    ) -> Observation:
        """Held-out shape ``i`` as a user would give it (``views`` > 0: a partial scan from that many)."""
        raise NotImplementedError(f"a {self.name} model is not evaluated on observations")
