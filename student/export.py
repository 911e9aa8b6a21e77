"""`cpfd export`: a student model folder -> a serving folder that runs without PyTorch.

    cpfd export runs/cpfd-student --out runs/serve          # model.onnx, tokenizer/, serving.json
    cpfd predict runs/serve new_videos.jsonl                # onnxruntime, no torch (student.serving)

The graph is the student (X-VLM) from its raw inputs to its class probabilities: frames uint8
(B, F, H, W, 3), input_ids and attention_mask int64 (B, L), the non-privileged features float32
(B, D) with NaN for a missing value; the model's own preprocessing (frames scaled and normalized,
features normalized with the training rows' statistics, missing-value indicators) is inside it.
Batch size and text length are dynamic axes; frame count and image size are fixed.
`serving.json` holds what turns a manifest line into those inputs and the outputs into an answer
(`SERVING_FORMAT`), the source model's weights hash, the opset, the package versions, and the
parity record: the exported graph on onnxruntime's CPU provider against the PyTorch student, on
real rows of the corpus the student was trained on. An export outside `PARITY_TOLERANCE` fails and
writes nothing; so does a teacher folder (it needs privileged features a serving host lacks).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from cpfd import version
from cpfd.pipeline.data import make_loader
from cpfd.pipeline.metrics import classification_metrics
from cpfd.pipeline.stages import check_model_fits_corpus, dataset_for
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.dump import file_sha256
from cpfd.storage.model_folder import TOKENIZER, WEIGHTS, read_model_config, read_training_record
from cpfd.storage.outputs import check_paths, exclusive, staging_path, swap_in
from cpfd.student.predict import load_student
from cpfd.student.serving import ONNX_FILE, SERVING_FORMAT, SERVING_JSON, TOKENIZER_JSON


# Largest |probability difference| allowed between onnxruntime (CPU) and the PyTorch student on the
# same rows: Hugging Face optimum's bound for BERT-like models. Measured on the default student:
# docs/serving.md.
PARITY_TOLERANCE = 1e-4

# The graph's inputs, in order, and which model input each is.
GRAPH_INPUTS = ("frames", "input_ids", "attention_mask", "features")


class _Graph(torch.nn.Module):
    """The student as the graph sees it: positional inputs (only those the model reads), and the
    logits with their softmax."""

    def __init__(self, model: torch.nn.Module, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(dict(zip(self.names, inputs))).logits.float()  # (B, C)
        return logits, torch.softmax(logits, dim=-1)


def graph_inputs(config) -> list[str]:
    """The graph's input names for a student config: frames, input_ids, attention_mask, features,
    as far as the model reads them. Never a privileged feature."""
    names = ["frames"] if config.frames_per_video else []
    names += ["input_ids", "attention_mask"] if config.has_text else []
    names += ["features"] if config.feature_names else []
    return names


def example_inputs(config, batch: int, text_length: int) -> list[torch.Tensor]:
    """Inputs of the graph's shapes (zeros; features NaN in one cell: the missing path is traced too)."""
    out = []
    for name in graph_inputs(config):
        if name == "frames":
            out.append(torch.zeros(batch, config.frames_per_video, config.image_size, config.image_size, 3,
                                   dtype=torch.uint8))
        elif name in ("input_ids", "attention_mask"):
            out.append(torch.ones(batch, text_length, dtype=torch.long))
        else:
            features = torch.zeros(batch, len(config.feature_names))
            features[0, 0] = float("nan")
            out.append(features)
    return out


