"""Where a config's ``data.source`` points, opened as a pool of shapes: the procedural cache, a
folder made by ``prepare-meshes``, or a dataset in the original's layout (``onet_layout.py``)."""

from __future__ import annotations

from pathlib import Path

from ..config import DataConfig
from .dataset import ShapePool
from .generate import build_split
from .meshes import prepared_folder
from .onet_layout import OnetPool, is_onet_layout

Pool = ShapePool | OnetPool


def open_split(cfg: DataConfig, split: str, n: int, cache_dir: Path) -> Pool:
    """The split's shapes (``n`` and ``cache_dir`` apply to procedural data only)."""
    if cfg.source != "procedural" and is_onet_layout(cfg.source):
        return OnetPool(cfg.source, split, cfg.classes)
    return ShapePool(build_split(cfg, split, n, cache_dir))


def check_source(source: str) -> None:
    """MeshDataError (naming what to do) unless ``source`` is something ``open_split`` reads."""
    if source != "procedural" and not is_onet_layout(source):
        prepared_folder(source)
