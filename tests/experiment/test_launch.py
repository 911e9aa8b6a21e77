"""experiment/launch.py: a step of `cpfd experiment` runs as the same library call in this process or in
each process of a torchrun job (`--nproc-per-node`)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import tiny_corpus
from tests.invoke import ok

ROOT = Path(__file__).resolve().parents[2]


def cpfd_alone(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`cpfd ARGS` in one process, in a subprocess (one intra-op thread, like the torchrun jobs it starts)."""
    return subprocess.run([sys.executable, "-m", "cpfd.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)


def test_a_step_runs_as_one_call_in_each_process_of_a_torchrun_job(tmp_path):
    """experiment.launch: the same library call in 2 processes of a real torchrun job, each inside the
    process group; a failing call is one CpfdError here, naming the rank that failed first and its line."""
    from cpfd.experiment.launch import Step, run_step
    from cpfd.storage.errors import CpfdError
    from tests.probe_steps import fail_on_rank, record_rank

    assert run_step(Step("here", record_rank, {"out": tmp_path / "here"})) == (0, 1)  # in this process
    run_step(Step("probe", record_rank, {"out": tmp_path / "job"}, device="cpu"), nproc=2, threads=1)
    seen = [json.loads(p.read_text()) for p in sorted((tmp_path / "job").glob("rank-*.json"))]
    assert seen == [{"rank": 0, "world": 2, "threads": 1}, {"rank": 1, "world": 2, "threads": 1}]
    with pytest.raises(CpfdError) as info:  # the root cause, in one line: the failing rank's own
        run_step(Step("broken", fail_on_rank, {"rank": 1}, device="cpu"), nproc=2)
    assert str(info.value) == "step broken: its torchrun job (2 processes) failed: rank 1 of 2: rank 1 was told to fail"


def test_experiment_hands_each_training_and_dump_to_a_torchrun_job(tmp_path, monkeypatch):
    """--nproc-per-node 2: each training and dump goes to run_step as a torchrun job of 2 processes; here
    the job's processes are stood in for by `launch.main` on the step file in this process, so the
    experiment's result shows that the steps travel whole (pickled) and run."""
    from cpfd.experiment import launch

    jobs = []

    def one_process_for_the_job(command, env):
        assert command[1:5] == ["-m", "cpfd.experiment.launch", "job", "2"] and env["OMP_NUM_THREADS"] == "1"
        jobs.append(pickle.loads(Path(command[5]).read_bytes()))
        return launch.main([command[5]])

    monkeypatch.setattr(launch, "launch_job", one_process_for_the_job)
    corpus = tiny_corpus(tmp_path / "c", n_train=64, n_eval=32)
    ok("experiment", "--out", tmp_path / "exp", "--corpus", corpus.path, "--mappings", "exp-decay", "--no-matched-pfd",
       "--nproc-per-node", "2", "--epochs", "1", "--batch-size", "16", "--hidden-size", "32", "--num-layers", "1",
       "--quiet", "--bootstrap", "100", "--jobs", "1")
    assert [(j.name, j.function.__name__) for j in jobs] == [
        ("seed-0/teacher", "train_teacher"), ("seed-0/baseline", "train_student"), ("seed-0/dump", "dump_teacher"),
        ("seed-0/dump-eval", "dump_teacher"), ("seed-0/pfd", "distill"), ("seed-0/cpfd-exp-decay", "distill")]
    assert jobs[4].kwargs["params"] == {"alpha": 0.5} and jobs[5].kwargs["mapping"] == "exp-decay"
    assert all(j.kwargs["train_options"].batch_size == 16 for j in jobs if "train_options" in j.kwargs)
    assert (tmp_path / "exp" / "report.md").exists()


@pytest.mark.slow  # four torchrun jobs of 2 processes and an experiment: about 90 s on 2 cores
def test_experiment_with_two_processes_per_training(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=64, n_eval=32)
    done = cpfd_alone("experiment", "--out", tmp_path / "exp", "--corpus", corpus.path, "--mappings", "exp-decay",
                      "--no-matched-pfd", "--nproc-per-node", "2", "--epochs", "1", "--batch-size", "16",
                      "--hidden-size", "32", "--num-layers", "1", "--quiet", "--bootstrap", "100", timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    for name in ("teacher", "baseline", "pfd", "cpfd-exp-decay"):
        record = json.loads((tmp_path / "exp" / "seed-0" / name / "training.json").read_text())
        assert record["processes"] == 2 and record["finished"]
