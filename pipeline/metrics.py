"""Evaluation metrics, computed with scikit-learn the way the paper reports them.

Binary tasks: ROC AUC and PR AUC (average precision) of the positive-class probability, F1 of the
positive class at probability 0.5, and the best F1 over thresholds (with that threshold).
More classes: macro averages (one-vs-rest ROC AUC and average precision, macro F1 of the argmax).
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, precision_recall_curve, roc_auc_score

from cpfd.storage.predictions import softmax


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The highest positive-class F1 over all thresholds, and the threshold that reaches it."""
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(precision), where=(precision + recall) > 0)
    i = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(f1[i]), float(thresholds[i]) if len(thresholds) else 0.5


def log_loss(labels: np.ndarray, logits: np.ndarray) -> float:
    """The mean cross-entropy (natural log) of the labels under the logits' softmax; nan on no rows."""
    labels, logits = np.asarray(labels, dtype=np.int64), np.asarray(logits, dtype=np.float64)
    if not len(labels):
        return float("nan")
    top = logits.max(axis=1, keepdims=True)
    log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_norm - logits[np.arange(len(labels)), labels]))


def classification_metrics(labels: np.ndarray, logits: np.ndarray, threshold: float | None = None) -> dict:
    """Metrics of a classifier from its logits (N, C) and integer labels (N,).

    Binary tasks with a `threshold` (the one that was best on the validation split) add
    `f1_at_val_threshold`: the F1 a user gets who sets the threshold without seeing these labels.
    `best_f1` and `best_threshold` are chosen on these very labels: optimistic, for reference."""
    labels = np.asarray(labels, dtype=np.int64)
    probs = softmax(np.asarray(logits, dtype=np.float64))
    num_classes = probs.shape[1]
    present = np.unique(labels)
    out = {"rows": int(len(labels)), "accuracy": float((probs.argmax(1) == labels).mean()) if len(labels) else float("nan"),
           "log_loss": log_loss(labels, logits)}
    if num_classes == 2:
        scores = probs[:, 1]
        if len(present) < 2:  # AUCs are undefined on one class; say so rather than crash
            out.update(roc_auc=float("nan"), pr_auc=float("nan"), best_f1=float("nan"), best_threshold=float("nan"))
        else:
            f1_best, threshold_best = best_f1(labels, scores)
            out.update(
                roc_auc=float(roc_auc_score(labels, scores)),
                pr_auc=float(average_precision_score(labels, scores)),
                best_f1=f1_best,
                best_threshold=threshold_best,
            )
        out["f1"] = float(f1_score(labels, (scores >= 0.5).astype(int), pos_label=1, zero_division=0))
        if threshold is not None and threshold == threshold:
            out["val_threshold"] = float(threshold)
            out["f1_at_val_threshold"] = float(f1_score(labels, (scores >= threshold).astype(int), pos_label=1,
                                                        zero_division=0))
        out["positive_rate"] = float((labels == 1).mean()) if len(labels) else float("nan")
    else:
        onehot = np.eye(num_classes)[labels]
        has_both = [c for c in range(num_classes) if 0 < onehot[:, c].sum() < len(labels)]
        out.update(
            roc_auc=float(roc_auc_score(onehot[:, has_both], probs[:, has_both], average="macro")) if has_both else float("nan"),
            pr_auc=float(average_precision_score(onehot[:, has_both], probs[:, has_both], average="macro")) if has_both else float("nan"),
            f1=float(f1_score(labels, probs.argmax(1), average="macro", labels=list(range(num_classes)), zero_division=0)),
        )
    return out
