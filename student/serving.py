"""The serving side of `cpfd predict`, without PyTorch: manifest lines -> the model's inputs, and a
serving folder (`cpfd export`) run on onnxruntime.

    cpfd export runs/cpfd-student --out runs/serve
    cpfd predict runs/serve new_videos.jsonl --out scores.parquet      # imports neither torch nor transformers

`manifest_batches` turns manifest lines into batches of numpy arrays (frames sampled and resized as
`cpfd import` does, text encoded as in training, non-privileged features with NaN for missing);
both `predict` paths use it, the PyTorch one (`student.predict`) with the model folder's tokenizer,
this one with the serving folder's `tokenizer.json` through the `tokenizers` library.
`check_model_folder` and `is_serving_folder` read only JSON, so the command line checks what it
was given before it imports anything heavy.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa

from cpfd.pipeline.inputs import Inputs, batch_arrays, input_problem
from cpfd.storage.dump import file_sha256
from cpfd.storage.errors import CpfdError
from cpfd.storage.manifest import iter_manifest, listed_files, to_row
from cpfd.storage.outputs import check_file_output
from cpfd.storage.predictions import write_predictions
from cpfd.storage.schema import CONFIG, CORPUS_SCHEMA

SERVING_JSON = "serving.json"
ONNX_FILE = "model.onnx"
SERVING_FORMAT = 1
TOKENIZER_JSON = "tokenizer/tokenizer.json"


@dataclass
class InputSpec:
    """What a model reads and answers, from a model folder's config.json or a serving folder's serving.json."""

    classes: list[str]
    frames_per_video: int
    image_size: int
    has_text: bool
    max_length: int
    feature_names: list[str]
    threshold: float | None  # the validation split's (binary), None otherwise

    @property
    def inputs(self) -> Inputs:
        return Inputs(frames=self.frames_per_video > 0, text=self.has_text, features=bool(self.feature_names))


def is_serving_folder(path: Path) -> bool:
    return (Path(path) / SERVING_JSON).is_file()


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise CpfdError(f"{path}: not a readable {what} ({' '.join(str(e).split())[:200]})") from None
    if not isinstance(data, dict):
        raise CpfdError(f"{path}: not a readable {what} (expected a JSON object)")
    return data


def check_model_folder(model_dir: Path) -> None:
    """A folder `cpfd predict` can serve: a student's model folder or a serving folder; a teacher is
    refused. JSON only: nothing heavy is imported."""
    model_dir = Path(model_dir)
    if is_serving_folder(model_dir):
        read_serving(model_dir)
        return
    if not (model_dir / CONFIG).is_file():
        raise CpfdError(f"{model_dir}: not a model folder (no {CONFIG}) nor a serving folder (no {SERVING_JSON})")
    architecture = _read_json(model_dir / CONFIG, "model config").get("architecture")
    if architecture == "DF-X-VLM":
        raise CpfdError(f"{model_dir}: is a teacher (DF-X-VLM), which needs privileged features; "
                        "serve a student (X-VLM) instead")
    if architecture != "X-VLM":
        raise CpfdError(f"{model_dir / CONFIG}: unknown architecture {architecture!r}")


def read_serving(folder: Path) -> dict:
    """serving.json, checked for what serving reads from it (one line naming the file otherwise)."""
    path = Path(folder) / SERVING_JSON
    data = _read_json(path, "serving.json")
    need = {"format": int, "inputs": list, "classes": list}
    bad = [k for k, kind in need.items() if not isinstance(data.get(k), kind)]
    if bad or data["format"] != SERVING_FORMAT:
        raise CpfdError(f"{path}: not a serving.json of this cpfd (format {data.get('format')!r}, "
                        f"{'missing or mistyped: ' + ', '.join(bad) if bad else f'expected format {SERVING_FORMAT}'})")
    def bad(what: str) -> CpfdError:
        return CpfdError(f"{path}: {what}")

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if not all(isinstance(c, str) for c in data["classes"]) or len(data["classes"]) < 2:
        raise bad("'classes' must be a list of at least two names")
    if not all(isinstance(n, str) for n in data["inputs"]):
        raise bad("'inputs' must be a list of input names")
    threshold = data.get("threshold")
    if threshold is not None and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                      and 0 <= threshold <= 1):
        raise bad(f"'threshold' must be a probability in [0, 1] or null, got {threshold!r}")
    for key in ("frames", "text", "features"):
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise bad(f"'{key}' must be an object or null")
    frames, text, features = data.get("frames") or {}, data.get("text") or {}, data.get("features") or {}
    if frames and not (whole(frames.get("per_video")) and whole(frames.get("image_size"))
                       and frames["per_video"] > 0 and frames["image_size"] > 0):
        raise bad("'frames' needs positive whole numbers 'per_video' and 'image_size'")
    if text and not (whole(text.get("max_length")) and text["max_length"] >= 3):
        raise bad("'text' needs a whole number 'max_length' of at least 3")
    if features and not (isinstance(features.get("names"), list) and all(isinstance(n, str) for n in features["names"])):
        raise bad("'features' needs a list of feature 'names'")
    return data


def spec_of_serving(serving: dict) -> InputSpec:
    frames, text, features = serving.get("frames") or {}, serving.get("text") or {}, serving.get("features") or {}
    return InputSpec(classes=list(serving["classes"]), frames_per_video=int(frames.get("per_video", 0)),
                     image_size=int(frames.get("image_size", 0)), has_text=bool(text),
                     max_length=int(text.get("max_length", 0)), feature_names=list(features.get("names", [])),
                     threshold=serving.get("threshold"))


def resolve_threshold(spec: InputSpec, given: float | None) -> float | None:
    """The threshold `predict` decides with: --threshold, else the recorded validation one (binary)."""
    if given is None:
        return spec.threshold if len(spec.classes) == 2 else None
    if len(spec.classes) != 2:
        raise CpfdError(f"--threshold applies to a model of two classes; this one has {len(spec.classes)} "
                        "and predicts the most probable")
    return float(given)


def manifest_batches(manifest: Path, spec: InputSpec, encode: Callable | None, batch_size: int,
                     ids: list[str]) -> Iterator[dict[str, np.ndarray]]:
    """The manifest's lines as batches of the model's input arrays (`pipeline.inputs.batch_arrays`),
    each line checked against what the model reads; the lines' ids are appended to `ids`."""
    widths = {"features": len(spec.feature_names), "privileged": 0}
    rows = []

    def batch():
        return batch_arrays(pa.Table.from_pylist(rows, schema=CORPUS_SCHEMA), spec.inputs, encode, widths)

    for record in iter_manifest(manifest, require_label=False):
        problem = input_problem(spec, frames=bool(record["frames"] or record.get("video")),
                                text="text" in record["kinds"],
                                features=set(record["features"] or ()) if "features" in record["kinds"] else None)
        if problem:
            raise CpfdError(f"{manifest}:{record['line']}: {problem}")
        rows.append(to_row(record, manifest, label=-1, frames_per_video=spec.frames_per_video,
                           image_size=spec.image_size, privileged_features=[], features=spec.feature_names))
        ids.append(record["id"])
        if len(rows) == batch_size:
            yield batch()
            rows = []
    if rows:
        yield batch()


