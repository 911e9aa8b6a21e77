"""Tiny corpora built inside tests (a few hundred rows whose label is visible in every input), and
the comparison of model weights that tests share."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.torch import load_file

from cpfd.storage.corpus import Corpus, CorpusWriter


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
