"""Running an experiment's steps in the order their inputs allow.

The experiment is a small graph of tasks: a task names the tasks whose outputs it reads (`after`),
and is made into a step (`experiment.launch.Step`) only once those have finished, so that it can
look at what they wrote (a matched PFD reads the dump to learn its alpha; a training resumes from
its checkpoint). `run_tasks` runs them

    jobs 1:   one after another, in the order given, here (or each as a torchrun job, nproc > 1);
    jobs N:   up to N at once, each in a process of its own (`launch.start_step`), its output in
              LOGS/<task name>.log, the tasks taken in the order given as soon as their inputs exist.

Either way a task whose output is complete is reused, not run, and each run's wall seconds go to
the timings file. With N jobs a failed step stops the others (its log's last lines are printed
with its name) and so does an interrupt (Ctrl-C, SIGTERM, SIGHUP): no process outlives the run,
and the same command again goes on from the finished steps.
"""

from __future__ import annotations

import json
import signal
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from cpfd.experiment.launch import StartedStep, Step, log_tail, run_step, start_step
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.errors import CpfdError, CpfdWarning

WARNINGS = "warnings.json"  # beside the timings: {step name: [its warning lines]}
HEARTBEAT_SECONDS = 60.0  # a status line at least this often while steps run (with N jobs)
TAIL_LINES = 15  # lines of a failed step's log shown with its name


@dataclass
class Task:
    name: str  # "seed-0/pfd": also its timings key and its log (LOGS/seed-0/pfd.log)
    label: str  # what progress lines call it: "seed-0: distill pfd (constant, T=1)"
    kind: str  # "train", "dump", "distill" or "evaluate": time estimates are per kind
    after: tuple[str, ...]  # the tasks whose outputs it reads
    finished: Callable[[], bool]  # its output is complete already: reused, not run
    make: Callable[[], Step | str]  # its step, made once `after` finished; a string: nothing to run, and why
    nproc: int = 1  # > 1: a torchrun job of this many processes


def critical_path(tasks: list[Task], seconds: dict[str, float]) -> tuple[float, list[str]]:
    """The longest chain of tasks, each waiting for the one before, by `seconds` per task (missing: 0):
    the wall time no number of cores removes. Its length and its task names, first to last."""
    best: dict[str, tuple[float, list[str]]] = {}
    for task in tasks:  # in an order where `after` comes first, as run_tasks needs too
        before = max((best[a] for a in task.after if a in best), default=(0.0, []), key=lambda b: b[0])
        best[task.name] = (before[0] + seconds.get(task.name, 0.0), [*before[1], task.name])
    return max(best.values(), default=(0.0, []), key=lambda b: b[0])


def duration(seconds: float) -> str:
    """`1 h 02 min`, `3 min 07 s`, `42 s`."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def estimates(tasks: list[Task], seconds: dict[str, float]) -> dict[str, float]:
    """The mean wall seconds of the timed tasks of each kind."""
    by_kind: dict[str, list[float]] = {}
    for task in tasks:
        if task.name in seconds:
            by_kind.setdefault(task.kind, []).append(seconds[task.name])
    return {kind: sum(v) / len(v) for kind, v in by_kind.items()}


def time_left(waiting: list[Task], running: list[tuple[Task, float]], estimate: dict[str, float],
              jobs: int) -> float | None:
    """A rough estimate of the wall seconds left: each task takes its kind's `estimate` (else the mean
    of all kinds), a running one less the seconds it has run; shared out over `jobs` lanes, and never
    less than the longest running step still needs. None before any step has a time."""
    if not estimate:
        return None
    overall = sum(estimate.values()) / len(estimate)
    rest = [max(estimate.get(task.kind, overall) - ran, 0.0) for task, ran in running]
    total = sum(estimate.get(task.kind, overall) for task in waiting) + sum(rest)
    return max(total / jobs, max(rest, default=0.0))


class Progress:
    """The `[k/n]` lines on stderr, the timings file (wall seconds of each step run) and, beside it,
    warnings.json: the `warning:` lines each step printed, which the report carries."""

    def __init__(self, tasks: list[Task], timings: Path, say: Callable[[str], None]):
        self.tasks, self.timings, self.say = tasks, timings, say
        self.warnings = timings.with_name(WARNINGS)
        self.done = 0

    def note_warnings(self, name: str, lines: list[str]) -> None:
        """The warnings of a step's latest run (none: its entry goes)."""
        noted = json.loads(self.warnings.read_text()) if self.warnings.exists() else {}
        noted.pop(name, None)
        if lines:
            noted[name] = lines
        if noted or self.warnings.exists():
            atomic_write_json(self.warnings, noted)

    def announce(self, what: str, reused: bool = False) -> None:
        self.done += 1
        self.say(f"[{self.done}/{len(self.tasks)}] {what}" + (" (reused)" if reused else ""))

    def seconds(self) -> dict[str, float]:
        return json.loads(self.timings.read_text()) if self.timings.exists() else {}

    def record(self, name: str, seconds: float) -> None:
        atomic_write_json(self.timings, {**self.seconds(), name: round(seconds, 2)})


