"""experiment/schedule.py: the experiment's steps as a graph, one after another or up to N at once,
each in a process of its own; and `cpfd experiment --jobs`: the same results, progress, logs, a
clean stop and a resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from cpfd.experiment.launch import Step
from cpfd.experiment.schedule import Task, critical_path, run_tasks, time_left
from cpfd.storage.errors import CpfdError
from tests.factories import WEIGHTS_TOLERANCE, max_weight_difference
from tests.invoke import FAST, run
from tests.probe_steps import say_then_fail, write_pid_then_sleep

ROOT = Path(__file__).resolve().parents[2]


def task(name: str, after=(), kind="train", step=None, finished=False) -> Task:
    return Task(name, f"label {name}", kind, tuple(after), finished=lambda: finished,
                make=lambda: step if step is not None else f"{name}: nothing to run")


def test_critical_path_is_the_longest_chain_of_waiting_steps():
    tasks = [task("teacher"), task("baseline"), task("dump", ["teacher"]), task("pfd", ["dump"]),
             task("eval/baseline", ["baseline"])]
    seconds = {"teacher": 100, "baseline": 150, "dump": 10, "pfd": 90, "eval/baseline": 5}
    assert critical_path(tasks, seconds) == (200, ["teacher", "dump", "pfd"])
    assert critical_path(tasks, {**seconds, "baseline": 250}) == (255, ["baseline", "eval/baseline"])


def test_time_left_shares_the_work_over_the_lanes_and_waits_for_the_longest_running_step():
    waiting = [task("a"), task("b"), task("e", kind="evaluate")]
    estimate = {"train": 100.0, "evaluate": 10.0}
    assert time_left(waiting, [], estimate, jobs=1) == 210
    assert time_left(waiting, [(task("r"), 40.0)], estimate, jobs=2) == (210 + 60) / 2
    assert time_left([], [(task("r"), 10.0)], estimate, jobs=4) == 90  # the one running step
    assert time_left(waiting, [], {}, jobs=2) is None  # nothing timed yet: no guess


def test_a_task_listed_before_what_it_reads_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="comes after"):
        run_tasks([task("pfd", ["dump"]), task("dump")], jobs=2, threads=1, logs=tmp_path, timings=tmp_path / "t.json",
                  say=print)


def test_a_failed_step_stops_the_others_and_shows_its_last_lines(tmp_path):
    """Two lanes: a long step and one that fails. The failure is one CpfdError naming the step and its
    error line; its log's last lines are printed with its name; the long step's process is gone."""
    pid_file = tmp_path / "pid"
    tasks = [task("long", step=Step("long", write_pid_then_sleep, {"out": pid_file, "seconds": 120})),
             task("broken", step=Step("broken", say_then_fail, {"message": "broken was told to fail"}))]
    said = []
    start = time.monotonic()
    with pytest.raises(CpfdError) as info:
        run_tasks(tasks, jobs=2, threads=1, logs=tmp_path / "logs", timings=tmp_path / "timings.json", say=said.append)
    assert time.monotonic() - start < 60
    assert str(info.value).startswith("step broken failed: broken was told to fail (its log: ")
    assert "  broken | a line of the failing step's own output" in said
    assert "  broken | error: broken was told to fail" in said
    assert any(line.startswith("a step failed: stopping long") for line in said)
    pid = int(pid_file.read_text())
    assert not alive(pid), f"the long step (pid {pid}) outlived the failure"
    assert (tmp_path / "logs" / "broken.log").read_text().count("error: broken was told to fail") == 1


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


EXPERIMENT = ["--preset", "task4", "--train-samples", "96", "--eval-samples", "64", "--mappings", "exp-decay",
              "--no-matched-pfd", "--bootstrap", "100", *FAST]


def floats(value, path=""):
    """Every number of a report.json, by its path, without the timings (Table 4's latencies)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key != "table4":
                yield from floats(inner, f"{path}/{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from floats(inner, f"{path}[{i}]")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)


def test_jobs_1_and_jobs_2_train_the_same_models_and_report_the_same_numbers(tmp_path):
    """Steps are seeded per step, not by the order they ran in: one after another here, or two at a
    time in processes of their own, the weights agree within the training tolerance and every number
    of the report within 1e-4 (metrics of weights within 1e-5)."""
    one, two = tmp_path / "one", tmp_path / "two"
    first = run("experiment", "--out", one, *EXPERIMENT, "--jobs", "1")
    assert first.exit_code == 0, first.output
    second = run("experiment", "--out", two, *EXPERIMENT, "--jobs", "2")
    assert second.exit_code == 0, second.output
    models = ["teacher", "baseline", "pfd", "cpfd-exp-decay"]
    for name in models:
        assert max_weight_difference(one / "seed-0" / name, two / "seed-0" / name) <= WEIGHTS_TOLERANCE, name
    a, b = (dict(floats(json.loads((d / "report.json").read_text()))) for d in (one, two))
    a.pop("/options/jobs"), b.pop("/options/jobs")
    assert a.keys() == b.keys() and len(a) > 50
    assert {k: (a[k], b[k]) for k in a if abs(a[k] - b[k]) > 1e-4} == {}
    # what jobs 2 showed and kept: a log per step, progress with what runs and what is left
    assert {p.name for p in (two / "logs" / "seed-0").glob("*.log")} == {f"{m}.log" for m in [*models, "dump", "dump-eval"]}
    assert len(list((two / "logs" / "seed-0" / "eval").glob("*.log"))) == len(models)
    assert "started seed-0: train teacher (log: " in second.stderr
    assert "[10/10] seed-0: evaluate" in second.stderr and "waiting; about" in second.stderr
    assert not (one / "logs").exists()  # jobs 1: every step here, its output on the terminal
    # the warnings each step printed, caught here (jobs 1) or read from its log (jobs 2), reach the report
    noted = [json.loads((d / "warnings.json").read_text()) for d in (one, two)]
    assert noted[0] == noted[1] and "seed-0/pfd" in noted[0]
    assert all(line.startswith("training takes ") for lines in noted[0].values() for line in lines)
    report = (two / "report.md").read_text()
    assert "**Warnings the steps printed**" in report and "- `seed-0/pfd`: training takes " in report


def processes_marked(mark: str) -> list[int]:
    """Processes whose environment holds CPFD_TEST_MARK=mark: the experiment and every process it started."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and f"CPFD_TEST_MARK={mark}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                if alive(int(proc.name)):
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds processes through /proc")
def test_a_killed_experiment_leaves_no_process_and_the_same_command_finishes_it(tmp_path):
    mark = uuid.uuid4().hex
    command = [sys.executable, "-m", "cpfd.cli", "experiment", "--out", str(tmp_path / "exp"), *EXPERIMENT,
               "--jobs", "2"]
    env = {**os.environ, "CPFD_TEST_MARK": mark, "OMP_NUM_THREADS": "1"}
    experiment = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timings = tmp_path / "exp" / "timings.json"
    deadline = time.monotonic() + 240
    while not timings.exists() and time.monotonic() < deadline and experiment.poll() is None:
        time.sleep(0.2)  # until one step has finished and others run
    assert experiment.poll() is None and timings.exists(), experiment.communicate()
    running = processes_marked(mark)
    assert len(running) >= 2  # the experiment and at least one step
    experiment.send_signal(signal.SIGTERM)
    out, err = experiment.communicate(timeout=120)
    assert experiment.returncode != 0 and "interrupted: stopping seed-0/" in err, err
    deadline = time.monotonic() + 20
    while processes_marked(mark) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_marked(mark) == []
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "(reused)" in again.stderr and (tmp_path / "exp" / "report.md").exists()
