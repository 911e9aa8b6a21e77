"""Library calls for tests of `experiment.launch`: module-level, so a torchrun job's processes import them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cpfd.pipeline import distributed
from cpfd.storage.errors import CpfdError


def record_rank(out: Path) -> tuple[int, int]:
    """Write this process's rank, world size and torch threads to OUT/rank-R.json; return (rank, world)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rank, world = distributed.rank(), distributed.world()
    distributed.barrier()  # a collective: the process group is up
    (out / f"rank-{rank}.json").write_text(json.dumps({"rank": rank, "world": world, "threads": torch.get_num_threads()}))
    return rank, world


def fail_on_rank(rank: int) -> None:
    if distributed.rank() == rank:
        raise CpfdError(f"rank {rank} was told to fail")


def write_pid_then_sleep(out: Path, seconds: float) -> None:
    """Write this process's pid to OUT, then sleep: a long step that another's failure must stop."""
    import os
    import time

    Path(out).write_text(str(os.getpid()))
    time.sleep(seconds)


def say_then_fail(message: str) -> None:
    """Print a line (for the log's tail), then fail with `message` as a step fails."""
    import time

    time.sleep(0.5)
    print("a line of the failing step's own output", flush=True)
    raise CpfdError(message)