def export_onnx(model: torch.nn.Module, path: Path, opset: int | None = None) -> int:
    """Write the student's graph to `path` with the dynamo exporter; batch and text length dynamic.
    Returns the opset the file declares."""
    import onnx
    from torch.export import Dim

    config = model.config
    names = graph_inputs(config)
    # text up to the length the model was trained with (its position embeddings end there)
    batch, text = Dim("batch", min=1, max=1 << 20), Dim("text_length", min=3, max=max(config.max_length, 4))
    shapes = {"frames": {0: batch}, "input_ids": {0: batch, 1: text}, "attention_mask": {0: batch, 1: text},
              "features": {0: batch}}
    graph = _Graph(model, names).eval()
    chatter = io.StringIO()  # the exporter prints its progress ("[torch.onnx] ...") and optimizer notes,
    onnx_log = logging.getLogger("torch.onnx")  # and logs what it skips (torchvision's ops)
    level, onnx_log.level = onnx_log.level, logging.ERROR
    try:
        with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracing notes
            program = torch.onnx.export(graph, tuple(example_inputs(config, 2, config.max_length)), dynamo=True,
                                        input_names=names, output_names=["logits", "probs"],
                                        dynamic_shapes={"inputs": tuple(shapes[n] for n in names)},  # forward(*inputs)
                                        **({"opset_version": opset} if opset else {}), verbose=False)
    except Exception as e:  # torch.export's and the ONNX converter's own exception types
        raise CpfdError(f"the ONNX export failed: {' '.join(str(e).split())[:300]}") from None
    finally:
        onnx_log.setLevel(level)
    if program is None:
        raise CpfdError("the ONNX exporter returned no program")
    program.save(str(path))
    proto = onnx.load(str(path))
    check_graph(proto, config)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def check_graph(proto, config) -> None:
    """The exported graph takes exactly the student's inputs, with a symbolic batch dimension (a
    dynamo export can silently fix it to the example's size: pytorch#152018) and the widths the
    config says."""
    inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    expected = graph_inputs(config)
    if list(inputs) != expected:
        raise CpfdError(f"the exported graph's inputs are {list(inputs)}, expected {expected} "
                        "(frames, text and non-privileged features only)")
    for name, dims in inputs.items():
        if not isinstance(dims[0], str) or not dims[0]:
            raise CpfdError(f"the exported graph fixed the batch size of {name} to {dims[0]}")
    if "features" in inputs and inputs["features"][1] != len(config.feature_names):
        raise CpfdError(f"the exported graph's features are {inputs['features'][1]} wide, "
                        f"the model reads {len(config.feature_names)}")


def check_parity(model: torch.nn.Module, tokenizer, onnx_path: Path, corpus: Corpus, rows: int,
                 batch_size: int = 64) -> dict:
    """The ONNX graph on onnxruntime's CPU provider against the PyTorch student, on the first `rows`
    rows of the corpus's eval split (its train split if the eval split is empty): the largest
    |probability difference|, and both sides' probabilities (for the quantized comparison)."""
    import onnxruntime as ort

    split = "eval" if corpus.num_rows("eval") else "train"
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = graph_inputs(model.config)
    dataset = dataset_for(model, corpus, split, tokenizer, batch_size)
    torch_probs, onnx_probs, labels = [], [], []
    model.eval()
    for batch in make_loader(dataset):
        with torch.no_grad():
            torch_probs.append(torch.softmax(model(batch).logits.float(), dim=-1).numpy())
        onnx_probs.append(session.run(["probs"], {n: batch[n].numpy() for n in names})[0])
        labels.append(batch["labels"].numpy())
        if sum(len(p) for p in torch_probs) >= rows:
            break
    a, b = np.concatenate(torch_probs)[:rows], np.concatenate(onnx_probs)[:rows]
    return {"rows": int(len(a)), "split": split, "max_abs_diff_probs": float(np.abs(a - b).max()) if len(a) else 0.0,
            "tolerance": PARITY_TOLERANCE, "provider": "CPUExecutionProvider", "labels": np.concatenate(labels)[:rows],
            "torch_probs": a, "onnx_probs": b}


