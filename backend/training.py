"""Training loop: sample a batch, step Adam, validate IoU, keep the best model. Resumable.

Files in ``out_dir``:
- ``state.pt``: everything needed to resume (model, optimizer, step, RNG, best score);
  tensors and plain values only, loaded with ``torch.load(weights_only=True)``.
- ``best.safetensors``: the model with the best validation IoU so far, with its
  cross-validated threshold tau (see ``checkpoint.py``).
- ``train.log``: the log.

Under torchrun the processes train one model together (``TrainingRun``); only rank 0 touches
these files.
"""

from __future__ import annotations

import logging
import math
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed
from .checkpoint import CheckpointError, ModelMeta, load_checkpoint, save_weights
from .config import Config
from .data.dataset import DataError, validation_set
from .data.onet_layout import OnetPool
from .data.sources import open_split
from .distill import Distillation, DistillationError, load_teacher, share_features
from .distributed import Ranks
from .interrupts import Terminated
from .models import OccupancyNetwork, build_model

log = logging.getLogger("backend.train")

SCAN_KEYS = ("n_points", "n_points_max", "noise", "noise_max", "outliers", "density_gain", "partial_scans")
TAUS = tuple(round(0.05 * i, 2) for i in range(2, 19))  # 0.1 ... 0.9


@dataclass
class Validation:
    iou: float  # mean IoU at the best tau
    tau: float
    iou_by_tau: dict[float, float]


