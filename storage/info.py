"""`cpfd info PATH`: what a corpus, teacher dump or model folder holds."""

from __future__ import annotations

from pathlib import Path

from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST, describe_dump, format_dump_description
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import (
    CONFIG,
    METRICS_LOG,
    TENSORBOARD_DIR,
    TOKENIZER,
    WEIGHTS,
    is_cross_fitted,
    read_folds,
    read_metrics_log,
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
        "logs": summarize_logs(path),
    }


def summarize_logs(path: Path) -> dict:
    """Where a model folder's training logs are, and what they say: the steps logged, each validation
    metric's best and last epoch, the last train line. {} when the folder has no metrics.jsonl."""
    lines = read_metrics_log(path)
    if not (path / METRICS_LOG).exists():
        return {}
    train = [line for line in lines if line.get("kind") == "train"]
    val = [line for line in lines if line.get("kind") == "val"]
    validation = {}
    for name, lower_is_better in (("roc_auc", False), ("pr_auc", False), ("log_loss", True)):
        seen = [(line[name], line["epoch"]) for line in val if isinstance(line.get(name), (int, float)) and line[name] == line[name]]
        if seen:
            best = (min if lower_is_better else max)(seen, key=lambda v: v[0])
            validation[name] = {"best": best[0], "best_epoch": best[1], "last": seen[-1][0], "last_epoch": seen[-1][1]}
    tensorboard = path / TENSORBOARD_DIR
    return {"metrics": str(path / METRICS_LOG), "tensorboard": str(tensorboard) if tensorboard.is_dir() else None,
            "train_lines": len(train), "steps": train[-1]["step"] if train else 0, "val_lines": len(val),
            "validation": validation, "last": train[-1] if train else None}


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
    lines += format_logs(d.get("logs") or {})
    return "\n".join(lines)


def format_logs(logs: dict) -> list[str]:
    if not logs:
        return []
    where = logs["metrics"] + (f", {logs['tensorboard']}/ (tensorboard --logdir {logs['tensorboard']})"
                               if logs["tensorboard"] else "")
    lines = [f"  logs: {where}",
             f"    {logs['steps']} steps in {logs['train_lines']} train line(s), {logs['val_lines']} validation line(s)"]
    shown = [f"{name} best {v['best']:.4f} (epoch {v['best_epoch']}), last {v['last']:.4f} (epoch {v['last_epoch']})"
             for name, v in logs["validation"].items()]
    if shown:
        lines.append(f"    validation: {'; '.join(shown)}")
    last = logs.get("last")
    if last:
        parts = [f"{k} {last[k]:.4f}" for k in ("loss", "ce", "kd", "kd_weighted") if k in last]
        if "alpha_mean" in last:
            parts.append(f"alpha mean {last['alpha_mean']:.3f} (p10 {last['alpha_p10']:.3f}, p90 {last['alpha_p90']:.3f})")
        lines.append(f"    last train line (step {last['step']}): {', '.join(parts)}")
    return lines
