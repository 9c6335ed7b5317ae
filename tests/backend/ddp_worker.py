"""Run by test_distributed.py under torchrun: the same tiny run in every process, once straight
and once stopped at step 2 and resumed; each rank then saves its final weights for the test.

Each rank works in a folder of its own and the run's out_dir is relative, so whatever a rank
writes lands in its own folder: rank 0's must hold the run's files and rank 1's nothing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parents[1]), str(HERE)]

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from test_distributed import reference_config  # noqa: E402

from backend.distributed import from_environment  # noqa: E402
from backend.training import TrainingRun  # noqa: E402


def main(data_dir: Path, root: Path) -> None:
    torch.set_num_threads(1)
    ranks = from_environment()
    dist.init_process_group("gloo")
    home = root / f"rank{ranks.rank}"
    home.mkdir()
    os.chdir(home)
    for label, stops in (("straight", [None]), ("resumed", [2, None])):
        for until in stops:
            run = TrainingRun(reference_config(Path(label), max_steps=4), "tiny", data_dir, ranks=ranks)
            run.fit(until_step=until)
        weights = {k: v.detach().clone() for k, v in run.model.named_parameters()}
        torch.save(weights, root / f"{label}-{ranks.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