def iou(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Per-row IoU of boolean tensors (B, M); 1 where both are empty."""
    inter = (pred & gt).sum(-1).float()
    union = (pred | gt).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


@torch.inference_mode()
def validate(model: OccupancyNetwork, val: list, taus: tuple[float, ...] = TAUS) -> Validation:
    """Mean IoU over shapes for each tau; tau is cross-validated as the best one."""
    model.eval()
    device = next(model.parameters()).device
    sums = torch.zeros(len(taus))
    gen = torch.Generator().manual_seed(0)
    for inputs, pts, occ in val:
        inputs = None if inputs is None else inputs.to(device)
        c, obs = model.encode_local(inputs, batch_size=1)
        z = model.sample_z(1, gen)  # unconditional: scores a random sample, a weak but cheap signal
        prob = torch.sigmoid(model.decode(pts.to(device), z, c, obs)).cpu()
        gt = occ > 0.5
        for j, tau in enumerate(taus):
            sums[j] += iou(prob >= tau, gt).sum()
    means = (sums / len(val)).tolist()
    best = max(range(len(taus)), key=lambda j: means[j])
    return Validation(means[best], taus[best], dict(zip(taus, means, strict=True)))


def _metrics(v: Validation) -> dict[str, Any]:
    """What a model file stores of its validation."""
    return {
        "val_iou": round(v.iou, 4),
        "val_iou_by_tau": {str(k): round(x, 4) for k, x in v.iou_by_tau.items()},
    }


def _data_root(cfg: Config, data_dir: Path) -> Path:
    """Where a config's splits are: the procedural cache under ``data_dir``, or a prepared folder."""
    return data_dir / "procedural" if cfg.data.source == "procedural" else Path(cfg.data.source)


def _validation_data(cfg: Config, data_dir: Path) -> list:
    """The fixed validation shapes, observations and labelled points that select models and tau."""
    d = cfg.data
    pool = open_split(d, "val", d.n_val, _data_root(cfg, data_dir))
    if isinstance(pool, OnetPool):  # read object by object: n_val of them, from every class
        return pool.validation_set(cfg.model.kind, d, cfg.train.val_points, d.n_val)
    return validation_set(pool, cfg.model.kind, d, cfg.train.val_points)


def lr_at(step: int, cfg: Config) -> float:
    """Linear warm-up for 200 steps, then cosine decay from lr to lr_final at max_steps."""
    t = cfg.train
    if step < 200:
        return t.lr * (step + 1) / 200
    frac = min(1.0, step / max(1, t.max_steps))
    return t.lr_final + 0.5 * (t.lr - t.lr_final) * (1 + math.cos(math.pi * frac))


class ResumeError(RuntimeError):
    """A run's saved state cannot be resumed (corrupt, or from a different model)."""


def _load_model_of(
    path: Path, cfg: Config, purpose: str, may_grow: bool = False
) -> tuple[OccupancyNetwork, ModelMeta]:
    """Load a model file for ``purpose`` ("start from", "average"). ResumeError if it is unreadable
    or not this config's network; with ``may_grow`` it may also read fewer pixel stages, or no
    patches of neighbours, or be the image model a views model grows from (one view each)."""
    try:
        model, meta = load_checkpoint(path)
    except CheckpointError as e:
        raise ResumeError(f"cannot {purpose} {path}: {e}") from None
    had, want = meta.model_config(), cfg.model
    if may_grow and had.pixel_stages <= want.pixel_stages:
        had = replace(had, pixel_stages=want.pixel_stages)
    if may_grow and had.neighbours == 0:
        had = replace(had, neighbours=want.neighbours, patch_width=want.patch_width)
    if may_grow and (had.kind, want.kind) == ("image", "views"):
        had = replace(had, kind="views")
    if had != want:
        raise ResumeError(
            f"cannot {purpose} {path}: its model config {meta.config} differs from the config's "
            f"{cfg.to_dict()['model']}"
        )
    return model, meta


def _start_from(
    model: OccupancyNetwork,
    path: Path,
    cfg: Config,
    loaded: tuple[OccupancyNetwork, ModelMeta] | None = None,
) -> dict[str, Any]:
    """Copy a model file's weights into ``model``; returns its provenance, for the new run's metadata.

    The provenance nests: a model fine-tuned from a fine-tuned model names every earlier stage.

    ResumeError unless it is the same network, or this one differs only in reading more of the
    observation at each point: more pixel stages, patches of neighbours, or several views (a
    views model from the image model: the same ResNet reads every view, and the decoder reads the
    views' mean where it read the one picture).
    """
    source, meta = loaded or _load_model_of(path, cfg, "start from", may_grow=True)
    # the new inputs append feature channels to the decoder's input: their weights start at
    # zero, so the new network computes exactly what the old one did and learns to use them;
    # the modules that compute them (the patch MLP) keep their fresh initialisation
    state = source.state_dict()
    if meta.kind == "image" and cfg.model.kind == "views":
        state = {(f"encoder.net.{k[8:]}" if k.startswith("encoder.") else k): v for k, v in state.items()}
    w = state["decoder.fc_p.weight"]
    wanted = model.get_parameter("decoder.fc_p.weight").shape[1]
    state["decoder.fc_p.weight"] = torch.cat([w, w.new_zeros(w.shape[0], wanted - w.shape[1])], 1)
    fresh = {k: v for k, v in model.state_dict().items() if k.startswith("local.patch.")}
    model.load_state_dict({**fresh, **state})
    return meta.provenance(path)


def _setup_logging(out_dir: Path) -> None:
    for old in [h for h in log.handlers if isinstance(h, logging.FileHandler)]:
        log.removeHandler(old)  # a second run in the same process logs only to its own folder
        old.close()
    handler = logging.FileHandler(out_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]


class _Loss(nn.Module):
    """A training loss of ``model`` as a forward pass: DistributedDataParallel synchronises the
    gradients of what its wrapped module's forward computes."""

    def __init__(self, model: OccupancyNetwork, loss: LossFn) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(
        self, points: torch.Tensor, occ: torch.Tensor, inputs: torch.Tensor | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        return self.loss(points, occ, inputs)


class TrainingRun:
    """One run in ``cfg.train.out_dir``, resumed from its saved state if there is one.

    Under torchrun every process builds one of these: each draws its batches from its own share
    of the training shapes with its own random stream, DistributedDataParallel averages the
    gradients, and rank 0 alone reads and writes the run's files, logs and validates. With one
    process this is the plain loop, step for step.

    ``init``: a model file whose weights a new run starts from (fine-tuning); its model config
    must be the one in ``cfg``. A run that resumes from its own state ignores it.
    """

    def __init__(
        self,
        cfg: Config,
        name: str,
        data_dir: Path = Path(".data"),
        init: Path | None = None,
        ranks: Ranks | None = None,
    ) -> None:
        self.cfg, self.name = cfg, name
        self.ranks = ranks = distributed.from_environment() if ranks is None else ranks
        self.out_dir = Path(cfg.train.out_dir)
        self.state_path = self.out_dir / "state.pt"
        # the model to start from is checked before any folder or data split is made
        self._initial = None
        if init is not None and ranks.main and not self.state_path.exists():
            self._initial = _load_model_of(init, cfg, "start from", may_grow=True)
        teacher: tuple[OccupancyNetwork, ModelMeta] | None = None
        if cfg.train.teacher:
            try:
                teacher = load_teacher(Path(cfg.train.teacher), cfg.model)
            except DistillationError as e:
                raise ResumeError(str(e)) from None
        if ranks.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            _setup_logging(self.out_dir)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.device = distributed.device_for(ranks)
        d = cfg.data
        root = _data_root(cfg, data_dir)
        self.pool = distributed.local_first(ranks, lambda: open_split(d, "train", d.n_train, root))
        if len(self.pool) < ranks.world:
            raise DataError(
                f"the training split has {len(self.pool)} shapes, fewer than the {ranks.world} processes"
            )
        self.val = _validation_data(cfg, data_dir) if ranks.main else []

        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model).to(self.device)
        if ranks.rank > 0:  # the same initial weights everywhere, then a stream of its own
            torch.manual_seed(distributed.rank_seed(cfg.train.seed, ranks.rank))
        self.opt = torch.optim.Adam(
            self.model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
        )
        self.gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.train.seed, ranks.rank))
        self.step, self.best_iou, self.best_tau, self.wall = 0, -1.0, 0.5, 0.0
        self.started_from: dict[str, Any] | None = None  # the --init model's provenance
        self._start(init)
        self.loss: LossFn = self.model.loss
        self.teacher: dict[str, Any] | None = None  # the provenance of the model being distilled
        if teacher is not None:
            teacher_model, teacher_meta = teacher
            share_features(self.model, teacher_model.to(self.device))
            self.loss = Distillation(self.model, teacher_model)
            self.teacher = teacher_meta.provenance(Path(cfg.train.teacher))
            log.info("distilling %s (encoder and local features frozen)", cfg.train.teacher)
        if ranks.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.loss = DistributedDataParallel(_Loss(self.model, self.loss), device_ids=device_ids)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(
            "model %s: %.2fM parameters, device %s, %d training shapes",
            cfg.model.kind,
            n_params / 1e6,
            self.device,
            len(self.pool),
        )
        if ranks.distributed:
            log.info(
                "%d processes, %d shapes per batch each (%d in all)",
                ranks.world,
                cfg.train.batch_size,
                ranks.world * cfg.train.batch_size,
            )

    # ------------------------------------------------------------------ starting
    def _start(self, init: Path | None) -> None:
        """Resume from the saved state, or start from ``init``'s weights, or from scratch.

        Rank 0 reads the files; the others get what it read (DistributedDataParallel copies its
        weights to them), so only rank 0 needs the run's folder.
        """
        outcome: tuple[str, Any] = ("new", None)
        if self.ranks.main:
            try:
                if self.state_path.exists():
                    outcome = ("resume", self._read_state())
                elif init is not None:
                    outcome = ("init", _start_from(self.model, init, self.cfg, self._initial))
            except ResumeError as e:
                outcome = ("error", str(e))
        what, value = distributed.from_main(outcome, self.ranks)
        if what == "error":
            raise ResumeError(value)
        if what == "resume":
            if not self.ranks.main:
                self._apply_state(value)
            log.info("resumed at step %d (best IoU %.4f)", self.step, self.best_iou)
        elif what == "init":
            self.started_from = value
            log.info("started from the weights of %s", init)

    def _read_state(self) -> dict[str, Any]:
        try:
            state = torch.load(self.state_path, map_location="cpu", weights_only=True)
            self._apply_state(state)
        except (
            pickle.UnpicklingError,
            RuntimeError,
            KeyError,
            ValueError,
            TypeError,
            OSError,
            EOFError,
        ) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ResumeError(
                f"cannot resume from {self.state_path} ({first}); move it away to start this run over"
            ) from None
        return state

    def _apply_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        streams = state.get("rank_gens")  # every rank's, when several processes saved it
        if self.ranks.main:
            self.gen.set_state(state["gen"])
        elif isinstance(streams, list) and len(streams) == self.ranks.world:
            self.gen.set_state(streams[self.ranks.rank])
        # else: a different number of processes than saved the state; the others draw new streams
        self.step, self.best_iou, self.best_tau = state["step"], state["best_iou"], state["best_tau"]
        self.wall = state["wall"]
        self.started_from = state.get("started_from")

    # ------------------------------------------------------------------ saving
    def save_state(self) -> None:
        """Write what resuming needs (rank 0; every rank must call it, for the random streams)."""
        streams = distributed.gather(self.gen.get_state(), self.ranks)
        if not self.ranks.main:
            return
        state = {
            "model": self.model.state_dict(),
            "opt": self.opt.state_dict(),
            "gen": self.gen.get_state(),
            "step": self.step,
            "best_iou": self.best_iou,
            "best_tau": self.best_tau,
            "wall": self.wall,
            "started_from": self.started_from,
        }
        if self.ranks.distributed:
            state["rank_gens"] = streams
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.state_path)

    def _validate(self) -> None:
        """Validation IoU; a new best model is saved with its tau (rank 0)."""
        cfg, d, step, wall = self.cfg, self.cfg.data, self.step, self.wall
        v = validate(self.model, self.val)
        log.info("step %d val IoU %.4f at tau %.2f (wall %.1f min)", step, v.iou, v.tau, wall / 60)
        if v.iou <= self.best_iou:
            return
        self.best_iou, self.best_tau = v.iou, v.tau
        training: dict[str, Any] = {
            "steps": step,
            "wall_time_min": round(wall / 60, 1),
            "batch_size": cfg.train.batch_size,
            "query_points": d.query_points,
            "data": {
                "source": d.source,
                "n_train": d.n_train,
                "seed": d.seed,
                **{key: getattr(d, key) for key in SCAN_KEYS},
                "hollow": d.hollow,
                "near_surface_ratio": d.near_surface_ratio,
            },
            "device": str(self.device),
            "run": self.out_dir.as_posix(),  # tells the stages of a fine-tuning chain apart on its card
            "started_from": self.started_from,  # None for a run from scratch
        }
        if self.teacher is not None:
            training["distilled_from"] = self.teacher
        if self.ranks.distributed:
            training["processes"] = self.ranks.world  # batch_size is each one's
        meta = ModelMeta(
            name=self.name,
            kind=cfg.model.kind,
            tau=v.tau,
            config=cfg.to_dict()["model"],
            metrics=_metrics(v),
            training=training,
        )
        save_weights(self.out_dir / "best.safetensors", self.model, meta)

    # ------------------------------------------------------------------ training
    def _draw(self) -> torch.Tensor:
        """The shapes of this process's batch: drawn from its share of the pool (all of it for one
        process), like a distributed sampler."""
        share = torch.arange(self.ranks.rank, len(self.pool), self.ranks.world)
        return share[torch.randint(len(share), (self.cfg.train.batch_size,), generator=self.gen)]

    def fit(self, minutes: float | None = None, until_step: int | None = None) -> Path:
        """Train until max_steps, ``until_step`` or ``minutes`` of wall time; the best model's path."""
        cfg, d, ranks = self.cfg, self.cfg.data, self.ranks
        kind, device, model, opt = cfg.model.kind, self.device, self.model, self.opt
        stop = cfg.train.max_steps if until_step is None else min(until_step, cfg.train.max_steps)
        t_start = time.time()
        wall_at_start = self.wall
        deadline = None if minutes is None else t_start + 60 * minutes
        bar = tqdm(
            total=cfg.train.max_steps,
            initial=self.step,
            desc=f"train {self.name}",
            mininterval=5,
            disable=not ranks.main,
        )
        loss_avg = None
        try:
            while self.step < stop:
                if distributed.any_rank(deadline is not None and time.time() >= deadline, ranks):
                    break
                model.train()
                for group in opt.param_groups:
                    group["lr"] = lr_at(self.step, cfg)
                batch = self.pool.batch(kind, self._draw(), d, self.gen)
                inputs = None if batch.inputs is None else batch.inputs.to(device)
                loss, parts = self.loss(batch.points.to(device), batch.occ.to(device), inputs)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                self.step += 1
                step = self.step
                self.wall = wall_at_start + time.time() - t_start
                loss_avg = parts["bce"] if loss_avg is None else 0.98 * loss_avg + 0.02 * parts["bce"]
                bar.update(1)
                bar.set_postfix(bce=f"{loss_avg:.4f}", best_iou=f"{self.best_iou:.3f}")
                if step % 50 == 0:
                    lr = lr_at(step, cfg)
                    log.info("step %d bce %.4f kl %.3f lr %.2e", step, loss_avg, parts["kl"], lr)
                if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
                    if ranks.main:
                        self._validate()
                    self.save_state()
                elif step % cfg.train.checkpoint_every == 0:
                    self.save_state()
        except (KeyboardInterrupt, Terminated) as stopped:
            bar.close()
            if ranks.distributed:  # the other processes may be gone: no collective save
                raise
            # the last whole step's state is kept, so that running the same command resumes there
            self.save_state()
            log.info("%s at step %d; state saved", type(stopped).__name__, self.step)
            raise type(stopped)(
                f"the run's state at step {self.step} is saved in {self.state_path}; "
                "run the same command to resume"
            ) from None
        self.save_state()
        bar.close()
        log.info(
            "stopped at step %d, best val IoU %.4f (tau %.2f), wall %.1f min",
            self.step,
            self.best_iou,
            self.best_tau,
            self.wall / 60,
        )
        return self.out_dir / "best.safetensors"


