"""`cpfd predict` on a student's model folder (PyTorch): a student scores raw videos from a manifest,
on frames, text and non-privileged features alone; a teacher is refused. A serving folder
(`cpfd export`) is served by `student.serving` instead, without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cpfd.pipeline.scoring import resolve_device, score_batches
from cpfd.pipeline.stages import load_model
from cpfd.pipeline.tokenization import encode_text
from cpfd.storage.errors import CpfdError
from cpfd.storage.manifest import listed_files
from cpfd.storage.model_folder import read_model_config, read_training_record
from cpfd.storage.outputs import check_file_output
from cpfd.storage.predictions import write_predictions
from cpfd.student.serving import InputSpec, manifest_batches, resolve_threshold
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification


def load_student(model_dir: Path):
    """(X-VLM, tokenizer or None) from a student's model folder; a teacher's is refused in one line."""
    architecture = read_model_config(Path(model_dir)).get("architecture")
    if architecture == "DF-X-VLM":
        raise CpfdError(f"{model_dir}: is a teacher (DF-X-VLM), which needs privileged features; "
                        "serve a student (X-VLM) instead")
    return load_model(model_dir, {XVLMConfig.architecture: XVLMForClassification})


def predict_manifest(model_dir, manifest, *, out=None, overwrite: bool = False, threshold: float | None = None,
                     batch_size: int = 64, device: str = "auto", progress: bool = True) -> dict:
    """`cpfd predict MODEL MANIFEST`: score raw videos from a manifest with a student's model folder.

    Reads frames, title, OCR text and non-privileged features only (`student.serving.manifest_batches`,
    the same lines -> arrays as the serving folder's path); a teacher is refused, because at serving
    time the privileged features do not exist yet. Returns {"sample_id", "logits" (N, C), "classes",
    "threshold"} and writes the predictions file when `out` is given (decisions at `threshold`:
    --threshold, else the model's validation threshold for two classes)."""
    model_dir, manifest = Path(model_dir), Path(manifest)
    record = read_training_record(model_dir) or {}
    check_file_output("--out", out, overwrite=overwrite, inputs={"MODEL": model_dir, "MANIFEST": manifest},
                      referenced={"a frame or video file MANIFEST lists": listed_files(manifest) if out else []})
    model, tokenizer = load_student(model_dir)
    config = model.config
    spec = InputSpec(classes=list(config.classes), frames_per_video=config.frames_per_video,
                     image_size=config.image_size, has_text=bool(config.has_text), max_length=config.max_length,
                     feature_names=list(config.feature_names), threshold=record.get("threshold"))
    threshold = resolve_threshold(spec, threshold)
    device = resolve_device(device)
    model.to(device)

    def encode(titles, ocr_texts):
        return encode_text(tokenizer, titles, ocr_texts, max_length=config.max_length)

    ids: list[str] = []
    batches = ({k: torch.from_numpy(v) for k, v in arrays.items()}
               for arrays in manifest_batches(manifest, spec, encode if config.has_text else None, batch_size, ids))
    _, logits = score_batches(model, batches, device, progress=progress, desc="predict")
    if not ids:
        raise CpfdError(f"{manifest}: the manifest has no lines to score")
    bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
    if len(bad):  # never print NaN into JSON, never write it as a score
        raise CpfdError(f"{model_dir}: the model gives NaN or infinite scores ({len(bad)} of {len(ids)} videos, "
                        f"e.g. {ids[bad[0]]!r}): its weights are not usable")
    if out is not None:
        write_predictions(out, ids, None, logits, threshold)
    return {"sample_id": ids, "logits": logits, "classes": list(config.classes), "threshold": threshold}
