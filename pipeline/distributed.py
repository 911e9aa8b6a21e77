"""Data-parallel training under torchrun: the process group, and the few collectives the loop needs.

    torchrun --nproc-per-node 8 -m cpfd.cli train-student CORPUS --out M           # one node, 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29400 --rdzv-id job1 -m cpfd.cli distill ...     # two nodes

A training command started by torchrun (WORLD_SIZE > 1 in its environment) sets up the process
group itself: nccl when it trains on CUDA, gloo on the CPU; each process on `cuda:LOCAL_RANK`.
Without torchrun nothing here does anything: `world()` is 1 and the collectives are identities.
The loop (`pipeline.train`) wraps the model in DistributedDataParallel; rank 0 alone writes.
"""

from __future__ import annotations

import datetime
import re
import signal
import threading
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from cpfd.pipeline.ranks import torchrun_env
from cpfd.storage.errors import CpfdError, FailedOnMain

# How long a rank waits for the others at a collective before it gives up (a rank that died and
# was not noticed by torchrun): long enough for an evaluation pass, short enough not to hang a job.
TIMEOUT = datetime.timedelta(minutes=30)


@contextmanager
def process_group(device: str) -> Iterator[None]:
    """Set up (and always tear down) the process group of a torchrun job; a no-op otherwise.

    `device` is the command's --device: a CUDA job uses nccl and pins each process to its GPU."""
    env = torchrun_env()
    if env is None or (dist.is_available() and dist.is_initialized()):
        yield
        return
    rank, world, local = env
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as e:
        raise CpfdError(f"cannot join the other processes ({' '.join(str(e).split())[:200]})") from None
    signal.signal(signal.SIGTERM, stopped_by_torchrun)  # kept until the process ends: it is ending
    try:
        yield
    except RuntimeError as e:  # DistError, or gloo's plain RuntimeError: another rank died
        if not lost_contact(e):
            raise
        stopping.set()  # torchrun's SIGTERM, which follows, must not cut this line short
        raise CpfdError(f"lost contact with the other processes ({reason(e)}); {RERUN}") from None
    else:
        # Every rank has finished its work before any tears its connections down: a rank that
        # destroyed its group while rank 0 was still writing the model has been seen to die at exit
        # in gloo's threads (SIGABRT, "terminate called without an active exception"). A peer that
        # failed instead of arriving says why itself; this rank's work is done and it ends quietly,
        # so the job's root cause stays the peer's own line.
        try:
            dist.barrier()
        except RuntimeError as e:
            if not lost_contact(e):
                raise
    finally:
        dist.destroy_process_group()


RERUN = "the job stops; run the same command again with --resume to continue from the last checkpoint"


def lost_contact(error: RuntimeError) -> bool:
    """A collective failed because a peer went away (gloo reports it as a plain RuntimeError)."""
    text = str(error).lower()
    return isinstance(error, dist.DistError) or any(s in text for s in ("gloo", "nccl", "connection", "broken pipe"))


def reason(error: Exception) -> str:
    """The gist of a backend's message: its first sentence, without source locations in brackets."""
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h|py):\d+\]\s*", "", " ".join(str(error).split()))
    return text.split(". ")[0][:160]


stopping = threading.Event()


def stopped_by_torchrun(signum, frame) -> None:
    """torchrun stops the other ranks (SIGTERM) when one fails: end with one line, not a traceback
    (once: a process already on its way out says why it stopped, and is not interrupted again)."""
    if stopping.is_set():
        return
    stopping.set()
    raise CpfdError(f"stopped by torchrun (SIGTERM), as another process of the job failed or was stopped; {RERUN}")


def world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0, the one process that writes (or the only process)."""
    return rank() == 0


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def all_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (of a copy); the value itself in one process."""
    return _all_reduce(value, dist.ReduceOp.SUM) if world() > 1 else value


def all_min(value: torch.Tensor) -> torch.Tensor:
    """The smallest value over ranks (of a copy); the value itself in one process."""
    return _all_reduce(value, dist.ReduceOp.MIN) if world() > 1 else value


def _all_reduce(value: torch.Tensor, op) -> torch.Tensor:
    value = value.clone()
    dist.all_reduce(value, op=op)
    return value


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object)."""
    if world() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: Any) -> list:
    """Every rank's `value`, in rank order, on every rank."""
    if world() == 1:
        return [value]
    out = [None] * world()
    dist.all_gather_object(out, value)
    return out


def on_main(fn: Callable[[], Any]) -> Any:
    """Run `fn()` on rank 0 alone (a write, a check of the output folder) and hand its result to every
    rank; when it raises, every rank raises too (the others FailedOnMain, which the command line
    does not print again). In one process: `fn()`."""
    if world() == 1:
        return fn()
    if not is_main():
        ok, value = broadcast(None)
        if not ok:
            raise FailedOnMain(value)
        return value
    try:
        value = fn()
    except BaseException as e:
        broadcast((False, str(e) if isinstance(e, CpfdError) else f"rank 0 failed: {type(e).__name__}"))
        raise
    broadcast((True, value))
    return value


@contextmanager
def main_context(make: Callable[[], Any]) -> Iterator[Any]:
    """Enter the context manager `make()` on rank 0 alone (the model folder's lock and staging) and
    give every rank what it yields; on the other ranks the block runs without it."""
    with ExitStack() as stack:
        yield on_main(lambda: stack.enter_context(make()))
