"""pipeline/metrics.py: the F1 at the validation threshold, against a hand-computed example."""

import numpy as np
import pytest

from cpfd.pipeline.metrics import classification_metrics


def test_f1_at_the_validation_threshold_uses_that_threshold_not_the_best_one():
    """The F1 a user gets with the threshold found on the validation split, not the optimistic best F1
    over thresholds chosen on these very labels."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.35, 0.6, 0.4, 0.7, 0.9])  # positive-class probabilities
    logits = np.log(np.stack([1 - p, p], axis=1))
    at_half = classification_metrics(labels, logits, threshold=0.5)
    assert at_half["val_threshold"] == 0.5
    assert at_half["f1_at_val_threshold"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # 2 TP, 1 FP, 1 FN
    assert at_half["best_f1"] == pytest.approx(6 / 7) and at_half["best_threshold"] == pytest.approx(0.4)
    assert classification_metrics(labels, logits, threshold=0.95)["f1_at_val_threshold"] == 0.0
