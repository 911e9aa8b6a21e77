"""Which process of a torchrun job this is: the one place that reads torchrun's RANK, WORLD_SIZE and
LOCAL_RANK. It imports no torch, so the command line asks it before loading anything heavy.

`torchrun_env()` validates the three numbers (one line naming them when they are wrong);
`is_rank_zero()` and `rank_prefix()` only say how to present a message and never raise;
`tell_torchrun()` hands a failed process's error line to torchrun's failure report.
Once a process group is set up, `pipeline.distributed.rank()` and `world()` give the same numbers.
"""

from __future__ import annotations

import json
import os
import time

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
    """Outside torchrun, or its rank 0: the process that speaks for the job. A process whose
    environment is no valid torchrun job speaks for itself (its error says what is wrong)."""
    try:
        env = torchrun_env()
    except CpfdError:
        return True
    return env is None or env[0] == 0


def rank_prefix(rank: int | str | None = None) -> str:
    """`rank R of N: ` before an error of a torchrun job's process (this one's rank, or `rank`);
    nothing in one process."""
    if not under_torchrun():
        return ""
    return f"rank {os.environ.get('RANK', '?') if rank is None else rank} of {os.environ['WORLD_SIZE']}: "


def tell_torchrun(line: str) -> None:
    """Leave `line` (cpfd's one error line) where torchrun looks for a failed process's error: the file
    it names in TORCHELASTIC_ERROR_FILE. Its failure report then shows this line for this process, and
    as the root cause when this process failed first, instead of a pointer to its docs. Outside
    torchrun (no such file), nothing."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    try:
        with open(path, "w") as f:  # the format of torchrun's own @record; the report shows py_callstack
            json.dump({"message": {"message": line, "extraInfo": {"py_callstack": line,
                                                                  "timestamp": str(int(time.time()))}}}, f)
    except OSError:
        pass  # the error line itself is what matters; torchrun then says less
