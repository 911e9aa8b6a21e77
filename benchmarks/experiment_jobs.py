"""`cpfd experiment` one step at a time against N steps at once (`--jobs`), side by side in one run.

Runs the default experiment (what `make experiment` runs: no options but --out) once per --jobs
value, each in a fresh folder, in a process of its own, and prints for each its wall time, the
ratio to the first, and the steps' critical path: the longest chain of steps each waiting for the
one before (teacher -> dump -> a distillation -> its evaluation), timed by the first run's
`timings.json` (so by steps that ran alone, one after another). No number of cores takes the wall
time below the critical path, nor below the total work shared out over the cores.

    .venv/bin/python benchmarks/experiment_jobs.py                      # --jobs 1 and 2, the default experiment
    .venv/bin/python benchmarks/experiment_jobs.py --jobs 1,2,4 -- --train-samples 500   # a smaller one

Everything after `--` goes to every `cpfd experiment` call. Nothing else should run on the
machine meanwhile: this measures wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DEFAULT_WORKDIR, REPO, command_line, machine, table  # noqa: E402


def experiment_tasks(extra: list[str]):
    """The default experiment's task graph (names and what each waits for), as `cpfd experiment`
    with these extra options plans it; the options' values other than the step list do not matter."""
    from click.testing import CliRunner

    from cpfd.cli import cpfd
    from cpfd.experiment import run

    plans = []

    def plan_only(options, model_options, train_options, command=""):
        plans.append(run.Experiment(options, model_options, train_options, command).tasks())
        return None

    original = run.run_experiment
    run.run_experiment = plan_only
    try:
        CliRunner().invoke(cpfd, ["experiment", "--out", str(DEFAULT_WORKDIR / "plan-only"), *extra],
                           catch_exceptions=True)
    finally:
        run.run_experiment = original
    if not plans:
        raise SystemExit("could not plan the experiment with these options")
    return plans[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="1,2", help="comma-separated --jobs values, the first the reference")
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR / "experiment-jobs")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    jobs = [int(j) for j in args.jobs.split(",")]
    cpfd = Path(sys.executable).with_name("cpfd")

    walls = {}
    for n in jobs:
        out = args.workdir / f"jobs-{n}"
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        done = subprocess.run([str(cpfd), "experiment", "--out", str(out), "--jobs", str(n), "--quiet", *extra],
                              cwd=REPO, capture_output=True, text=True)
        walls[n] = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"--jobs {n} failed:\n{done.stderr[-3000:]}")
        print(f"--jobs {n}: {walls[n]:.0f} s", file=sys.stderr, flush=True)

    from cpfd.experiment.schedule import critical_path

    tasks = experiment_tasks(extra)
    seconds = json.loads((args.workdir / f"jobs-{jobs[0]}" / "timings.json").read_text())
    path_seconds, path = critical_path(tasks, seconds)
    work = sum(seconds.get(t.name, 0.0) for t in tasks)

    print(f"# cpfd experiment --jobs, {' '.join(extra) or 'the default experiment'}")
    print(f"machine: {machine(1)}")
    print(f"command: {command_line()}\n")
    rows = [[f"--jobs {n}", f"{walls[n]:.0f}", f"{walls[jobs[0]] / walls[n]:.2f}x"] for n in jobs]
    print(table(["run", "wall s", f"speed-up over --jobs {jobs[0]}"], rows))
    print(f"\nsteps ({len(tasks)}; timed one at a time, by the --jobs {jobs[0]} run): {work:.0f} s of work in all; "
          f"critical path {path_seconds:.0f} s ({path_seconds / work:.0%} of the work): {' -> '.join(path)}")
    for n in jobs[1:]:
        bound = max(path_seconds, work / n)
        print(f"--jobs {n}: no schedule beats max(critical path, work / {n}) = {bound:.0f} s of steps; "
              f"the run took {walls[n]:.0f} s ({walls[n] / bound:.2f}x that, with the corpus, process starts, "
              f"the report and {n} steps sharing the machine's memory bandwidth)")


if __name__ == "__main__":
    main()
