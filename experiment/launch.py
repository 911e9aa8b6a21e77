"""One experiment step, one library call, wherever it runs.

A step is a library function (`teacher.train.train_teacher`, `teacher.dump.dump_teacher`,
`student.distill.distill`...) and its keyword arguments. `run_step` calls it in this process, or
starts a torchrun job whose N processes each make the same call:

    run_step(step)               # here
    run_step(step, nproc=4)      # python -m torch.distributed.run --standalone --nproc-per-node 4 \
                                 #        -m cpfd.experiment.launch STEP_FILE

The step travels to the job as a pickle (`STEP_FILE`, written for the job by this process, read by
its children, removed afterwards); each child sets up the process group around the call, as the
training commands do, and ends a failure with one `error:` line like the command line.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cpfd.pipeline.ranks import is_rank_zero, rank_prefix
from cpfd.storage.errors import CpfdError, FailedOnMain, error_line, warnings_as_lines


@dataclass
class Step:
    """A library call the experiment makes: `function(**kwargs)`. `function` must be defined at the
    top of a module (a torchrun job's processes import it by name)."""

    name: str  # as the experiment announces it, e.g. "seed-0/teacher"
    function: Callable[..., Any]
    kwargs: dict = field(default_factory=dict)
    device: str = "auto"  # the step's --device: a torchrun job on CUDA uses nccl

    def __call__(self) -> Any:
        return self.function(**self.kwargs)


def run_step(step: Step, *, nproc: int = 1, threads: int | None = None) -> Any:
    """Make the step's call: here (nproc 1, its result returned), or in each process of a torchrun job
    of `nproc` processes on this machine (`--standalone`: a port of its own), each with `threads`
    torch threads; then the result is what the step wrote, and a failed job raises one CpfdError."""
    if nproc == 1:
        return step()
    with tempfile.TemporaryDirectory(prefix="cpfd-step-") as folder:
        path = Path(folder) / "step.pickle"
        path.write_bytes(pickle.dumps(step))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                   "-m", "cpfd.experiment.launch", str(path)]
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        status = torchrun(command, env)
    if status:
        raise CpfdError(f"step {step.name}: its torchrun job ({nproc} processes) failed with exit status {status}; "
                        "its messages are above")
    return None


def torchrun(command: list[str], env: dict) -> int:
    """Run a torchrun job to its end; its warnings and errors go to stderr. The exit status."""
    return subprocess.run(command, stdout=subprocess.DEVNULL, env=env).returncode


def main(argv: list[str] | None = None) -> int:
    """In each process of a torchrun job: read the step, make its call inside the process group.

    A CpfdError (or OSError) is one `error: rank R of N: ...` line and exit status 1, as from the
    command line; warnings are one `warning:` line each, from rank 0 only."""
    from cpfd.pipeline.distributed import process_group

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m cpfd.experiment.launch STEP_FILE (written by experiment.launch.run_step)",
              file=sys.stderr)
        return 2
    step = pickle.loads(Path(argv[0]).read_bytes())  # the file this job's parent wrote for it
    with warnings_as_lines(speak=is_rank_zero()):
        try:
            with process_group(step.device):
                step()
        except FailedOnMain:
            return 1  # rank 0 said what went wrong
        except (CpfdError, OSError) as e:
            print(f"error: {rank_prefix()}{error_line(e)}", file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
