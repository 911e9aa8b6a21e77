"""What tests build: tiny corpora, fake teacher dumps, and the comparison of model weights.

- `tiny_corpus`: a few hundred rows whose label is visible in every input (frames, text, features),
  for tests that train models;
- `layout_corpus`: a tabular corpus with a fixed shard / row-group layout (shards of 7 rows in
  row groups of 3) and computable labels, for storage and dump tests; `make_row` is one row of
  every column, for the corpus writer's own tests;
- `run_dump`: the dump-teacher loop of one worker with a fake teacher (seeded random logits), for
  the dump's writer, reader and DuckDB tests;
- `tiny_student`, `tiny_teacher` and `model_batch`: an X-VLM, a DF-X-VLM (hidden 32, 2 layers) and a
  batch that fits one, for the modeling and model-folder tests (`MODEL_INPUTS`: the input mixes).

The corpus, teacher, student and dump that several test folders share are built once a session by
the fixtures of tests/conftest.py.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file

from cpfd.storage.corpus import Corpus, CorpusWriter
from cpfd.storage.dump import dump_provenance, finalize_dump, plan_dump, write_dump_shard


def png(color, size: int = 16) -> bytes:
    a = np.zeros((size, size, 3), np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = color
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def tiny_corpus(path, *, n_train=96, n_eval=48, frames=True, text=True, privileged=True, features=True,
                classes=("neg", "pos"), seed=0, image_size=16, frames_per_video=2, **writer_options) -> Corpus:
    rng = np.random.default_rng(seed)
    with CorpusWriter(
        path, task="tiny", classes=list(classes), frames_per_video=frames_per_video if frames else 0,
        image_size=image_size, has_text=text, privileged_features=["reports", "legacy_score"] if privileged else [],
        features=["duration"] if features else [], **writer_options,
    ) as w:
        for split, n in (("train", n_train), ("eval", n_eval)):
            for i in range(n):
                y = int(rng.integers(len(classes)))
                w.add(split, {
                    "sample_id": f"{split}-{i:04d}",
                    "label": y,
                    "title": (f"clip {['calm', 'spam', 'odd'][y % 3]} {i}" if rng.random() < 0.7 else f"clip {i}") if text else "",
                    "ocr_text": "buy now" if text and y and rng.random() < 0.5 else "",
                    "frames": [png((120 * y % 256, 60, 30), image_size), png((20, 20, 20), image_size)][:frames_per_video] if frames else [],
                    "privileged": [y + rng.normal(), float("nan") if rng.random() < 0.3 else rng.normal()] if privileged else [],
                    "features": [float(rng.normal())] if features else [],
                })
    return Corpus(path)


# Two trainings with the same seed, data and options on one machine end with the same weights
# within this bound, not bit for bit: BLAS kernels (MKL on AVX-512) differ in the last bits from
# call to call with the memory layout, and a few optimizer steps carry that along (docs/method.md,
# "What repeats exactly").
WEIGHTS_TOLERANCE = 1e-5


def max_weight_difference(a, b) -> float:
    """Largest |difference| between the model.safetensors of two model folders (same tensor names)."""
    a, b = load_file(Path(a) / "model.safetensors"), load_file(Path(b) / "model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def make_row(i: int, n_priv: int = 2) -> dict:
    """Row i of a corpus, every column set (frames are opaque bytes: the writer never decodes them)."""
    return {
        "sample_id": f"v{i:05d}",
        "label": i % 2,
        "title": f"title {i}",
        "ocr_text": "" if i % 3 else f"ocr {i}",
        "frames": [bytes([i % 256, 1, 2]), bytes([3, 4])],
        "privileged": [float(i), float("nan")][:n_priv],
        "features": [0.5 * i],
    }


def layout_corpus(out, n_train=23, n_eval=8, prefix="v", classes=("neg", "pos"), relabel=()) -> Corpus:
    """A tabular corpus: train shards of 7, 7, 7, 2 rows in row groups of 3, 3, 1 (and 2).

    Rows listed in `relabel` get the next class: the same ids (and fingerprint), other labels."""
    with CorpusWriter(
        out, task="t", classes=list(classes), frames_per_video=0, image_size=0, has_text=False,
        privileged_features=["reports"], features=["duration"], rows_per_shard=7, row_group_rows=3,
    ) as w:
        for i in range(n_train + n_eval):
            row = {
                "sample_id": f"{prefix}{i:04d}", "label": (i * 7 + (i in relabel)) % len(classes),
                "title": "", "ocr_text": "",
                "frames": [], "privileged": [float(i)], "features": [0.5 * i],
            }
            w.add("train" if i < n_train else "eval", row)
    return Corpus(out)


# ---- fake teacher dumps ------------------------------------------------------------------------

CREATED_AT = "2024-10-21T00:00:00+00:00"  # fixed, so two runs write byte-identical files
TEACHER_A = {"dir": "/models/teacher-a", "weights_sha256": "a" * 64, "config": {"hidden": 32}}
TEACHER_B = {"dir": "/models/teacher-b", "weights_sha256": "b" * 64, "config": {"hidden": 32}}


def cross_entropy(logits, labels):
    x = logits.astype(np.float64)
    log_softmax = x - x.max(1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
    return -log_softmax[np.arange(len(x)), labels]


def teacher_outputs(corpus, split, shard, seed=0):
    """What a teacher would hand the writer: one tuple per row group of the corpus shard."""
    for unit in corpus.work_units(split):
        if unit.shard != shard:
            continue
        rows = corpus.read_unit(unit, ["sample_id", "label"])
        labels = rows.column("label").to_numpy()
        rng = np.random.default_rng([seed, shard, unit.row_group])
        logits = (3 * rng.normal(size=(unit.rows, corpus.num_classes))).astype(np.float32)
        yield rows.column("sample_id").to_pylist(), labels, logits, cross_entropy(logits, labels).astype(np.float32)


def run_dump(out, corpus, split="train", teacher=TEACHER_A, overwrite=False, num_shards=1, shard_index=0,
             stop_after=None, seed=0):
    """The dump-teacher loop of one worker; `stop_after` k shards simulates a crash."""
    provenance = dump_provenance(corpus, split, teacher, created_at=CREATED_AT)
    todo = plan_dump(out, corpus, split, teacher, overwrite, num_shards=num_shards, shard_index=shard_index)
    for k, shard in enumerate(todo):
        if stop_after is not None and k == stop_after:
            return None
        write_dump_shard(out, corpus, split, shard, teacher_outputs(corpus, split, shard, seed), provenance)
    if stop_after is not None and stop_after >= len(todo):
        return None
    return finalize_dump(out, corpus, split, provenance)


# ---- tiny models -------------------------------------------------------------------------------

VOCAB = 50
TINY_MODEL = dict(hidden_size=32, num_layers=2, num_heads=4, fusion_layers=2, feature_hidden=16, head_hidden=32)

MODEL_INPUTS = {
    "frames+text": dict(frames=2, text=True),
    "text only": dict(frames=0, text=True),
    "frames only": dict(frames=2, text=False),
    "tabular": dict(frames=0, text=False, features=4),
    "frames+text+features": dict(frames=2, text=True, features=4),
}


def tiny_model_options(frames=2, text=True, features=0, num_classes=3, **overrides) -> dict:
    options = dict(num_classes=num_classes, frames_per_video=frames, image_size=16, has_text=text,
                   vocab_size=VOCAB, feature_names=[f"f{i}" for i in range(features)],
                   feature_mean=[1.0] * features, feature_std=[2.0] * features, patch_size=8,
                   max_length=12, **TINY_MODEL)
    options.update(overrides)
    return options


# The model classes are imported when a model is built: most tests that import this file never
# build one, and transformers takes a second or two to import.


def tiny_student(**kwargs):
    """An X-VLM of `tiny_model_options(**kwargs)`, seeded: the same weights on every call."""
    from cpfd.student.xvlm import XVLMConfig, XVLMForClassification

    torch.manual_seed(0)
    return XVLMForClassification(XVLMConfig.build(**tiny_model_options(**kwargs)))


def tiny_teacher(privileged=3, **kwargs):
    """A DF-X-VLM of `tiny_model_options(**kwargs)` and `privileged` privileged features, seeded."""
    from cpfd.teacher.df_xvlm import DFXVLMConfig, DFXVLMForClassification

    torch.manual_seed(0)
    config = DFXVLMConfig.build(privileged_features=[f"p{i}" for i in range(privileged)],
                                privileged_mean=[0.0] * privileged, privileged_std=[1.0] * privileged,
                                df_hidden=16, **tiny_model_options(**kwargs))
    return DFXVLMForClassification(config)


def model_batch(config, batch_size=2, seed=0) -> dict:
    """A random batch of what `config` reads: one padded text row, a missing feature value."""
    generator = torch.Generator().manual_seed(seed)
    batch = {"labels": torch.zeros(batch_size, dtype=torch.long)}
    if config.frames_per_video:
        shape = (batch_size, config.frames_per_video, config.image_size, config.image_size, 3)
        batch["frames"] = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    if config.has_text:
        batch["input_ids"] = torch.randint(5, VOCAB, (batch_size, 10), generator=generator)
        batch["attention_mask"] = torch.ones(batch_size, 10, dtype=torch.long)
        batch["attention_mask"][1, 6:] = 0  # one padded row
    if config.feature_names:
        batch["features"] = torch.randn(batch_size, len(config.feature_names), generator=generator)
        batch["features"][0, 0] = math.nan
    if getattr(config, "privileged_features", None):
        batch["privileged"] = torch.randn(batch_size, len(config.privileged_features), generator=generator)
    return batch


def same_state(a, b) -> bool:
    """Two models hold bit-identical weights (stored values, not recomputed ones)."""
    x, y = a.state_dict(), b.state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