def run_tasks(tasks: list[Task], *, jobs: int, threads: int | None, logs: Path, timings: Path,
              say: Callable[[str], None]) -> None:
    """Run every task not finished yet: one at a time here with jobs 1, else up to `jobs` at once in
    processes of their own (module docstring). `threads`: torch threads of each step's processes."""
    listed: set[str] = set()
    for task in tasks:
        if missing := [a for a in task.after if a not in listed]:
            raise ValueError(f"task {task.name} comes after {missing}, which are not tasks listed before it")
        listed.add(task.name)
    progress = Progress(tasks, timings, say)
    if jobs == 1:
        one_at_a_time(tasks, threads, progress)
    else:
        Lanes(tasks, jobs, threads, logs, progress).run()


def one_at_a_time(tasks: list[Task], threads: int | None, progress: Progress) -> None:
    """jobs 1: each step in turn, in the given order; a step of one process runs in this process."""
    for task in tasks:
        if task.finished():
            progress.announce(task.label, reused=True)
            continue
        step = task.make()
        if isinstance(step, str):
            progress.announce(step, reused=True)
            continue
        progress.announce(task.label)
        start = time.perf_counter()
        with noting_warnings() as noted:
            run_step(step, nproc=task.nproc, threads=threads)
        progress.record(task.name, time.perf_counter() - start)
        progress.note_warnings(task.name, noted)


@contextmanager
def noting_warnings() -> Iterator[list[str]]:
    """Inside, every CpfdWarning is shown as before and its message also noted in the list yielded."""
    noted: list[str] = []
    shown = warnings.showwarning

    def show(message, category, *args, **kwargs):
        if issubclass(category, CpfdWarning):
            noted.append(" ".join(str(message).split()))
        shown(message, category, *args, **kwargs)

    warnings.showwarning = show
    try:
        yield noted
    finally:
        warnings.showwarning = shown


