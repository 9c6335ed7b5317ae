"""Training on several processes, one per GPU (or CPU share), started by ``torchrun``.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` in each process; without them (or with
one process) nothing here starts a process group, and training runs exactly as it always has.
The collective helpers below are then plain pass-throughs, so the training loop has one path.

Process groups use NCCL on CUDA and gloo on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

# a rank waits this long for the others: rank 0 alone validates and saves, and the first rank of
# each machine alone generates missing procedural splits while the others wait
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0  # the process's index on its machine: its GPU

    @property
    def main(self) -> bool:
        """Rank 0: the one process that reads and writes the run's files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def from_environment() -> Ranks:
    """This process's ranks as torchrun set them (one process when they are not set)."""

    def number(key: str, default: int) -> int:
        value = os.environ.get(key, "")
        try:
            return int(value) if value else default
        except ValueError:
            raise ValueError(f"environment variable {key} must be an integer, got {value!r}") from None

    ranks = Ranks(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0))
    if not (ranks.world >= 1 and 0 <= ranks.rank < ranks.world and ranks.local_rank >= 0):
        raise ValueError(f"inconsistent torchrun environment: {ranks}")
    return ranks


def device_for(ranks: Ranks) -> torch.device:
    """One process: CUDA when available, else the CPU (as before). Several: this process's GPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    if not ranks.distributed:
        return torch.device("cuda")
    return torch.device("cuda", ranks.local_rank % torch.cuda.device_count())


@contextmanager
def process_group(ranks: Ranks, device: torch.device) -> Iterator[None]:
    """Join the other processes for the duration (nothing to do for one process, or when the
    caller has already joined them)."""
    if not ranks.distributed or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a rank's random streams: the run's own for rank 0 (so one process draws what it
    always drew), distinct ones beyond any seed a config can hold for the others."""
    return seed + rank * 2**32


def local_first(ranks: Ranks, make: Callable[[], T]) -> T:
    """``make()`` on the first process of each machine, then on the others: what it caches (a
    generated split) is written once per machine and read by the rest."""
    if not ranks.distributed:
        return make()
    if ranks.local_rank == 0:
        result = make()
        dist.barrier()
        return result
    dist.barrier()
    return make()


def any_rank(flag: bool, ranks: Ranks) -> bool:
    """True on every rank if it is true on any: decisions that must agree (when to stop)."""
    if not ranks.distributed:
        return flag
    value = torch.tensor([int(flag)])
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def from_main(value: Any, ranks: Ranks) -> Any:
    """Rank 0's ``value`` on every rank (plain values and CPU tensors)."""
    if not ranks.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    out: list[Any] = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out
