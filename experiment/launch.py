"""One experiment step, one library call, wherever it runs.

A step is a library function (`teacher.train.train_teacher`, `teacher.dump.dump_teacher`,
`student.distill.distill`...) and its keyword arguments. `run_step` calls it in this process, or
starts a torchrun job whose N processes each make the same call; `start_step` starts either kind
in a process of its own, its output in a log file, and returns at once (`cpfd experiment --jobs`):

    run_step(step)               # here
    run_step(step, nproc=4)      # python -m cpfd.experiment.launch job 4 STEP_FILE: torchrun's launcher
                                 # (torch.distributed.run), whose 4 processes each run
                                 # python -m cpfd.experiment.launch STEP_FILE
    start_step(step, log=path)   # python -m cpfd.experiment.launch STEP_FILE, alone, in the background

The step travels to the job as a pickle (`STEP_FILE`, written for the job by this process, read by
its children, removed afterwards). Each child sets up the process group around the call, as the
training commands do; a failing child leaves its one error line in torchrun's error file
(`pipeline.ranks.tell_torchrun`). The launcher runs in a process of its own that keeps torchrun's
log lines and its traceback out of the experiment's output: a failed job is one CpfdError here,
naming the step and the job's root cause (the first process to fail, with its line).
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cpfd.pipeline.ranks import is_rank_zero, rank_prefix, tell_torchrun, under_torchrun
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
        status = launch_job(step_command(path, nproc), step_env(threads))
        cause = root_cause_file(path)
        cause = cause.read_text().strip() if cause.exists() else f"exit status {status}"
    if status:
        raise CpfdError(f"step {step.name}: its torchrun job ({nproc} processes) failed: {cause}")
    return None


def step_command(step_file: Path, nproc: int) -> list[str]:
    """The command that makes a step's call: one process (nproc 1), or torchrun's launcher for nproc."""
    job = ["job", str(nproc)] if nproc > 1 else []
    return [sys.executable, "-m", "cpfd.experiment.launch", *job, str(step_file)]


def step_env(threads: int | None, **extra: str) -> dict:
    """The environment a step's processes run in: `threads` torch intra-op threads each."""
    return {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}), **extra}


def launch_job(command: list[str], env: dict) -> int:
    """Run the job's launcher to its end (the children's warnings and progress go to stderr); its exit status."""
    return subprocess.run(command, stdout=subprocess.DEVNULL, env=env).returncode


class StartedStep:
    """A step running in a process of its own (and, for a torchrun job, that launcher's processes),
    its output going to `log`. `poll` says whether it ended; `failure` why it failed; `stop` ends it
    and every process it started."""

    def __init__(self, step: Step, process: subprocess.Popen, folder: Path, log: Path, nproc: int):
        self.step, self.process, self.folder, self.log, self.nproc = step, process, folder, log, nproc
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.process.poll()

    def failure(self) -> str:
        """The one line that says why the step failed: the torchrun job's root cause, else the last
        `error:` line of the log, else how the process ended."""
        cause = root_cause_file(self.folder / "step.pickle")
        if cause.exists():
            return cause.read_text().strip()
        tail = [line for line in log_tail(self.log, 200) if line.strip()]
        errors = [line for line in tail if line.startswith("error: ")]
        if errors:
            return errors[-1].removeprefix("error: ")
        status = self.process.returncode
        if status is not None and status < 0:
            return f"killed by signal {signal.Signals(-status).name}"
        return f"exit status {status}" + (f" ({tail[-1].strip()[:300]})" if tail and not tail[-1].startswith("# ") else "")

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to the step's process group (its launcher and a torchrun job's processes), SIGKILL
        to whatever is left after `grace` seconds; then its step file goes."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None and not group_alive(self.process.pid):
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and (self.process.poll() is None or group_alive(self.process.pid)):
                time.sleep(0.05)
        self.close()

    def close(self) -> None:
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def start_step(step: Step, *, log: Path, nproc: int = 1, threads: int | None = None,
               env: dict | None = None) -> StartedStep:
    """Start the step's call in a process of its own (a torchrun job for nproc > 1) and return at once.
    Its stdout and stderr go to `log` (appended: a resumed step keeps its earlier attempt's lines).
    The process leads a process group of its own, so that `StartedStep.stop` reaches every process of
    the step, and it gets SIGTERM if this process dies (Linux), so that none outlives the experiment."""
    folder = Path(tempfile.mkdtemp(prefix="cpfd-step-"))
    path = folder / "step.pickle"
    path.write_bytes(pickle.dumps(step))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} step {step.name}: {' '.join(step_command(path, nproc))}\n")
        out.flush()
        process = subprocess.Popen(step_command(path, nproc), stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, env={**step_env(threads), **(env or {})},
                                   start_new_session=True, preexec_fn=die_with_parent)
    return StartedStep(step, process, folder, log, nproc)


