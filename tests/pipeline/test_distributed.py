"""pipeline/distributed.py: data-parallel training under torchrun (gloo, CPU, 2 processes), started
as users start it.

In-process tests check the data plan (every training row once per epoch over ranks x workers,
equal step counts) and the loss normalization; the torchrun tests check that 2 ranks reach the
weights of one process over the same global batches, that a killed rank ends the job with one
line and `--resume` continues it, and that the number of processes cannot change on resume.
(`experiment.launch`, which hands steps to torchrun jobs: tests/experiment/test_launch.py; the
commands refused under torchrun: tests/test_cli.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from cpfd.pipeline.data import CorpusBatches, Inputs, training_rows, weighted
from cpfd.pipeline.train import weighted_loss
from cpfd.storage.model_folder import read_metrics_log

from tests.factories import WEIGHTS_TOLERANCE, layout_corpus, max_weight_difference, run_dump, tiny_corpus
from tests.invoke import refused

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).with_name("torchrun")
# A tiny model with no dropout anywhere: 2 ranks and 1 process see the same global batches, so only
# the order of float32 sums differs (in the gradient all-reduce and the loss's sum).
MODEL = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--fusion-layers", "1", "--dropout", "0",
         "--device", "cpu", "--quiet"]
# 2 ranks vs 1 process after a few AdamW steps: float32 sums in another order move each gradient in
# its last bits, and AdamW divides by the root of the gradient's square, so a near-zero gradient's
# last bits can move its weight by a sizeable part of the learning rate (5e-4 per step). Measured:
# 1.5e-5 (train-student) and 7e-6 (distill) after 4 steps; another batch order moves them 3e-3.
DDP_TOLERANCE = 1e-4


def cpfd_under_torchrun(*args, nproc: int = 2, script: str | None = None, env: dict | None = None,
                        timeout: int = 240) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m cpfd.cli ARGS` (or a script), as a user types it."""
    target = [script] if script else ["-m", "cpfd.cli"]
    command = [str(TORCHRUN), "--standalone", "--nproc-per-node", str(nproc), *target, *map(str, args)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


def cpfd_alone(*args, timeout: int = 240) -> subprocess.CompletedProcess:
    """`cpfd ARGS` in one process, in a subprocess like the torchrun runs (the same threads)."""
    return subprocess.run([sys.executable, "-m", "cpfd.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=ROOT)


def succeeded(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def errors(stderr: str) -> list[str]:
    """cpfd's error lines on stderr (torchrun adds its warnings and failure report around them)."""
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ---- the data plan -------------------------------------------------------------------------------

@pytest.mark.parametrize("world, workers", [(1, 0), (2, 0), (2, 2), (3, 1), (4, 3)])
def test_every_training_row_is_read_once_per_epoch_over_ranks_and_workers(tmp_path, world, workers):
    """23 train rows in row groups of 3, 3, 1 per shard of 7 (8 row groups, uneven), the validation
    rows held out: each rank x worker share reads its row groups, together every training row once;
    each rank yields the batches `rank_batches` counts, and `steps` is the most any rank has."""
    corpus = layout_corpus(tmp_path / "c")
    data = CorpusBatches(corpus, "train", Inputs.for_corpus(corpus, privileged=False), batch_size=2, shuffle=True,
                         seed=3, select=(training_rows(0.3),))
    ids = corpus.read_column("train", "sample_id")
    keep = training_rows(0.3).mask(ids)
    expected = Counter(np.array(corpus.read_column("train", "features").to_pylist())[keep, 0].tolist())
    assert 0 < sum(expected.values()) < 23
    parts = world * max(workers, 1)
    for epoch in (0, 1):
        data.set_epoch(epoch)
        seen, per_rank = Counter(), [0] * world
        for part in range(parts):
            for batch in data.part_batches(part, parts):
                seen.update(batch["features"][:, 0].tolist())
                per_rank[part // max(workers, 1)] += 1
        assert seen == expected
        assert per_rank == data.rank_batches(epoch, world, workers)
        assert data.steps(epoch, world, workers) == max(per_rank)


def test_a_rank_out_of_rows_steps_on_with_weight_zero():
    batches = [{"labels": torch.tensor([0, 1])}, {"labels": torch.tensor([1])}]
    out = list(weighted(iter(batches), 4, fallback=lambda: {"labels": torch.tensor([7, 7, 7])}))
    assert [b["weight"].tolist() for b in out] == [[1, 1], [1], [0], [0]]
    assert out[3]["labels"].tolist() == [1]  # the last batch again, adding nothing
    out = list(weighted(iter([]), 2, fallback=lambda: {"labels": torch.tensor([7, 7, 7])}))
    assert [b["weight"].tolist() for b in out] == [[0, 0, 0]] * 2
    assert len(list(weighted(iter(batches), 1, fallback=None))) == 1


def test_the_loss_is_the_mean_over_the_real_rows_of_the_step():
    losses = torch.tensor([1.0, 3.0, 100.0, float("nan")])
    weight = torch.tensor([1.0, 1.0, 0.0, 0.0])  # padding rows weigh 0, whatever their loss
    assert weighted_loss(losses, weight, world=1).item() == pytest.approx(2.0)
    # each of 2 ranks contributes sum(w * l) * 2 / rows; DDP averages: the mean over both ranks' rows
    assert weighted_loss(torch.tensor([1.0, 3.0]), torch.ones(2), world=2).item() == pytest.approx(4.0)


# ---- torchrun ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def even(tmp_path_factory):
    """96 train rows with frames and text in row groups of 4: with global batch 8, the 2 ranks' batches
    (row groups dealt alternately) hold exactly the rows of one process's batch."""
    return tiny_corpus(tmp_path_factory.mktemp("ddp") / "corpus", n_train=96, n_eval=16, row_group_rows=4)


def test_two_ranks_reach_the_weights_of_one_process(even, tmp_path):
    """train-student and distill (exp-decay of the margin signal: a per-sample alpha) with --val-fraction 0 and no dropout:
    1 process and torchrun with 2 reach the same weights within DDP_TOLERANCE after 4 steps."""
    run_dump(tmp_path / "dump", even)
    same = ["--max-steps", "4", "--batch-size", "8", "--val-fraction", "0", "--log-every", "2", *MODEL]
    for command in (["train-student", even.path],
                    ["distill", even.path, tmp_path / "dump", "--mapping", "exp-decay", "--confidence", "margin"]):
        name = command[0]
        succeeded(cpfd_alone(*command, "--out", tmp_path / f"{name}-1", *same))
        done = succeeded(cpfd_under_torchrun(*command, "--out", tmp_path / f"{name}-2", *same))
        assert done.stdout.count("wrote ") == 1  # rank 0 alone speaks
        assert max_weight_difference(tmp_path / f"{name}-1", tmp_path / f"{name}-2") <= DDP_TOLERANCE
        # metrics.jsonl: one writer, the values over both ranks' rows, as one process saw them
        one, two = (read_metrics_log(tmp_path / f"{name}-{n}" / "metrics.jsonl") for n in (1, 2))
        assert [line["step"] for line in two] == [2, 4] and [line["rows"] for line in two] == [16, 16]
        for a, b in zip(one, two):
            for key in ("loss", "ce", "kd", "alpha_mean", "alpha_p50", "grad_norm", "teacher_loss"):
                assert (key in a) == (key in b) and a.get(key, 0) == pytest.approx(b.get(key, 0), rel=1e-3, abs=2e-3), key
        record = json.loads((tmp_path / f"{name}-2" / "training.json").read_text())
        assert record["processes"] == 2 and record["schedule"]["steps"] == 4 and record["finished"]
        assert not list(tmp_path.glob(f".{name}-2*"))  # no lock or staging left behind


def test_a_killed_rank_ends_the_job_and_resume_continues_it(tmp_path):
    """Uneven shares (90 rows in row groups of 4, a validation split), a checkpoint every 3 steps:
    rank 1 killed at step 8 ends the job (no hang) with one line from rank 0; the same command with
    --resume under torchrun ends with the weights of an uninterrupted 2-process run; a resume in
    one process is refused, naming both numbers."""
    corpus = tiny_corpus(tmp_path / "corpus", n_train=90, n_eval=8, row_group_rows=4)
    args = ["--epochs", "2", "--batch-size", "8", "--checkpoint-every", "3", "--log-every", "2", *MODEL]
    succeeded(cpfd_under_torchrun("train-student", corpus.path, "--out", tmp_path / "full", *args))

    cut = tmp_path / "cut"
    done = cpfd_under_torchrun("train-student", corpus.path, "--out", cut, *args, script="tests/ddp_kill.py",
                               env={"CPFD_TEST_KILL": "1:8"})
    assert done.returncode != 0
    lines = errors(done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: rank 0 of 2: ") and "--resume" in lines[0], done.stderr
    assert (cut / "checkpoint.safetensors").exists() and not (cut / "model.safetensors").exists()

    refused("train-student", corpus.path, "--out", cut, *args, "--resume",
            message="trained on 2 process(es), this one on 1")
    succeeded(cpfd_under_torchrun("train-student", corpus.path, "--out", cut, *args, "--resume"))
    assert max_weight_difference(tmp_path / "full", cut) <= WEIGHTS_TOLERANCE
    a, b = (json.loads((d / "training.json").read_text()) for d in (tmp_path / "full", cut))
    assert [e["train_loss"] for e in a["epochs"]] == pytest.approx([e["train_loss"] for e in b["epochs"]])
    assert a["best_epoch"] == b["best_epoch"]
    full, resumed = (read_metrics_log(d / "metrics.jsonl") for d in (tmp_path / "full", cut))
    assert [(x["kind"], x["step"]) for x in resumed] == [(x["kind"], x["step"]) for x in full]  # none twice
    assert [x.get("loss", 0.0) for x in resumed] == pytest.approx([x.get("loss", 0.0) for x in full], rel=1e-4)


def test_a_bad_option_is_said_once_by_rank_zero(tmp_path):
    corpus = layout_corpus(tmp_path / "c")
    done = cpfd_under_torchrun("train-student", corpus.path, "--out", tmp_path / "s", "--batch-size", "7", *MODEL)
    assert done.returncode != 0
    line = ("error: rank 0 of 2: --batch-size 7 is the global batch and must divide evenly among the 2 processes "
            "of this torchrun job")
    assert errors(done.stderr) == [line]
    # torchrun's failure report names cpfd's line as the root cause (the error file), not a pointer to its docs
    report = done.stderr.split("Root Cause (first observed failure):")[1]
    assert f"traceback : {line}" in report and "To enable traceback" not in done.stderr
    assert not (tmp_path / "s").exists()
