"""Writing meshes to files (ply, obj, stl, off, glb) with trimesh."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .mesh_check import check_mesh
from .types import InputError

MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")


def check_output_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in MESH_SUFFIXES:
        raise InputError(f"unsupported output {path.name!r}: use one of {', '.join(MESH_SUFFIXES)}")
    if not path.parent.is_dir():
        raise InputError(f"output folder does not exist: {path.parent}")
    if path.is_dir():
        raise InputError(f"the output {path} is an existing folder; give a file name")
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write into the output folder {path.parent}")
    return path


def write_mesh(
    path: str | Path, vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray | None = None
) -> None:
    """Write a mesh; the file appears complete or not at all (written aside in the same folder,
    then renamed over ``path``), also when interrupted. InputError for a mesh that is not finite."""
    import trimesh  # imported here: loading it costs ~0.3 s

    path = check_output_path(path)
    check_mesh(vertices, faces, normals=normals)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_normals=normals, process=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        mesh.export(str(tmp), file_type=path.suffix.lower().lstrip("."))
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)