def warnings_in_log(log: Path) -> list[str]:
    """The `warning:` lines of a step log's latest attempt (after its last `# ... step` header)."""
    lines = log_tail(log, 100_000)
    starts = [i for i, line in enumerate(lines) if line.startswith("# ")]
    latest = lines[starts[-1] + 1:] if starts else lines
    return [line.removeprefix("warning: ") for line in latest if line.startswith("warning: ")]


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP while steps run: stop them as Ctrl-C would."""


class Lanes:
    """jobs N: up to N steps at once, each in a process of its own."""

    def __init__(self, tasks: list[Task], jobs: int, threads: int | None, logs: Path, progress: Progress):
        self.tasks, self.jobs, self.threads, self.logs, self.progress = tasks, jobs, threads, logs, progress
        self.waiting = list(tasks)
        self.running: dict[str, tuple[Task, StartedStep]] = {}
        self.finished: set[str] = set()
        self.estimate = estimates(tasks, progress.seconds())
        self.last_word = time.monotonic()

    def say(self, line: str) -> None:
        self.progress.say(line)
        self.last_word = time.monotonic()

    def log(self, task: Task) -> Path:
        return self.logs / f"{task.name}.log"

    def run(self) -> None:
        handlers = catch_stop_signals()
        try:
            while True:
                self.start_ready()
                if not self.running:
                    break
                time.sleep(0.2)
                for name, (task, started) in list(self.running.items()):
                    if started.poll() is not None:
                        self.ended(task, started)
                if time.monotonic() - self.last_word > HEARTBEAT_SECONDS:
                    self.say(f"[{self.progress.done}/{len(self.tasks)}] {self.status()}")
        except BaseException as e:
            if self.running:
                why = "a step failed" if isinstance(e, CpfdError) else "interrupted"
                self.progress.say(f"{why}: stopping {', '.join(self.running)}")
                for _, started in self.running.values():
                    started.stop()
                self.running.clear()
            raise
        finally:
            restore_signals(handlers)

    def start_ready(self) -> None:
        """Start the ready tasks in the given order while lanes are free; a task already finished, or
        with nothing to run, is passed at once (which may make others ready: hence the loop)."""
        moved = True
        while moved:
            moved = False
            for task in list(self.waiting):
                if not set(task.after) <= self.finished:
                    continue
                if task.finished():
                    self.waiting.remove(task)
                    self.finished.add(task.name)
                    self.progress.announce(task.label, reused=True)
                    moved = True
                    continue
                if len(self.running) >= self.jobs:
                    continue
                step = task.make()
                self.waiting.remove(task)
                moved = True
                if isinstance(step, str):
                    self.finished.add(task.name)
                    self.progress.announce(step, reused=True)
                    continue
                self.running[task.name] = (task, start_step(step, log=self.log(task), nproc=task.nproc,
                                                            threads=self.threads))
                self.say(f"started {task.label} (log: {self.log(task)})")
        if not self.running and self.waiting:  # cannot happen with the order run_tasks checked
            raise ValueError(f"tasks {[t.name for t in self.waiting]} wait for tasks that never ran")

    def ended(self, task: Task, started: StartedStep) -> None:
        del self.running[task.name]
        seconds = time.monotonic() - started.started
        if started.poll() != 0:
            started.close()
            why = started.failure()
            self.progress.say(f"step {task.name} failed after {duration(seconds)}; the last lines of its log "
                              f"({started.log}):")
            for line in log_tail(started.log, TAIL_LINES):
                self.progress.say(f"  {task.name} | {line}")
            raise CpfdError(f"step {task.name} failed: {why} (its log: {started.log}); run the same command "
                            "again to go on from the finished steps")
        started.close()
        self.finished.add(task.name)
        self.progress.record(task.name, seconds)
        self.progress.note_warnings(task.name, warnings_in_log(started.log))
        self.estimate = estimates(self.tasks, self.progress.seconds())
        self.progress.announce(f"{task.label}: done in {duration(seconds)}; {self.status()}")
        self.last_word = time.monotonic()

    def status(self) -> str:
        now = time.monotonic()
        running = [(task, now - started.started) for task, started in self.running.values()]
        parts = [("running " + ", ".join(f"{t.name} ({duration(s)})" for t, s in running)) if running else "none running",
                 f"{len(self.waiting)} waiting"]
        left = time_left(self.waiting, running, self.estimate, self.jobs)
        if left is not None and (running or self.waiting):
            parts.append(f"about {duration(left)} left")
        return "; ".join(parts)


def catch_stop_signals() -> dict:
    """SIGTERM and SIGHUP raise `Stopped` in this (main) thread while steps run, so that they are
    stopped before this process ends; the handlers there before, to put back."""
    def stop(signum, frame):
        raise Stopped(f"signal {signal.Signals(signum).name}")

    before = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            before[sig] = signal.signal(sig, stop)
        except ValueError:  # not the main thread: the caller handles its own signals
            pass
    return before


def restore_signals(before: dict) -> None:
    for sig, handler in before.items():
        signal.signal(sig, handler)
