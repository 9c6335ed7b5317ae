"""``python -m backend info``: this backend's version, torch's version and the GPUs it sees, as JSON.

The add-on's Check Backend runs it in the chosen interpreter, so torch is only ever imported by
the backend's own process.
"""

from __future__ import annotations

import argparse
import json
import sys

from .. import __version__


def add_arguments(p: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    try:
        import torch
    except ImportError as e:
        print(f"error: torch cannot be imported: {e}", file=sys.stderr)
        return 1
    cuda = torch.cuda.is_available()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    print(json.dumps({"backend": __version__, "torch": torch.__version__, "cuda": cuda, "gpus": gpus}))
    return 0