def die_with_parent() -> None:
    """In the child, before it runs: ask Linux to send it SIGTERM when its parent dies (prctl
    PR_SET_PDEATHSIG), so that a killed experiment leaves no step running. Elsewhere, nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG


def group_alive(pgid: int) -> bool:
    """Whether any process of process group `pgid` is still running."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def log_tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log, progress bars' carriage returns resolved to their last state."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line.rsplit("\r", 1)[-1] for line in text.rstrip("\n").split("\n")[-lines:]]


def root_cause_file(step_file: Path) -> Path:
    """Where the launcher leaves the root cause of a failed job, beside the step file."""
    return step_file.with_suffix(".root-cause")


def torchrun_job(nproc: int, step_file: Path) -> int:
    """torchrun's launcher (`torch.distributed.run`, as `--standalone --nproc-per-node N`) over
    `python -m cpfd.experiment.launch STEP_FILE`, in this process. Its log lines stay below ERROR
    (the children say what matters) and a failed job is not its 40-line traceback: the root cause's
    line goes to `root_cause_file`, and the status is 1."""
    import logging

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed").setLevel(logging.CRITICAL)
    args = parse_args(["--standalone", "--nproc-per-node", str(nproc), "-m", "cpfd.experiment.launch", str(step_file)])
    try:
        run(args)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        message = failure.message if isinstance(failure.message, str) else str(failure.message.get("message"))
        if not message.startswith("error: "):  # no line of cpfd's: a signal, or a crash before cpfd spoke
            message = f"rank {rank} of {nproc}: {message}"
        root_cause_file(step_file).write_text(message.removeprefix("error: ") + "\n")
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m cpfd.experiment.launch job N STEP_FILE`: the job's launcher (`torchrun_job`).
    `python -m cpfd.experiment.launch STEP_FILE`: one process of the job. It reads the step and makes
    its call inside the process group; a CpfdError (or OSError) is its one line
    (`error: rank R of N: ...`), left for torchrun's failure report; warnings are one `warning:`
    line each, from rank 0 only."""
    from cpfd.pipeline.distributed import process_group

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "job" and argv[1].isdigit():
        return torchrun_job(int(argv[1]), Path(argv[2]))
    if len(argv) != 1:
        print("usage: python -m cpfd.experiment.launch [job N] STEP_FILE (written by experiment.launch.run_step)",
              file=sys.stderr)
        return 2
    step = pickle.loads(Path(argv[0]).read_bytes())  # the file this job's parent wrote for it
    with warnings_as_lines(speak=is_rank_zero()):
        try:
            with process_group(step.device):
                step()
        except FailedOnMain as e:  # rank 0 failed at a step only it does
            tell_torchrun(f"error: {rank_prefix(0)}{e}")
            return 1
        except (CpfdError, OSError) as e:
            line = f"error: {rank_prefix()}{error_line(e)}"
            tell_torchrun(line)
            if not under_torchrun():  # a step of its own (start_step): the line goes to its log
                print(line, file=sys.stderr, flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
