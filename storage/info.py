"""`cpfd info PATH`: what a corpus, teacher dump or model folder holds."""

from __future__ import annotations

from pathlib import Path

from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST, describe_dump, format_dump_description
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import (
    CONFIG,
    TOKENIZER,
    WEIGHTS,
    is_cross_fitted,
    read_folds,
    read_model_config,
    read_training_record,
)


def describe_model(path: Path) -> dict:
    """Architecture, inputs, size and training summary of a model folder (weights not loaded)."""
    config = read_model_config(path)
    weights = path / WEIGHTS
    params = None
    if weights.exists():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                params = sum(_numel(f.get_slice(k).get_shape()) for k in f.keys())
        except Exception as e:  # a damaged file: say so, loading it would fail the same way
            raise CpfdError(f"{weights}: not a readable safetensors file ({e})") from None
    training = {}
    record = read_training_record(path)
    if record is not None:
        best = record.get("best_epoch")
        training = {
            "stage": record.get("stage"),
            "command": record.get("command"),
            "epochs": len(record.get("epochs", [])),
            "best_epoch": best,
            "best": {k: v for k, v in record["epochs"][best - 1].items() if k.startswith("val_")} if best else {},
            "distillation": record.get("distillation"),
        }
    return {
        "kind": "model",
        "path": str(path),
        "architecture": config.get("architecture"),
        "classes": config.get("classes"),
        "frames_per_video": config.get("frames_per_video"),
        "image_size": config.get("image_size"),
        "has_text": config.get("has_text"),
        "vision_backbone": _dict(config.get("vision_config")).get("model_type"),
        "text_backbone": _dict(config.get("text_config")).get("model_type"),
        "features": config.get("feature_names", []),
        "privileged_features": config.get("privileged_features", []),
        "parameters": params,
        "tokenizer": (path / TOKENIZER).is_dir(),
        "training": training,
    }


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def describe(path: str | Path) -> dict:
    """A JSON-able description of the folder, by the manifest file it holds."""
    path = Path(path)
    if not path.exists():
        raise CpfdError(f"{path}: no such file or directory")
    if (path / CORPUS_JSON).exists():
        return Corpus(path).summary()
    if (path / DUMP_MANIFEST).exists():
        return describe_dump(path)
    if (path / CONFIG).exists():
        return describe_model(path)
    if is_cross_fitted(path):
        data = read_folds(path)
        return {"kind": "cross-fitted teacher", "path": str(path), "folds": data["folds"], "rule": data["rule"],
                "eval_rule": data.get("eval_rule"), "teachers": data["teachers"],
                "fold_models": [describe_model(path / t["dir"]) for t in data["teachers"]]}
    raise CpfdError(f"{path}: not a cpfd corpus, dump or model folder (no corpus.json, _manifest.json, config.json "
                    "or folds.json)")


def format_description(d: dict) -> str:
    """Human-readable text for `describe`'s output."""
    if d["kind"] == "corpus":
        lines = [
            f"corpus {d['path']}  (task {d['task']}, schema v{d['schema_version']})",
            f"  classes: {', '.join(d['classes'])}",
            f"  inputs: {d['frames_per_video']} frames of {d['image_size']}px per video"
            if d["frames_per_video"] else "  inputs: no frames",
            f"  text: {'title + ocr_text' if d['has_text'] else 'none'}",
            f"  privileged features ({len(d['privileged_features'])}): {', '.join(d['privileged_features']) or '-'}",
            f"  features ({len(d['features'])}): {', '.join(d['features']) or '-'}",
        ]
        for split, s in d["splits"].items():
            counts = ", ".join(f"{c} {n}" for c, n in s["label_counts"].items())
            lines.append(f"  {split}: {s['rows']} rows in {s['shards']} shard(s), {s['row_groups']} row group(s); {counts}")
        lines.append(f"  fingerprint: {d['fingerprint']}")
        return "\n".join(lines)
    if d["kind"] == "dump":
        return format_dump_description(d)
    if d["kind"] == "cross-fitted teacher":
        lines = [f"cross-fitted teacher {d['path']}  ({d['folds']} folds of DF-X-VLM)",
                 f"  fold rule: {d['rule']}", f"  eval split: {d['eval_rule']}"]
        lines += [f"  fold {t['fold']}: {d['path']}/{t['dir']}, trained on {t['training_rows']:,} rows "
                  f"(weights sha256 {t['weights_sha256'][:12]})" for t in d["teachers"]]
        return "\n".join(lines)
    inputs = [f"{d['frames_per_video']} frames of {d['image_size']}px ({d['vision_backbone']})" if d["frames_per_video"] else None,
              f"title + ocr_text ({d['text_backbone']})" if d["has_text"] else None,
              f"{len(d['features'])} features" if d["features"] else None,
              f"{len(d['privileged_features'])} privileged features" if d["privileged_features"] else None]
    lines = [
        f"model {d['path']}  ({d['architecture']}, {d['parameters']:,} parameters)" if d["parameters"] else
        f"model {d['path']}  ({d['architecture']}, no weights file)",
        f"  classes: {', '.join(d['classes'] or [])}",
        f"  inputs: {', '.join(i for i in inputs if i)}",
    ]
    t = d["training"]
    if t:
        best = ", ".join(f"validation {k[4:]} {v:.4f}" for k, v in t["best"].items()
                         if k in ("val_roc_auc", "val_pr_auc", "val_best_f1") and v == v)
        lines.append(f"  trained by: {t['command']}")
        lines.append(f"  {t['epochs']} epoch(s), best epoch {t['best_epoch']}" + (f": {best}" if best else ""))
        if t.get("distillation"):
            dist = t["distillation"]
            params = ", ".join(f"{k}={v:.4g}" for k, v in dist["params"].items())
            lines.append(f"  distillation: {dist['mapping']} ({params}), T = {dist['temperature']:g}")
    return "\n".join(lines)
