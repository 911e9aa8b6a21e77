"""The model folder (docs/formats.md, "Model folder"): its file names, its atomic writes, and the checks on what is read back.

    MODEL/config.json               the model's config: architecture, sizes, classes, feature names and
                                    their training-split statistics; written last, so a folder counts
                                    as holding a model only once it is there
    MODEL/model.safetensors         the kept weights: safetensors only, no pickle is ever loaded
    MODEL/tokenizer/                the tokenizer, when the model reads text
    MODEL/training.json             command, resolved options, per-epoch metrics, `finished`
    MODEL/checkpoint.safetensors    the resumable training state (`pipeline.checkpoint`)

The modeling files (`student/xvlm.py`, `teacher/df_xvlm.py`) keep only `save_pretrained` /
`from_pretrained` methods that call `save_model_folder` / `load_model_folder` here, as Hugging
Face keeps file I/O out of its modeling files. Every write goes through `storage.atomic` (temp
file, fsync, rename); every read names the file and the problem in one `CpfdError`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cpfd.storage.atomic import atomic_file, atomic_write_bytes, atomic_write_json, fsync_dir
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import CONFIG, FOLDS, WEIGHTS, check_json

TRAINING = "training.json"
CHECKPOINT = "checkpoint.safetensors"
TOKENIZER = "tokenizer"
METRICS_LOG = "metrics.jsonl"  # a line every --log-every steps and per epoch (pipeline.training_log)
TENSORBOARD_DIR = "tensorboard"  # with --tensorboard: the same scalars as TensorBoard events
MODEL_FILES = (CONFIG, WEIGHTS, TRAINING, CHECKPOINT, TOKENIZER, METRICS_LOG, TENSORBOARD_DIR)

# A cross-fitted teacher (`train-teacher --folds K`) is a folder of K model folders, fold-0 ..
# fold-(K-1), and this file, written last: what the folder is and each fold's weights.
FOLDS_SHAPE = {
    "kind": str, "folds": int, "rule": str, "salt": str, "validation_fraction": (int, float),
    "teachers": [{"fold": int, "dir": str, "training_rows": int, "weights_sha256": str}],
}

# What every reader of config.json relies on (the model classes check every field when they build).
MODEL_CONFIG_SHAPE = {
    "architecture": str, "num_classes": int, "classes": [str], "frames_per_video": int, "image_size": int,
    "has_text": bool, "max_length": int, "vision_config": dict, "text_config": dict, "feature_names": [str],
    "privileged_features?": [str],
}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def save_model_folder(directory: str | os.PathLike, config: dict[str, Any],
                      state_dict: dict[str, torch.Tensor]) -> None:
    """Write the weights, then config.json last and atomically: the folder counts as written only then."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Overwriting a folder: drop the old config first, so a crash never pairs it with new weights.
    (directory / CONFIG).unlink(missing_ok=True)
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    with atomic_file(directory / WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    atomic_write_bytes(directory / CONFIG, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())


def write_training_record(directory: str | os.PathLike, record: dict) -> None:
    atomic_write_json(Path(directory) / TRAINING, record)


def prepare_model_dir(out: Path, overwrite: bool, resume: bool) -> None:
    """A new model folder, or (with `resume`) the folder of an interrupted run.

    A folder holding an unfinished run (a checkpoint, training.json not finished) points at
    `--resume`; a finished model is replaced only with `overwrite`, and then its config.json goes
    first, so a crash never leaves the old config beside new weights.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    if resume:
        if not (out / CHECKPOINT).exists():
            raise CpfdError(f"{out}: no {CHECKPOINT} to resume from (run without --resume)")
        return
    if not overwrite:
        if training_finished(out):
            raise CpfdError(f"{out} already holds a model ({CONFIG}); pass --overwrite to replace it")
        if (out / CHECKPOINT).exists():
            raise CpfdError(f"{out} holds an unfinished run ({CHECKPOINT}); pass --resume to continue it, "
                            "or --overwrite to start again")
        if (out / CONFIG).exists():
            raise CpfdError(f"{out} already holds a model ({CONFIG}); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG, TRAINING, CHECKPOINT):
        (out / name).unlink(missing_ok=True)
    fsync_dir(out)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_json_object(path: Path, what: str) -> dict:
    """A JSON file that must hold an object; CpfdError naming the file otherwise."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise CpfdError(f"{path}: not a readable JSON {what} ({one_line(error)})") from None
    if not isinstance(data, dict):
        raise CpfdError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_model_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a model folder as a dict; a CpfdError naming the file if it is absent or broken."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CpfdError(f"{directory}: model folder not found")
    path = directory / CONFIG
    if not path.is_file():
        raise CpfdError(f"{path}: missing (the model folder was never completely written)")
    config = read_json_object(path, "config")
    check_json(config, MODEL_CONFIG_SHAPE, str(path))
    return config


def read_metrics_log(path: str | os.PathLike) -> list[dict]:
    """The lines of a model folder's metrics.jsonl (or of the file `path`); none when it is missing. A
    line that is not a JSON object with a step (a torn last line, after a crash) is left out."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_LOG
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return []
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            continue
        if isinstance(line, dict) and isinstance(line.get("step"), int):
            lines.append(line)
    return lines


def read_training_record(directory: str | os.PathLike) -> dict | None:
    """training.json, or None when the folder has none; its `epochs` must be a list of objects."""
    path = Path(directory) / TRAINING
    if not path.exists():
        return None
    record = read_json_object(path, "training record")
    epochs = record.get("epochs", [])
    if not isinstance(epochs, list) or not all(isinstance(e, dict) for e in epochs):
        raise CpfdError(f"{path}: 'epochs' must be a list of objects")
    best = record.get("best_epoch")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or not 1 <= best <= len(epochs)):
        raise CpfdError(f"{path}: 'best_epoch' {best!r} does not name one of its {len(epochs)} epochs")
    return record


def training_finished(directory: str | os.PathLike) -> bool:
    """True when the folder holds a model whose training ran to its end."""
    if not (Path(directory) / CONFIG).exists():
        return False
    record = read_training_record(directory)
    return bool(record and record.get("finished"))


def load_model_folder(model_class: type[torch.nn.Module], directory: str | os.PathLike, device: str = "cpu"):
    """Build `model_class` from config.json and fill it from model.safetensors, checking both.

    `model_class.config_class` must have `architecture` and `from_dict`.
    """
    directory = Path(directory)
    config_path = directory / CONFIG
    data = read_model_config(directory)
    expected = model_class.config_class.architecture
    if data.get("architecture") != expected:
        raise CpfdError(f"{config_path}: architecture is {data.get('architecture')!r}, expected {expected!r} "
                        f"(a teacher folder is DF-X-VLM, a student folder X-VLM)")
    try:
        model = model_class(model_class.config_class.from_dict(data))
    except (TypeError, ValueError, KeyError, AttributeError, OSError) as error:
        raise CpfdError(f"{config_path}: cannot build the model ({one_line(error)})") from None
    model.load_state_dict(read_weights(directory, model.state_dict()))
    return model.to(device)


def read_weights(directory: str | os.PathLike, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """model.safetensors, checked against the tensor names and shapes a model expects."""
    path = Path(directory) / WEIGHTS
    if not path.is_file():
        if (Path(directory) / "pytorch_model.bin").exists():
            raise CpfdError(f"{path}: missing; cpfd reads safetensors only, never pickled pytorch_model.bin")
        raise CpfdError(f"{path}: missing")
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CpfdError(f"{path}: not a readable safetensors file ({one_line(error)})") from None
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    wrong = [f"{key} is {list(weights[key].shape)} in the file, {list(expected[key].shape)} in {CONFIG}"
             for key in sorted(set(weights) & set(expected)) if weights[key].shape != expected[key].shape]
    if missing or unexpected or wrong:
        raise CpfdError(f"{path}: weights do not match {CONFIG}: " + describe_differences(missing, unexpected, wrong))
    return weights


def describe_differences(missing: list[str], unexpected: list[str], wrong: list[str]) -> str:
    parts = [f"{len(names)} {what} (e.g. {names[0]})"
             for names, what in ((missing, "tensors missing"), (unexpected, "unexpected tensors"),
                                 (wrong, "of another shape")) if names]
    return "; ".join(parts)


# --------------------------------------------------------------------------------------------
# Cross-fitted teachers
# --------------------------------------------------------------------------------------------


def is_cross_fitted(directory: str | os.PathLike) -> bool:
    return (Path(directory) / FOLDS).exists()


def read_folds(directory: str | os.PathLike) -> dict:
    """folds.json of a cross-fitted teacher, checked: K fold folders fold-0 .. fold-(K-1), each there."""
    directory = Path(directory)
    path = directory / FOLDS
    data = read_json_object(path, "cross-fit record")
    check_json(data, FOLDS_SHAPE, str(path))
    if data["folds"] < 2 or [t["fold"] for t in data["teachers"]] != list(range(data["folds"])):
        raise CpfdError(f"{path}: expected teachers for folds 0..{data['folds'] - 1}, in order")
    for teacher in data["teachers"]:
        if teacher["dir"] != f"fold-{teacher['fold']}" or not (directory / teacher["dir"] / CONFIG).exists():
            raise CpfdError(f"{path}: fold {teacher['fold']}'s model folder {directory / teacher['dir']} is missing")
    return data


def write_folds(directory: str | os.PathLike, data: dict) -> None:
    atomic_write_json(Path(directory) / FOLDS, data)