def tokenizers_encoder(path: Path, max_length: int) -> Callable:
    """`encode(titles, ocr_texts)` with the `tokenizers` library alone: `[CLS] title [SEP] ocr [SEP]`,
    truncated longest-first and padded to `max_length`, as training encodes it (the serving folder's
    parity with the PyTorch path is tested on real manifests)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # the library raises its own exception type for a bad file
        raise CpfdError(f"{path}: not a readable tokenizer ({' '.join(str(e).split())[:200]})") from None
    pad = tokenizer.token_to_id("[PAD]")
    tokenizer.enable_truncation(max_length, strategy="longest_first")
    tokenizer.enable_padding(length=max_length, pad_id=0 if pad is None else pad, pad_token="[PAD]")

    def encode(titles, ocr_texts) -> dict[str, np.ndarray]:
        encoded = tokenizer.encode_batch([(t or "", o or "") for t, o in zip(titles, ocr_texts)])
        return {"input_ids": np.array([e.ids for e in encoded], dtype=np.int64).reshape(-1, max_length),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64).reshape(-1, max_length)}

    return encode


def serve_manifest(folder, manifest, *, out=None, overwrite: bool = False, threshold: float | None = None,
                   batch_size: int = 64) -> dict:
    """`cpfd predict SERVING_FOLDER MANIFEST`: the exported student on onnxruntime's CPU provider.

    Returns {"sample_id", "logits" (N, C), "classes", "threshold"} and writes the predictions file
    when `out` is given (decisions at `threshold`: --threshold, else the validation one)."""
    folder, manifest = Path(folder), Path(manifest)
    try:
        import onnxruntime as ort
    except ImportError:
        raise CpfdError(f"{folder} is a serving folder; running it needs onnxruntime: pip install onnxruntime "
                        "(docs/serving.md)") from None
    serving = read_serving(folder)
    spec = spec_of_serving(serving)
    threshold = resolve_threshold(spec, threshold)
    check_file_output("--out", out, overwrite=overwrite, inputs={"MODEL": folder, "MANIFEST": manifest},
                      referenced={"a frame or video file MANIFEST lists": listed_files(manifest) if out else []})
    graph = folder / str(serving.get("model", ONNX_FILE))
    if not graph.is_file():
        raise CpfdError(f"{graph}: missing (the serving folder is incomplete; export it again)")
    if file_sha256(graph) != serving.get("model_sha256"):
        raise CpfdError(f"{graph}: its sha256 differs from {folder / SERVING_JSON}'s (the file changed after the "
                        "export); export the student again")
    try:
        session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for a missing or damaged graph
        raise CpfdError(f"{graph}: not a readable ONNX graph ({' '.join(str(e).split())[:200]})") from None
    names = [i.name for i in session.get_inputs()]
    if names != list(serving["inputs"]):
        raise CpfdError(f"{graph}: its inputs are {names}, {folder / SERVING_JSON} says {serving['inputs']}")
    if spec.has_text and (folder / TOKENIZER_JSON).is_file() \
            and file_sha256(folder / TOKENIZER_JSON) != serving.get("tokenizer_sha256"):
        raise CpfdError(f"{folder / TOKENIZER_JSON}: its sha256 differs from {folder / SERVING_JSON}'s (the file changed "
                        "after the export); export the student again")
    encode = tokenizers_encoder(folder / TOKENIZER_JSON, spec.max_length) if spec.has_text else None
    ids: list[str] = []
    logits = []
    for arrays in manifest_batches(manifest, spec, encode, batch_size, ids):
        try:
            logits.append(session.run(["logits"], {n: arrays[n] for n in names})[0])
        except Exception as e:  # onnxruntime's own exception types: a graph that does not fit serving.json
            raise CpfdError(f"{graph}: the graph does not run on {folder / SERVING_JSON}'s inputs "
                            f"({' '.join(str(e).split())[:200]})") from None
    if not ids:
        raise CpfdError(f"{manifest}: the manifest has no lines to score")
    logits = np.concatenate(logits).astype(np.float32)
    if out is not None:
        write_predictions(out, ids, None, logits, threshold)
    return {"sample_id": ids, "logits": logits, "classes": spec.classes, "threshold": threshold}
