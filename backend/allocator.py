"""glibc allocator settings that make large torch allocations fast.

By default glibc returns every large block (>= ~32 MB) to the OS as soon as it is freed, and the
page faults of getting it back are slow, on virtual machines especially: a training step here took
7.5 s instead of 2.3 s. These settings keep freed memory in the process. They must be in the
environment before the interpreter starts, so ``python -m backend`` re-executes itself once with
them (same process id). Values already in the environment win; ``OCC_PLAIN_MALLOC=1`` opts out.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

ALLOCATOR_ENV = {
    "MALLOC_MMAP_THRESHOLD_": "4294967296",  # never serve large blocks with mmap
    "MALLOC_TRIM_THRESHOLD_": "68719476736",  # never trim the heap back to the OS
    "MALLOC_TOP_PAD_": "1073741824",  # grow the heap in 1 GB steps
}
OPT_OUT = "OCC_PLAIN_MALLOC"


def ensure_fast_allocator(argv: Sequence[str]) -> None:
    """Re-execute this interpreter with ``argv`` (its arguments after the executable) and the
    allocator settings, unless they are set already, opted out of, or not glibc's to read."""
    if not sys.platform.startswith("linux") or os.environ.get(OPT_OUT) == "1":
        return
    if all(key in os.environ for key in ALLOCATOR_ENV):
        return
    env = {**ALLOCATOR_ENV, **os.environ}
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)