def export_student(model_dir, out, *, corpus=None, check_rows: int = 256, quantize: str | None = None,
                   opset: int | None = None, overwrite: bool = False) -> dict:
    """`cpfd export`: write the serving folder OUT (model.onnx, tokenizer/, serving.json) of a student.

    The folder is built beside OUT and put in place only when the parity check passed: a failed
    export leaves OUT as it was. Returns serving.json's content."""
    model_dir, out = Path(model_dir), Path(out)
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise CpfdError(f"cpfd export needs {', '.join(missing)}: pip install 'cpfd[export]'")
    config = read_model_config(model_dir)
    if config.get("architecture") != "X-VLM":
        raise CpfdError(f"{model_dir}: is a {config.get('architecture')}, not a student (X-VLM): "
                        + ("a teacher needs the privileged features, which a serving host does not have"
                           if config.get("architecture") == "DF-X-VLM" else "export takes a student's model folder"))
    record = read_training_record(model_dir) or {}
    corpus = Path(corpus) if corpus is not None else Path((record.get("corpus") or {}).get("path") or "")
    if not str(corpus) or not corpus.exists():
        raise CpfdError(f"{model_dir}: the corpus it was trained on ({corpus or 'not recorded'}) is not there; "
                        "give one with --corpus for the parity check")
    if check_rows < 1:
        raise CpfdError(f"--check-rows must be at least 1, got {check_rows}")
    check_paths({"--out": out}, {"MODEL": model_dir, "--corpus": corpus})
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CpfdError(f"{out} already holds {'a serving folder' if (out / SERVING_JSON).exists() else 'files'}; "
                        "pass --overwrite to replace it")
    corpus = Corpus(corpus)
    model, tokenizer = load_student(model_dir)
    check_model_fits_corpus(model, model_dir, corpus)
    with exclusive(out, "this serving folder"):
        staging = staging_path(out)
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            serving = _write_serving_folder(model, tokenizer, model_dir, staging, corpus, record, check_rows,
                                            quantize, opset)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if out.exists():
            swap_in(staging, out)
        else:
            staging.rename(out)
    return serving


def _write_serving_folder(model, tokenizer, model_dir: Path, target: Path, corpus: Corpus, record: dict,
                          check_rows: int, quantize: str | None, opset: int | None) -> dict:
    import onnx
    import onnxruntime

    config = model.config
    start = time.perf_counter()
    declared_opset = export_onnx(model, target / ONNX_FILE, opset)
    export_s = time.perf_counter() - start
    if (model_dir / TOKENIZER).is_dir():
        shutil.copytree(model_dir / TOKENIZER, target / TOKENIZER)
    parity = check_parity(model, tokenizer, target / ONNX_FILE, corpus, check_rows)
    if not parity["max_abs_diff_probs"] <= PARITY_TOLERANCE:
        raise CpfdError(f"the exported graph's probabilities differ from the PyTorch student's by up to "
                        f"{parity['max_abs_diff_probs']:.3g} on {parity['rows']} rows of {corpus.path} "
                        f"({parity['split']}), above the tolerance {PARITY_TOLERANCE:g}: nothing was written")
    quantized = None
    if quantize:
        quantized = _quantize(target / ONNX_FILE, parity, model, tokenizer, corpus, check_rows, record.get("threshold"))
    serving = {
        "format": SERVING_FORMAT,
        "architecture": config.architecture,
        "model": ONNX_FILE,
        "model_sha256": file_sha256(target / ONNX_FILE),  # predict checks it: a damaged graph may still load
        "tokenizer_sha256": file_sha256(target / TOKENIZER_JSON) if (target / TOKENIZER_JSON).is_file() else None,
        "inputs": graph_inputs(config),
        "outputs": ["logits", "probs"],
        "classes": list(config.classes),
        "positive_class": config.classes[1] if len(config.classes) == 2 else None,
        "threshold": record.get("threshold") if len(config.classes) == 2 else None,
        "frames": {"per_video": config.frames_per_video, "image_size": config.image_size,
                   "format": "uint8 RGB (B, F, H, W, 3); the graph scales to [0, 1] and normalizes with mean 0.5, "
                             "std 0.5"} if config.frames_per_video else None,
        "text": {"fields": ["title", "ocr_text"], "template": "[CLS] title [SEP] ocr_text [SEP]",
                 "max_length": config.max_length, "truncation": "longest_first", "padding": "max_length",
                 "tokenizer": TOKENIZER} if config.has_text else None,
        "features": {"names": list(config.feature_names),
                     "transform": "NaN or infinite = missing: 0 after normalization plus a missing indicator; "
                                  "else (x - mean) / std (std below 1e-6 counts as 1), inside the graph",
                     "mean": list(config.feature_mean), "std": list(config.feature_std)} if config.feature_names else None,
        "source": {"model_dir": str(model_dir), "weights_sha256": file_sha256(model_dir / WEIGHTS),
                   "corpus": str(corpus.path), "corpus_fingerprint": corpus.fingerprint},
        "opset": declared_opset,
        "quantization": quantized,
        "parity": {k: v for k, v in parity.items() if k not in ("labels", "torch_probs", "onnx_probs")},
        "exported_with": {"cpfd": version(), "torch": torch.__version__, "onnx": onnx.__version__,
                          "onnxruntime": onnxruntime.__version__, "python": platform.python_version()},
        "export_seconds": round(export_s, 2),
    }
    atomic_write_json(target / SERVING_JSON, serving)  # last: the folder counts as a serving folder only now
    return serving


