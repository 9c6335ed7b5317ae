"""Command line entry point: ``python -m backend <command> ...``.

Each command lives in its own module under ``backend.commands`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command runs, so ``serve`` does not pay for training imports.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .allocator import ensure_fast_allocator

# command name -> (module under backend.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "reconstruct": ("reconstruct", "reconstruct a mesh from a point cloud, voxel grid or image"),
    "reconstruct-many": ("reconstruct_many", "reconstruct every observation file in a folder, in parallel"),
    "sample": ("sample", "sample a new shape from the unconditional model"),
    "serve": ("serve", "serve requests over stdin/stdout (used by the Blender add-on)"),
    "train": ("train", "train a model from a config file"),
    "evaluate": ("evaluate", "evaluate a checkpoint on a held-out test set"),
    "prepare-meshes": ("prepare_meshes", "turn a folder of meshes into a training dataset"),
    "import-checkpoint": (
        "import_checkpoint",
        "convert a published checkpoint of the original Occupancy Networks into a model file",
    ),
    "info": ("info", "print the backend's and torch's versions and the GPUs, as JSON"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    name = next((a for a in argv if not a.startswith("-")), None)
    for cmd, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_text)
        if cmd == name:  # only import the module of the command that runs
            module = importlib.import_module(f"backend.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    ensure_fast_allocator(["-m", "backend", *sys.argv[1:]])
    sys.exit(main())
