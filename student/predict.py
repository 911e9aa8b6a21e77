"""`cpfd predict`: the serve path. A student scores raw videos from a manifest, on frames, text and
non-privileged features alone; a teacher is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from cpfd.pipeline.data import Inputs, collate
from cpfd.pipeline.evaluate import write_predictions
from cpfd.pipeline.metrics import softmax
from cpfd.pipeline.scoring import resolve_device, score_batches
from cpfd.pipeline.stages import input_problem, load_model
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import read_model_config
from cpfd.storage.outputs import check_paths
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification


def load_student(model_dir: Path):
    """(X-VLM, tokenizer or None) from a student's model folder; a teacher's is refused in one line."""
    architecture = read_model_config(Path(model_dir)).get("architecture")
    if architecture == "DF-X-VLM":
        raise CpfdError(f"{model_dir}: is a teacher (DF-X-VLM), which needs privileged features; "
                        "serve a student (X-VLM) instead")
    return load_model(model_dir, {XVLMConfig.architecture: XVLMForClassification})


def prediction_lines(result: dict):
    """`cpfd predict`'s JSON lines: id, predicted class and class probabilities (6 decimals)."""
    probs = softmax(result["logits"].astype(np.float64))
    for sample_id, p in zip(result["sample_id"], probs):
        yield json.dumps({"id": sample_id, "pred": result["classes"][int(p.argmax())],
                          "probs": {c: round(float(v), 6) for c, v in zip(result["classes"], p)}})


def predict_manifest(model_dir, manifest, *, out=None, batch_size: int = 64, device: str = "auto",
                     progress: bool = True) -> dict:
    """`cpfd predict`: score raw videos from a manifest with a student: the serve path.

    Reads frames, title, OCR text and non-privileged features only; a teacher is refused,
    because at serving time the privileged features do not exist yet.
    Returns {"sample_id": [...], "logits": (N, C), "classes": [...]} and writes the
    predictions file (without labels) when `out` is given.
    """
    from cpfd.storage.manifest import iter_manifest, to_row
    from cpfd.storage.schema import CORPUS_SCHEMA

    check_paths({"--out": out}, {"MODEL": model_dir, "MANIFEST": manifest})
    model, tokenizer = load_student(model_dir)
    config = model.config
    device = resolve_device(device)
    model.to(device)
    inputs = Inputs(frames=config.frames_per_video > 0, text=bool(config.has_text),
                    features=bool(config.feature_names), privileged=False)
    widths = {"features": len(config.feature_names), "privileged": 0}
    ids: list[str] = []

    def batches():
        rows = []
        for record in iter_manifest(manifest, require_label=False):
            problem = input_problem(config, frames=bool(record["frames"] or record.get("video")), text="text" in record["kinds"],
                                    features=set(record["features"] or ()) if "features" in record["kinds"] else None)
            if problem:
                raise CpfdError(f"{manifest}:{record['line']}: {problem}")
            rows.append(to_row(record, manifest, label=-1, frames_per_video=config.frames_per_video,
                               image_size=config.image_size, privileged_features=[], features=config.feature_names))
            ids.append(record["id"])
            if len(rows) == batch_size:
                yield collate(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), inputs, tokenizer, config.max_length, widths)
                rows = []
        if rows:
            yield collate(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), inputs, tokenizer, config.max_length, widths)

    _, logits = score_batches(model, batches(), device, progress=progress, desc="predict")
    if not ids:
        raise CpfdError(f"{manifest}: the manifest has no lines to score")
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if len(bad):  # never print NaN into JSON, never write it as a score
        raise CpfdError(f"{model_dir}: the model gives NaN or infinite scores ({len(bad)} of {len(ids)} videos, "
                        f"e.g. {ids[bad[0]]!r}): its weights are not usable")
    if out is not None:
        write_predictions(out, ids, None, logits)
    return {"sample_id": ids, "logits": logits, "classes": list(config.classes)}