def _quantize(path: Path, parity: dict, model, tokenizer, corpus: Corpus, check_rows: int,
              threshold: float | None) -> dict:
    """Replace model.onnx by its int8 dynamic quantization (onnxruntime); what it changes: ROC AUC and
    F1 on the parity rows, the probability difference, and batch-1 latency, each against float32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = path.with_name("model.float32.onnx")
    path.rename(float_path)
    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # the quantizer's advice goes to the root logger
    try:
        quantize_dynamic(str(float_path), str(path), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    after = check_parity(model, tokenizer, path, corpus, check_rows)
    labels = parity["labels"]  # F1 at the validation threshold, the decision predict makes (binary)
    before_m = classification_metrics(labels, np.log(np.clip(parity["onnx_probs"], 1e-12, None)), threshold=threshold)
    after_m = classification_metrics(labels, np.log(np.clip(after["onnx_probs"], 1e-12, None)), threshold=threshold)
    f1 = "f1_at_val_threshold" if threshold is not None else "f1"
    latency = {name: _batch1_latency(p, model.config) for name, p in (("float32", float_path), ("int8", path))}
    float_path.unlink()
    return {"type": "int8 dynamic (onnxruntime.quantization.quantize_dynamic, QInt8 weights)",
            "rows": after["rows"], "split": after["split"],
            "max_abs_diff_probs_vs_torch": after["max_abs_diff_probs"],
            "roc_auc": {"float32": before_m.get("roc_auc"), "int8": after_m.get("roc_auc")},
            "f1": {"float32": before_m.get(f1), "int8": after_m.get(f1)},
            "f1_at": "the validation threshold" if threshold is not None else "the argmax",
            "batch1_latency_ms": latency}


def _batch1_latency(path: Path, config, repeats: int = 30) -> dict:
    """Median and spread of one-video inference on onnxruntime's CPU provider, in ms."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(graph_inputs(config), example_inputs(config, 1, config.max_length))}
    session.run(None, feed)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return {"median": float(np.median(times)), "p10": float(np.percentile(times, 10)),
            "p90": float(np.percentile(times, 90)), "repeats": repeats}


def format_export(serving: dict, out) -> str:
    """What `cpfd export` prints: the folder, the parity it reached, and what quantization changed."""
    parity = serving["parity"]
    lines = [f"wrote {out} (model.onnx, opset {serving['opset']}; inputs {', '.join(serving['inputs'])})",
             f"parity: max |probability difference| {parity['max_abs_diff_probs']:.3g} against PyTorch on "
             f"{parity['rows']} {parity['split']} rows (tolerance {parity['tolerance']:g}, onnxruntime CPU)"]
    if serving.get("threshold") is not None:
        lines.append(f"threshold: {serving['positive_class']!r} at probability >= {serving['threshold']:.6g} "
                     "(the validation split's)")
    q = serving.get("quantization")
    if q:
        lines.append(f"int8: ROC AUC {q['roc_auc']['float32']:.4f} -> {q['roc_auc']['int8']:.4f}, "
                     f"F1 {q['f1']['float32']:.4f} -> {q['f1']['int8']:.4f} on {q['rows']} {q['split']} rows; "
                     f"batch-1 latency {q['batch1_latency_ms']['float32']['median']:.2f} -> "
                     f"{q['batch1_latency_ms']['int8']['median']:.2f} ms (median)")
    return "\n".join(lines)
