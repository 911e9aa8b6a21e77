"""pipeline/scoring.py: one scoring path. The same rows and model give the same logits through
`evaluate`, `predict` and `dump-teacher`, and scoring hands a model back in the mode it found it."""

import json

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from tests.invoke import ok


def export_manifest(corpus, split: str, folder):
    """The split's rows as a serving manifest: frames written out as PNG (lossless), text, features."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for table in corpus.iter_batches(split, ["sample_id", "title", "ocr_text", "frames", "features"]):
        for row in table.to_pylist():
            frames = []
            for k, data in enumerate(row["frames"]):
                name = f"{row['sample_id']}-{k}.png"
                Image.open(io.BytesIO(data)).save(folder / name)
                frames.append(name)
            lines.append(json.dumps({"id": row["sample_id"], "frames": frames, "title": row["title"],
                                     "ocr_text": row["ocr_text"],
                                     "features": dict(zip(corpus.features, row["features"]))}))
    (folder / "serve.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "serve.jsonl"


def logits_of(path) -> np.ndarray:
    return np.array(pq.read_table(path, columns=["logits"]).column(0).to_pylist(), dtype=np.float64)


def test_evaluate_predict_and_the_dump_score_alike(corpus, student, teacher, tmp_path):
    # One scoring path: the same rows and model give the same logits through every command
    # (within float32 rounding: the batches differ, docs/method.md "What repeats exactly").
    ok("evaluate", student, corpus.path, "--out", tmp_path / "eval.parquet", "--batch-size", "7", "--quiet")
    manifest = export_manifest(corpus, "eval", tmp_path / "serve")
    ok("predict", student, manifest, "--out", tmp_path / "pred.parquet", "--batch-size", "5", "--quiet")
    assert np.abs(logits_of(tmp_path / "eval.parquet") - logits_of(tmp_path / "pred.parquet")).max() < 1e-4

    ok("evaluate", teacher, corpus.path, "--split", "train", "--out", tmp_path / "teacher.parquet", "--quiet")
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "dump", "--batch-size", "11", "--quiet")
    dumped = np.concatenate([logits_of(f) for f in sorted((tmp_path / "dump").glob("part-*.parquet"))])
    assert np.abs(logits_of(tmp_path / "teacher.parquet") - dumped).max() < 1e-4


def test_scoring_gives_back_the_mode_it_found(student, corpus):
    from cpfd.pipeline.data import make_loader
    from cpfd.pipeline.scoring import resolve_device, score_batches
    from cpfd.pipeline.stages import dataset_for
    from cpfd.teacher.models import load_model

    model, tokenizer = load_model(student)
    batches = list(make_loader(dataset_for(model, corpus, "eval", tokenizer, 16)))
    for mode in (True, False):
        model.train(mode)
        labels, logits = score_batches(model, batches, resolve_device("cpu"))
        assert model.training is mode and logits.shape == (24, 2) and torch.is_grad_enabled()  # both given back
        again = score_batches(model, batches, resolve_device("cpu"))[1]
        assert np.abs(logits - again).max() < 1e-5  # eval mode inside: dropout never applies
