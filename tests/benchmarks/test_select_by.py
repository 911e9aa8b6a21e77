"""benchmarks/select_by.py: each --select-by criterion's kept epoch, replayed from recorded validation
metrics with the training loop's own rule. Hand-made epochs, so every answer is known."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def select_by():
    sys.path.insert(0, str(BENCHMARKS))  # it imports benchmarks/common.py
    try:
        spec = importlib.util.spec_from_file_location("select_by_under_test", BENCHMARKS / "select_by.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


def epoch(roc_auc, pr_auc, log_loss, eval_roc_auc=0.5):
    return {"val_roc_auc": roc_auc, "val_pr_auc": pr_auc, "val_log_loss": log_loss,
            "eval_roc_auc": eval_roc_auc, "eval_pr_auc": 0.1, "eval_log_loss": 0.5}


# ROC AUC saturates at 1.0 from epoch 2 (0-based 1) on; the log loss is lowest at epoch 3 (index 2),
# the PR AUC highest at epoch 4 (index 3), and the last epoch is the most memorised.
EPOCHS = [epoch(0.9, 0.5, 0.40), epoch(1.0, 0.6, 0.30), epoch(1.0, 0.7, 0.20), epoch(1.0, 0.9, 0.35),
          epoch(1.0, 0.8, 0.60)]


@pytest.mark.parametrize("criterion, kept", [
    ("roc_auc", 2),          # the tie at 1.0 goes to the lowest validation log loss
    ("roc_auc, later", 4),   # the rule before the tie-break: the last of the tied epochs
    ("pr_auc", 3),
    ("log_loss", 2),
])
def test_each_criterion_keeps_the_epoch_the_training_loop_would(select_by, criterion, kept):
    assert select_by.kept_epoch(EPOCHS, criterion) == kept


def test_an_exact_tie_of_both_goes_to_the_later_epoch_and_nan_never_wins(select_by):
    epochs = [epoch(0.8, 0.5, 0.3), epoch(0.8, 0.5, 0.3), epoch(float("nan"), 0.5, 0.1)]
    assert select_by.kept_epoch(epochs, "roc_auc") == 1
    assert select_by.kept_epoch(epochs[2:], "roc_auc") == 0  # the first epoch is kept even if NaN


def test_the_summary_pairs_each_criterion_with_roc_auc_over_seeds(select_by):
    runs = {0: EPOCHS, 1: [dict(e, eval_roc_auc=0.6 + i / 100) for i, e in enumerate(EPOCHS)]}
    runs[0] = [dict(e, eval_roc_auc=0.5 + i / 100) for i, e in enumerate(EPOCHS)]
    text = "\n".join(select_by.summarize("task1", runs))
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if line.startswith("| ")}
    # roc_auc keeps index 2 (eval 0.52, 0.62), pr_auc index 3 (0.53, 0.63): +0.01 on both seeds
    assert lines["roc_auc"].split(" | ")[2] == "0.5700"
    assert lines["pr_auc"].split(" | ")[5].startswith("+0.0100")
    assert lines["roc_auc, later"].split(" | ")[1] == "5, 5"
    assert "epochs tied at the best validation ROC AUC, per seed: 4, 4" in text


def test_ties_are_counted_among_defined_values_and_a_one_class_split_is_named(select_by):
    nan = float("nan")
    assert select_by.tied_at_best([epoch(0.8, 0.5, 0.3), epoch(0.9, 0.5, 0.3)]) == 1
    assert select_by.tied_at_best([epoch(nan, 0.5, 0.3), epoch(0.9, 0.5, 0.3), epoch(0.9, 0.5, 0.2)]) == 2
    assert select_by.tied_at_best([epoch(nan, nan, 0.3), epoch(nan, nan, 0.2)]) == "undefined"
