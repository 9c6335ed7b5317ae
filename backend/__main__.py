"""Command line entry point: ``python -m backend <command> ...``.

Each command lives in its own module under ``backend.commands`` and exposes
``add_arguments(parser)`` and ``run(args) -> int``. Modules are imported only
when their command runs, so ``serve`` does not pay for training imports.

Exit statuses: 0 done; 2 invalid input or options (one line starting ``error:``, nothing
written); 130 interrupted (Ctrl-C) and 143 terminated (SIGTERM), also with one ``error:`` line
and no partial file.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import warnings
from typing import NoReturn

from . import __version__
from .allocator import ensure_fast_allocator
from .interrupts import INTERRUPTED_STATUS, TERMINATED_STATUS, Terminated, terminate_as_exception

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
# any spelling of a negative number float() reads (argparse alone takes only -1 and -1.5, so
# "--bounds -1e3 ..." or "-inf" would be taken for options)
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|infinity|nan)$", re.IGNORECASE)


class CommandLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``error:`` line with status 2 (the usage
    is in ``--help``), as every other invalid input is reported."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._negative_number_matcher = NEGATIVE_NUMBER

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = CommandLineParser(prog="python -m backend", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    name = next((a for a in argv if not a.startswith("-")), None)
    for cmd, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(cmd, help=help_text)
        if cmd == name:  # only import the module of the command that runs
            module = importlib.import_module(f"backend.commands.{module_name}")
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser.parse_args(argv)


def _stopped(status: int, reason: str, detail: BaseException) -> int:
    print(f"error: {reason}{f'; {detail}' if str(detail) else ''}", file=sys.stderr)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "serve" in argv[:1]:  # the serve process has its own way to end: stdin closing
        args = _parse(argv)
        return int(args._run(args))
    try:
        with terminate_as_exception(), warnings.catch_warnings():
            # what a user needs to know is printed as "warning:" lines; libraries' Python
            # warnings (numpy's casts, PIL's odd files) would only add noise around them
            warnings.simplefilter("ignore")
            args = _parse(argv)
            return int(args._run(args))
    except KeyboardInterrupt as e:
        return _stopped(INTERRUPTED_STATUS, "interrupted", e)
    except Terminated as e:
        return _stopped(TERMINATED_STATUS, "terminated", e)


if __name__ == "__main__":
    ensure_fast_allocator(["-m", "backend", *sys.argv[1:]])
    sys.exit(main())
