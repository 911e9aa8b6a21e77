"""`cpfd evaluate` and the predictions file: a model of either stage scored on a corpus split.

The model classes are handed in (`architectures`), so this module imports neither stage;
`student.predict` writes the same predictions file from raw videos.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpfd.pipeline.data import make_loader
from cpfd.pipeline.metrics import classification_metrics, softmax
from cpfd.pipeline.scoring import resolve_device, score_batches
from cpfd.pipeline.stages import check_model_fits_corpus, dataset_for, load_model
from cpfd.storage.atomic import atomic_file
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import read_training_record
from cpfd.storage.outputs import check_paths


def write_predictions(path: Path, sample_ids, labels, logits: np.ndarray) -> None:
    """The predictions file (docs/formats.md, "Predictions file"; labels may be None for the serve path)."""
    probs = softmax(logits.astype(np.float64))
    pred = probs.argmax(1)
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


def evaluate_model(model_dir, corpus_path, *, architectures: dict[str, type], split: str = "eval", out=None,
                   batch_size: int = 128, device: str = "auto", progress: bool = True) -> dict:
    """`cpfd evaluate`: metrics of a model on a corpus split, optionally its predictions file.

    `architectures` are the model classes the folder may hold (`teacher.models.ARCHITECTURES`: either stage's)."""
    check_paths({"--out": out}, {"MODEL": model_dir, "CORPUS": corpus_path})
    model, tokenizer = load_model(model_dir, architectures)
    corpus = Corpus(corpus_path)
    check_model_fits_corpus(model, Path(model_dir), corpus)
    if corpus.num_rows(split) == 0:
        raise CpfdError(f"{corpus_path}: the {split} split is empty")
    device = resolve_device(device)
    model.to(device)
    dataset = dataset_for(model, corpus, split, tokenizer, batch_size)
    labels, logits = score_batches(model, make_loader(dataset), device, progress=progress, desc=f"evaluate {split}",
                                   total=len(dataset))
    record = read_training_record(model_dir) or {}
    metrics = classification_metrics(labels, logits, threshold=record.get("threshold"))
    if out is not None:
        ids = corpus.read_column(split, "sample_id").to_pylist()  # dataset order is corpus order here
        write_predictions(out, ids, labels, logits)
    return {"model": str(model_dir), "architecture": model.config.architecture, "corpus": str(corpus_path),
            "split": split, **metrics}


def format_evaluation(metrics: dict, out=None) -> str:
    """What `cpfd evaluate` prints: the model, the split and one metric a line."""
    lines = [f"{metrics['architecture']} {metrics['model']} on {metrics['corpus']} ({metrics['split']}, {metrics['rows']} rows)"]
    lines += [f"  {key:<22}{metrics[key]:.4f}" for key in ("roc_auc", "pr_auc", "f1", "f1_at_val_threshold",
                                                            "val_threshold", "best_f1", "best_threshold", "accuracy")
              if metrics.get(key) is not None]
    if out is not None:
        lines.append(f"wrote {out}")
    return "\n".join(lines)
