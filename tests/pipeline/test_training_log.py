"""pipeline/training_log.py: OUT/metrics.jsonl every --log-every steps and after each epoch, the
TensorBoard events of --tensorboard, and the pure functions behind the lines. (Under torchrun, and
after a resume: tests/pipeline/test_distributed.py and test_a_resumed_run_logs_each_step_once.)"""

import json

import pytest
import torch
from hypothesis import given, settings, strategies as st

from cpfd.pipeline.training_log import ALPHA_BINS, TAGS, add_window, histogram_quantile, tensorboard_tag, train_line
from cpfd.storage.model_folder import read_metrics_log
from tests.invoke import FAST, MODEL, ok, refused, run

TOLERANCE = 1e-6  # float64 sums of float32 per-row values, divided again


@given(st.lists(st.floats(0, 1), min_size=1, max_size=300), st.sampled_from([0.1, 0.5, 0.9]))
@settings(max_examples=60, deadline=None)
def test_a_histogram_quantile_is_within_a_bin_of_the_exact_one(values, q):
    counts = [0.0] * ALPHA_BINS
    for v in values:
        counts[min(int(v * ALPHA_BINS), ALPHA_BINS - 1)] += 1
    exact = float(torch.tensor(values, dtype=torch.float64).quantile(q, interpolation="lower"))
    higher = float(torch.tensor(values, dtype=torch.float64).quantile(q, interpolation="higher"))
    assert exact - 1 / ALPHA_BINS <= histogram_quantile(counts, q) <= higher + 1 / ALPHA_BINS


def test_a_train_line_is_the_means_over_the_rows_and_steps_of_its_window():
    window = add_window({"rows": 10.0, "steps": 1, "loss": 5.0, "ce": 6.0, "kd": 4.0, "kd_weighted": 2.0,
                         "alpha": 5.0, "teacher_loss": 3.0, "grad_norm": 2.0, "alpha_hist": [4.0, 6.0]},
                        {"rows": 10.0, "steps": 1, "loss": 7.0, "ce": 8.0, "kd": 6.0, "kd_weighted": 3.0,
                         "alpha": 5.0, "teacher_loss": 5.0, "grad_norm": 4.0, "alpha_hist": [6.0, 4.0]})
    line = train_line(window, step=40, epoch=2, lr=1e-3, seconds=4.0)
    assert line == {"kind": "train", "step": 40, "epoch": 2, "lr": 1e-3, "loss": 0.6, "ce": 0.7, "kd": 0.5,
                    "kd_weighted": 0.25, "alpha_mean": 0.5, "alpha_p10": 0.25, "alpha_p50": 0.25, "alpha_p90": 0.75,
                    "alpha_below_half": 0.5, "teacher_loss": 0.4, "grad_norm": 3.0, "samples_per_s": 5.0,
                    "steps": 2, "rows": 20}
    plain = train_line({"rows": 4.0, "steps": 2, "loss": 2.0, "grad_norm": 1.0}, step=2, epoch=1, lr=0.1, seconds=1.0)
    assert plain["ce"] == plain["loss"] == 0.5 and "alpha_mean" not in plain and "kd" not in plain


def test_tensorboard_tags_read_without_a_legend():
    assert tensorboard_tag("train", "ce") == "loss/ce" and tensorboard_tag("train", "kd") == "loss/kd"
    assert tensorboard_tag("train", "alpha_mean") == "alpha/mean" and tensorboard_tag("val", "roc_auc") == "val/roc_auc"
    assert len(set(TAGS.values())) == len(TAGS)


def lines_of(folder, kind):
    return [line for line in read_metrics_log(folder / "metrics.jsonl") if line["kind"] == kind]


