"""``python -m backend serve``: answer wire-protocol requests on stdin/stdout (started by the add-on).

stdout carries only protocol frames; logs go to stderr or ``--log-file``. The process exits when
stdin closes, so it never outlives the program that started it.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N or mps (default: auto)"
    )
    p.add_argument(
        "--weights-dir", type=Path, help="folder of *.safetensors models (default: the shipped weights)"
    )
    p.add_argument(
        "--half",
        action="store_true",
        help="16-bit network evaluation: CUDA, or a CPU with AMX (ignored elsewhere)",
    )
    p.add_argument(
        "--cache-mb",
        type=float,
        help="memory for cached fields, least recently used go first (default: the engine's)",
    )
    p.add_argument("--max-payload-mb", type=float, default=1024.0, help="largest request payload accepted")
    p.add_argument("--log-file", type=Path, help="append the log here instead of writing it to stderr")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def _positive_megabytes(value: float, option: str) -> int:
    if not value > 0:
        raise SystemExit(f"serve: {option} must be positive, got {value:g}")
    return int(value * 2**20)


def run(args: argparse.Namespace) -> int:
    from ..serving.stdio import claim_stdio

    wire_in, wire_out = claim_stdio()  # first: nothing may reach the real stdout but frames
    cache_bytes = None if args.cache_mb is None else _positive_megabytes(args.cache_mb, "--cache-mb")
    max_payload = _positive_megabytes(args.max_payload_mb, "--max-payload-mb")
    handler: logging.Handler = (
        logging.FileHandler(args.log_file, encoding="utf-8")
        if args.log_file
        else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(
        logging.Formatter("%(asctime)s backend.serve[%(process)d] %(levelname)s %(message)s")
    )
    logging.basicConfig(level=args.log_level, handlers=[handler], force=True)
    # Ctrl+C in the terminal that runs Blender reaches the whole process group; the add-on decides
    # when this process ends (by closing stdin), so the interrupt is not ours to act on.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    from ..serving.server import Server, reconstructor_loader

    weights = str(args.weights_dir) if args.weights_dir else None
    server = Server(
        reconstructor_loader(args.device, weights, cache_bytes, half=args.half),
        wire_in,
        wire_out,
        max_payload_bytes=max_payload,
    )
    code = server.serve()
    # Leave without interpreter clean-up: an engine call or the engine import may still run on a
    # daemon thread, and tearing the interpreter down under torch can hang or crash. Frames are
    # written unbuffered, so only the log needs flushing.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(code)