def train(
    cfg: Config,
    name: str,
    minutes: float | None = None,
    data_dir: Path = Path(".data"),
    init: Path | None = None,
) -> Path:
    """Train (or resume) until max_steps or ``minutes`` of wall time; returns the best model's path.

    Under torchrun (several processes) this process joins the others for the run
    (``TrainingRun``). ``init``: see ``TrainingRun``.
    """
    ranks = distributed.from_environment()
    with distributed.process_group(ranks, distributed.device_for(ranks)):
        return TrainingRun(cfg, name, data_dir, init, ranks).fit(minutes)


def average_weights(paths: list[Path], cfg: Config, out: Path, data_dir: Path = Path(".data")) -> Validation:
    """Average model files of one network (e.g. the last two stages of a fine-tuning chain).

    Runs fine-tuned from one another lie in one basin, where their average often generalises
    better than either. Tau is cross-validated again on ``cfg``'s validation split, and the
    result keeps the last file's provenance. ResumeError if the files are not one network.
    """
    if len(paths) < 2:
        raise ValueError("averaging needs at least two model files")
    models, metas = [], []
    for path in paths:
        model, meta = _load_model_of(path, cfg, "average")
        models.append(model)
        metas.append(meta)
    states = [m.state_dict() for m in models]
    model = models[-1]
    model.load_state_dict(
        {
            k: torch.stack([s[k] for s in states]).mean(0) if v.is_floating_point() else v
            for k, v in states[-1].items()
        }
    )
    with torch.no_grad():
        v = validate(model.eval(), _validation_data(cfg, data_dir))
    meta = metas[-1]
    meta.tau = v.tau
    meta.metrics = _metrics(v)
    meta.training["averaged"] = [
        {"file": str(p), "val_iou": m.metrics.get("val_iou"), "steps": m.training.get("steps")}
        for p, m in zip(paths, metas, strict=True)
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, model, meta, half=False)
    return v
