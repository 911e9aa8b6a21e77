"""`cpfd evaluate`: a model of either stage scored on a corpus split, and its predictions file
(`storage.predictions`, which `cpfd predict` writes too, from raw videos).

The model classes are handed in (`architectures`), so this module imports neither stage.
"""

from __future__ import annotations

from pathlib import Path

from cpfd.pipeline.data import make_loader
from cpfd.pipeline.metrics import classification_metrics
from cpfd.pipeline.scoring import resolve_device, score_batches
from cpfd.pipeline.stages import check_model_fits_corpus, dataset_for, load_model
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import CONFIG, read_model_config, read_training_record
from cpfd.storage.outputs import check_file_output
from cpfd.storage.predictions import write_predictions


def evaluate_model(model_dir, corpus_path, *, architectures: dict[str, type], split: str = "eval", out=None,
                   overwrite: bool = False, batch_size: int = 128, device: str = "auto", progress: bool = True) -> dict:
    """`cpfd evaluate`: metrics of a model on a corpus split, optionally its predictions file (`out`,
    which replaces a file there only with `overwrite`).

    `architectures` are the model classes the folder may hold (`teacher.models.ARCHITECTURES`: either stage's)."""
    # the pretrained folders the model was built from are inputs too (a folder without a model: load_model says so)
    config = read_model_config(Path(model_dir)) if (Path(model_dir) / CONFIG).is_file() else {}
    backbones = [config[k] for k in ("vision_model_path", "text_model_path") if config.get(k)]
    check_file_output("--out", out, overwrite=overwrite, inputs={"MODEL": model_dir, "CORPUS": corpus_path},
                      referenced={"a backbone folder the model was built from": backbones})
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
