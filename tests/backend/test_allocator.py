"""``python -m backend`` runs with the fast allocator settings, however it was started."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from backend.allocator import ALLOCATOR_ENV, OPT_OUT
from backend.wire import BackendProcess

REPO = Path(__file__).resolve().parents[2]


def backend_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_ENV and k != OPT_OUT}
    return {**env, "PYTHONPATH": str(REPO), **extra}


def environ_of_backend(weights: Path, env: dict[str, str]) -> dict[str, str]:
    """Start ``python -m backend serve``, read its /proc environment once it is ready, stop it."""
    argv = [sys.executable, "-m", "backend", "serve", "--weights-dir", str(weights), "--device", "cpu"]
    client = BackendProcess(argv, cwd=REPO, env=env)
    try:
        client.wait_ready(60)
        raw = Path(f"/proc/{client.pid}/environ").read_bytes()
    finally:
        client.close()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(): v.decode() for k, v in pairs}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings, read from /proc")
def test_the_backend_process_sets_its_allocator_up_itself(engine_weights: Path) -> None:
    seen = environ_of_backend(engine_weights, backend_env())
    assert {k: seen.get(k) for k in ALLOCATOR_ENV} == ALLOCATOR_ENV


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings, read from /proc")
def test_user_values_win_and_the_opt_out_is_respected(engine_weights: Path) -> None:
    seen = environ_of_backend(engine_weights, backend_env(MALLOC_TOP_PAD_="4096"))
    assert (
        seen["MALLOC_TOP_PAD_"] == "4096"
        and seen["MALLOC_TRIM_THRESHOLD_"] == ALLOCATOR_ENV["MALLOC_TRIM_THRESHOLD_"]
    )
    plain = environ_of_backend(engine_weights, backend_env(**{OPT_OUT: "1"}))
    assert not set(ALLOCATOR_ENV) & set(plain)
