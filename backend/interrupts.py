"""Ctrl-C and SIGTERM as exceptions, so that every command stops the same way: one line, no file.

SIGINT already raises ``KeyboardInterrupt``; ``terminate_as_exception`` makes SIGTERM raise
``Terminated`` in the main thread, so ``finally`` blocks run (a temporary file is removed,
training saves its state) before the command line prints one line and exits 130 or 143, the
shell's statuses for the two signals. Worker processes ignore SIGINT (the terminal sends it to
the whole process group): their parent stops them.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTED_STATUS = 128 + signal.SIGINT  # 130
TERMINATED_STATUS = 128 + signal.SIGTERM  # 143


class Terminated(BaseException):  # noqa: N818 - named after the signal, like KeyboardInterrupt
    """SIGTERM arrived. A BaseException, like KeyboardInterrupt, so ``except Exception`` lets it by."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def terminate_as_exception() -> Iterator[None]:
    """While inside, SIGTERM raises ``Terminated`` (in the main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def ignore_interrupts() -> None:
    """A process pool's initializer: Ctrl-C is for the parent, which stops the pool."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
