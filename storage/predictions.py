"""The predictions file (docs/formats.md, "Predictions file") and the decision it records.

`cpfd evaluate --out` and `cpfd predict --out` (both paths: the PyTorch model folder and the
exported serving folder) write it; `cpfd predict` without `--out` prints the same decisions as JSON
lines. numpy and pyarrow only: the serving path imports this without torch.

A binary model decides at a threshold on the positive class's probability (class 1: the second of
the corpus's classes, `cpfd import --positive-class` names it), the one its validation split chose
(training.json's `threshold`) unless the user gives another; otherwise, and for more classes, the
class of highest probability.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpfd.storage.atomic import atomic_file


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of (N, C) logits, stable (the max subtracted first)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def decide(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """(N,) int predicted class: with a threshold (binary only), class 1 where its probability is at
    least the threshold; else the argmax."""
    if threshold is not None and probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).astype(np.int64)
    return probs.argmax(1).astype(np.int64)


def write_predictions(path: Path, sample_ids, labels, logits: np.ndarray, threshold: float | None = None) -> None:
    """`sample_id, [label,] logits, prob, pred`: prob is the positive class's probability (binary) or
    the predicted class's; pred the decision (`decide`). Labels may be None (the serve path)."""
    probs = softmax(logits.astype(np.float64))
    pred = decide(probs, threshold)
    prob = probs[:, 1] if logits.shape[1] == 2 else probs[np.arange(len(pred)), pred]
    num_classes = logits.shape[1]
    columns = {"sample_id": pa.array(sample_ids, pa.string())}
    if labels is not None:
        columns["label"] = pa.array(labels, pa.int32())
    columns["logits"] = pa.FixedSizeListArray.from_arrays(pa.array(logits.astype(np.float32).ravel()), num_classes)
    columns["prob"] = pa.array(prob.astype(np.float32))
    columns["pred"] = pa.array(pred.astype(np.int32))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(pa.table(columns), tmp)


def prediction_lines(sample_ids: Sequence[str], logits: np.ndarray, classes: Sequence[str],
                     threshold: float | None = None) -> Iterator[str]:
    """`cpfd predict`'s JSON lines: id, the predicted class (`decide`) and the class probabilities (6 decimals)."""
    probs = softmax(logits.astype(np.float64))
    for sample_id, p, k in zip(sample_ids, probs, decide(probs, threshold)):
        yield json.dumps({"id": sample_id, "pred": classes[int(k)],
                          "probs": {c: round(float(v), 6) for c, v in zip(classes, p)}})


def threshold_line(classes: Sequence[str], threshold: float | None, given: bool) -> str | None:
    """The line `cpfd predict` says on stderr: which class is positive and at which probability
    (None for more than two classes: they take the argmax)."""
    if len(classes) != 2:
        return None
    if threshold is None:
        return (f"the positive class {classes[1]!r} is predicted at probability >= 0.5 "
                "(the model records no validation threshold; --threshold sets one)")
    source = "--threshold" if given else "the model's validation threshold; --threshold overrides it"
    return f"the positive class {classes[1]!r} is predicted at probability >= {threshold:.6g} ({source})"
