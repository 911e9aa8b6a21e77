"""Which process of a torchrun job this is: the one place that reads torchrun's RANK, WORLD_SIZE and
LOCAL_RANK. It imports no torch, so the command line asks it before loading anything heavy.

`torchrun_env()` validates the three numbers (one line naming them when they are wrong);
`is_rank_zero()` and `rank_prefix()` only say how to present a message and never raise.
Once a process group is set up, `pipeline.distributed.rank()` and `world()` give the same numbers.
"""

from __future__ import annotations

import os

from cpfd.storage.errors import CpfdError


def torchrun_env() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment; None outside torchrun (or world 1).
    LOCAL_RANK (the GPU of this process on its node) is RANK when it is not set."""
    values = {k: os.environ.get(k) for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    if values["WORLD_SIZE"] is None or (values["WORLD_SIZE"] == "1" and values["RANK"] in (None, "0")):
        return None  # not started by torchrun, or a job of one process: one process
    values["LOCAL_RANK"] = values["LOCAL_RANK"] or values["RANK"]
    bad = {k: v for k, v in values.items() if v is None or not v.isdigit()}
    if bad or int(values["RANK"]) >= int(values["WORLD_SIZE"]):
        shown = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise CpfdError(f"{shown}: expected whole numbers with RANK < WORLD_SIZE (torchrun sets them)")
    rank, world, local = (int(values[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    return (rank, world, local) if world > 1 else None


def local_rank() -> str | None:
    """torchrun's LOCAL_RANK as given (the GPU index of this process), None outside torchrun."""
    return os.environ.get("LOCAL_RANK")


def under_torchrun() -> bool:
    """Started by torchrun with more than one process (whatever the numbers' validity)."""
    return os.environ.get("WORLD_SIZE", "1") not in ("", "1")


def is_rank_zero() -> bool:
    """Outside torchrun, or its rank 0: the process that speaks for the job."""
    return os.environ.get("RANK", "0") == "0"


def rank_prefix() -> str:
    """`rank R of N: ` before an error of a torchrun job's process; nothing in one process."""
    return f"rank {os.environ.get('RANK', '?')} of {os.environ['WORLD_SIZE']}: " if under_torchrun() else ""
