"""What a model reads, as numpy arrays: which corpus columns (`Inputs`), one batch of rows turned
into arrays (`batch_arrays`), and whether a model's inputs and some data's agree (`input_problem`).

No torch here: the training path (`pipeline.data.collate` turns these arrays into tensors) and the
serving path on a host without PyTorch (`student.serving`, onnxruntime) build batches the same way.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pyarrow as pa

from cpfd.storage.errors import CpfdError
from cpfd.storage.images import decode_frames


@dataclass
class Inputs:
    """Which corpus inputs a stage reads. `privileged` is True only for the teacher."""

    frames: bool
    text: bool
    features: bool
    privileged: bool = False

    @classmethod
    def for_corpus(cls, corpus, privileged: bool) -> "Inputs":
        return cls(
            frames=corpus.has_frames,
            text=corpus.has_text,
            features=bool(corpus.features),
            privileged=privileged,
        )

    def columns(self) -> list[str]:
        columns = ["label"]
        columns += ["frames"] if self.frames else []
        columns += ["title", "ocr_text"] if self.text else []
        columns += ["features"] if self.features else []
        columns += ["privileged"] if self.privileged else []
        return columns


def list_column_to_matrix(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A list<float32> column of fixed width -> float32 (N, width), without a Python loop."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    values = column.flatten().to_numpy(zero_copy_only=False)
    return np.array(values, dtype=np.float32).reshape(len(column), width)  # a writable copy for torch


def batch_arrays(table: pa.Table, inputs: Inputs, encode: Callable | None, widths: dict) -> dict[str, np.ndarray]:
    """One Arrow table of rows -> the batch as numpy arrays (the keys of `pipeline.data`'s batches).

    `encode(titles, ocr_texts)` gives `input_ids` and `attention_mask` (the tokenizer's encoding:
    `pipeline.tokenization.encode_text` in training, `student.serving`'s on a serving host);
    `widths` holds the widths of `features` and `privileged`, and `image_size` to check frames by."""
    batch = {"labels": table.column("label").to_numpy().astype(np.int64)}
    if inputs.frames:
        videos = [decode_frames(v) for v in table.column("frames").to_pylist()]
        size = widths.get("image_size")
        for frames in videos:
            if size is not None and frames.shape[1:3] != (size, size):
                raise CpfdError(f"a video holds frames of {frames.shape[2]}x{frames.shape[1]} px, "
                                f"corpus.json says {size}x{size}")
        batch["frames"] = np.stack(videos)  # (B, F, H, W, 3) uint8
    if inputs.text:
        batch.update(encode(table.column("title").to_pylist(), table.column("ocr_text").to_pylist()))
    if inputs.features:
        batch["features"] = list_column_to_matrix(table.column("features"), widths["features"])
    if inputs.privileged:
        batch["privileged"] = list_column_to_matrix(table.column("privileged"), widths["privileged"])
    return batch


def input_problem(config, *, frames: bool, text: bool, features) -> str | None:
    """What a model's inputs and some data's disagree on, in a few words that name the field; None
    when they fit. `features` are the names of the dense features the data carries, in order (a
    list) or as a set of keys (one manifest line, where order does not matter). The one check of
    `evaluate` (a corpus) and `predict` (each manifest line)."""
    if config.frames_per_video and not frames:
        return "the model reads frames; there are none (frames or video)"
    if frames and not config.frames_per_video:
        return "frames: the model reads no frames (it was trained without them)"
    if config.has_text and not text:
        return "the model reads title / ocr_text; there is neither (write \"\" for an empty text)"
    if text and not config.has_text:
        return "title / ocr_text: the model reads no text (it was trained without it)"
    names, have = list(config.feature_names), list(features or [])
    reads = f"(the model reads {', '.join(names) or 'no features'})"
    for name in have:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            return (f"features {name!r} is not a feature the model reads"
                    + (f" (did you mean {close[0]!r}?)" if close else f" {reads}"))
    missing = [n for n in names if n not in have]
    if missing:
        return f"features lacks {missing[0]!r} {reads}; write null for a value that is missing"
    if isinstance(features, list) and have != names:
        return f"features are in another order ({', '.join(have)}) than the model's ({', '.join(names)})"
    return None
