"""Distillation: a narrower decoder learns to give the occupancy that a trained model gives.

At reconstruction most of the time per query point goes to the decoder's matrix products: five
ResNet blocks of width 128 are about 0.19 s of the 0.53 s that 3,000 points take to a 128^3
mesh. A decoder of width 64 costs a quarter as much. The student reads exactly what the teacher reads:
its encoder and local features (for a point cloud, the U-Net's grid and the patch of nearest
points) are the teacher's, copied and frozen, so it only has to learn the map from those
features to the teacher's occupancy. Soft targets (the teacher's probabilities) carry more
per point than 0/1 labels do, so that map is learnt in a fraction of the teacher's steps.

A run distils when its config names ``train.teacher``; its model config must be the teacher's
but for the decoder's width and depth (``hidden``, ``n_blocks``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from .checkpoint import CheckpointError, ModelMeta, load_checkpoint
from .config import ModelConfig
from .models import OccupancyNetwork
from .models.onet import ViewSet

FROZEN = ("encoder.", "local.")  # the parts the student shares with its teacher


class DistillationError(ValueError):
    """The teacher cannot teach this student (unreadable, or a different network)."""


def load_teacher(path: Path, student: ModelConfig) -> tuple[OccupancyNetwork, ModelMeta]:
    """The teacher in eval mode, without gradients; DistillationError unless its network is
    ``student``'s but for the decoder's width and depth."""
    try:
        teacher, meta = load_checkpoint(path)
    except CheckpointError as e:
        raise DistillationError(f"cannot distil from {path}: {e}") from None
    had = meta.model_config()
    if replace(had, hidden=student.hidden, n_blocks=student.n_blocks) != student:
        raise DistillationError(
            f"cannot distil from {path}: its model config {meta.config} differs from the student's "
            "in more than the decoder's hidden and n_blocks"
        )
    return teacher.float().eval().requires_grad_(False), meta


def share_features(student: OccupancyNetwork, teacher: OccupancyNetwork) -> None:
    """Copy the teacher's encoder and local features into the student and freeze them there."""
    shared = {k: v for k, v in teacher.state_dict().items() if k.startswith(FROZEN)}
    missing, unexpected = student.load_state_dict(shared, strict=False)
    assert not unexpected and all(k.startswith("decoder.") for k in missing), (missing, unexpected)
    for name, p in student.named_parameters():
        if name.startswith(FROZEN):
            p.requires_grad_(False)


class Distillation:
    """The training loss of a student: binary cross-entropy against the teacher's probabilities at
    the batch's query points, summed over the points as ``OccupancyNetwork.loss`` does. The
    ground-truth occupancy is only reported (``bce``), not trained on."""

    def __init__(self, student: OccupancyNetwork, teacher: OccupancyNetwork) -> None:
        self.student, self.teacher = student, teacher

    def __call__(
        self, p: torch.Tensor, occ: torch.Tensor, inputs: torch.Tensor | ViewSet | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        student = self.student
        for part in (student.encoder, student.local):  # frozen: as at inference, whatever the loop set
            if part is not None:
                part.eval()
        with torch.no_grad():
            c, obs = student.encode_local(inputs, batch_size=p.shape[0])
            features = student.decoder_inputs(p, obs)
            target = torch.sigmoid(self.teacher.decoder(features, None, c))
        logits = student.decoder(features, None, c)
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1).mean()
        with torch.no_grad():
            truth = F.binary_cross_entropy_with_logits(logits, occ)
        return loss, {"bce": float(truth), "kl": 0.0, "distill": loss.item() / p.shape[1]}