def test_distill_logs_the_loss_its_parts_and_alpha_every_n_steps_and_validation_per_epoch(corpus, dump, tmp_path):
    """100 train rows, batches of 16: 6 steps an epoch, 2 epochs. Lines at steps 4, 8 and 12 (the last),
    whose rows add up to the training rows of both epochs; their loss is PFD's (1 - a) CE + a KD with
    a = 0.5, their row-weighted mean the epochs' train_loss of training.json; one validation line per epoch."""
    out = tmp_path / "pfd"
    ok("distill", corpus.path, dump, "--out", out, "--mapping", "constant", "--alpha", "0.5", "--epochs", "2",
       "--log-every", "4", *MODEL)
    train, val = lines_of(out, "train"), lines_of(out, "val")
    record = json.loads((out / "training.json").read_text())
    assert [line["step"] for line in train] == [4, 8, 12]
    assert sum(line["rows"] for line in train) == 2 * record["training_rows"]
    assert sum(line["steps"] for line in train) == 12
    for line in train:
        assert line["loss"] == pytest.approx(0.5 * line["ce"] + line["kd_weighted"], abs=TOLERANCE)
        assert line["kd_weighted"] == pytest.approx(0.5 * line["kd"], abs=TOLERANCE)
        assert line["alpha_mean"] == pytest.approx(0.5) and line["alpha_below_half"] == 0
        assert line["alpha_p10"] == line["alpha_p90"] == pytest.approx(0.5, abs=1 / ALPHA_BINS)
        assert line["teacher_loss"] > 0 and line["grad_norm"] > 0 and line["samples_per_s"] > 0 and line["lr"] > 0
    mean_loss = sum(line["loss"] * line["rows"] for line in train) / sum(line["rows"] for line in train)
    epochs = record["epochs"]
    assert mean_loss == pytest.approx(sum(e["train_loss"] for e in epochs) / 2, rel=1e-3)  # equal-size epochs
    assert [(line["epoch"], line["step"]) for line in val] == [(1, 6), (2, 12)]
    assert [line["roc_auc"] for line in val] == [e["val_roc_auc"] for e in epochs]
    assert all(line["log_loss"] > 0 for line in val)
    shown = ok("info", out).stdout  # where the logs are, and what they say
    assert f"logs: {out / 'metrics.jsonl'}" in shown and "12 steps in 3 train line(s), 2 validation line(s)" in shown
    best = max(line["roc_auc"] for line in val)
    assert f"validation: roc_auc best {best:.4f}" in shown and "last train line (step 12): loss " in shown


def test_a_mapping_spreads_alpha_and_the_line_says_how(corpus, dump, tmp_path):
    out = tmp_path / "cpfd"
    ok("distill", corpus.path, dump, "--out", out, "--mapping", "exp-decay", "--log-every", "3", *FAST)
    for line in lines_of(out, "train"):
        assert 0.1 - 1e-3 <= line["alpha_p10"] <= line["alpha_p50"] <= line["alpha_p90"] <= 0.9 + 1e-3
        assert line["alpha_p10"] < line["alpha_p90"]  # calibrated to the dump's loss quantiles: spread
        assert 0 <= line["alpha_below_half"] <= 1


def test_every_training_command_logs_and_log_every_0_writes_nothing(corpus, tmp_path):
    ok("train-teacher", corpus.path, "--out", tmp_path / "t", *FAST, "--log-every", "2")
    train = lines_of(tmp_path / "t", "train")
    assert [line["step"] for line in train] == [2, 4, 6] and all(line["ce"] == line["loss"] for line in train)
    assert "alpha_mean" not in train[0] and len(lines_of(tmp_path / "t", "val")) == 1
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--log-every", "0")
    assert not (tmp_path / "s" / "metrics.jsonl").exists()
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--overwrite")  # a new run: its own lines only
    assert [line["step"] for line in lines_of(tmp_path / "s", "train")] == [6]


def test_a_resumed_run_logs_each_step_once(corpus, tmp_path, monkeypatch):
    args = ["--epochs", "2", "--batch-size", "16", "--hidden-size", "32", "--quiet", "--seed", "5", "--log-every", "2",
            "--checkpoint-every", "3"]
    ok("train-student", corpus.path, "--out", tmp_path / "full", *args)
    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crash_on_step_9(self, *a, **k):  # after the line of step 8, past the checkpoint of step 6
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_step_9)
    assert run("train-student", corpus.path, "--out", tmp_path / "cut", *args).exit_code != 0
    assert [line["step"] for line in lines_of(tmp_path / "cut", "train")][-1] == 8
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    ok("train-student", corpus.path, "--out", tmp_path / "cut", *args, "--resume")
    full, cut = (read_metrics_log(tmp_path / d / "metrics.jsonl") for d in ("full", "cut"))
    assert [(line["kind"], line["step"]) for line in cut] == [(line["kind"], line["step"]) for line in full]
    for a, b in zip(full, cut):
        assert a.get("loss", 0) == pytest.approx(b.get("loss", 0), rel=1e-4) and a.get("rows") == b.get("rows")


def test_tensorboard_events_hold_the_same_scalars_under_readable_tags(corpus, dump, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    ok("distill", corpus.path, dump, "--out", out, "--mapping", "exp-decay", "--log-every", "2", "--tensorboard", *FAST)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/total", "loss/ce", "loss/kd", "loss/kd_weighted", "alpha/mean", "alpha/p90", "optim/lr",
            "val/roc_auc", "val/log_loss"} <= tags
    train = lines_of(out, "train")
    assert [(e.step, e.value) for e in events.Scalars("loss/ce")] == [
        (line["step"], pytest.approx(line["ce"], rel=1e-6)) for line in train]


def test_tensorboard_without_the_package_says_what_to_install(corpus, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    refused("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--tensorboard",
            message="--tensorboard needs the tensorboard package: pip install 'cpfd[tensorboard]'")
    assert not (tmp_path / "s").exists()
