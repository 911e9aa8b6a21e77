"""Training checkpoints for `--resume`: one file, no pickle.

`checkpoint.safetensors` (`storage.model_folder.CHECKPOINT`) in the output folder holds every tensor of the training state (model
weights under `model.`, AdamW moments under `optimizer.`, the torch RNG under `rng.`), and its
safetensors metadata holds the rest as JSON: step, epoch, batches done in the epoch, running sums,
best score, the schedule's and optimizer's scalar state, numpy/python RNG, the options the run
was started with. It is written to a temp file and renamed, so a crash leaves the previous one.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from safetensors import safe_open

from cpfd.storage.atomic import atomic_file
from cpfd.storage.errors import CpfdError


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule, state: dict) -> None:
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, param_state in opt["state"].items():
        for name, value in param_state.items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        **state,
        "param_groups": opt["param_groups"],
        "schedule": schedule.state_dict(),  # lr_lambdas are closures: stored as None, rebuilt by the caller
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "rng_python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"cpfd.state": json.dumps(meta)})


STATE_KEYS = ("param_groups", "schedule", "rng_numpy", "rng_python", "progress", "record", "options")


def read_checkpoint(path: Path) -> dict:
    """The JSON state of a checkpoint (progress, record, options, ...), read and checked without
    touching any model: `--resume` compares it with the new run before restoring anything."""
    if not path.exists():
        raise CpfdError(f"{path}: no checkpoint to resume from (run without --resume)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["cpfd.state"])
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError, RecursionError) as e:
        raise CpfdError(f"{path}: not a readable checkpoint ({' '.join(str(e).split())})") from None
    if not isinstance(meta, dict) or any(k not in meta for k in STATE_KEYS) or not all(
            isinstance(meta[k], dict) for k in ("progress", "record", "options")):
        raise CpfdError(f"{path}: not a checkpoint of this cpfd version (its state lacks "
                        f"{', '.join(k for k in STATE_KEYS if not isinstance(meta, dict) or k not in meta) or 'the expected shape'}); "
                        "rerun without --resume")
    return meta


def restore_checkpoint(path: Path, meta: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       schedule) -> None:
    """Put model, optimizer, schedule and RNG back to the state `path` holds (`meta` from `read_checkpoint`)."""
    try:
        tensors = load_file(str(path))
        model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
        opt_state: dict = {}
        for key, value in tensors.items():
            if key.startswith("optimizer."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
        schedule.load_state_dict(meta["schedule"])
        torch.set_rng_state(tensors["rng.torch"])
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
        name, keys, *rest = meta["rng_numpy"]
        np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        version, internal, gauss = meta["rng_python"]
        random.setstate((version, tuple(internal), gauss))
    except (SafetensorError, KeyError, ValueError, TypeError, RuntimeError, OSError) as e:
        raise CpfdError(f"{path}: cannot restore the training state ({' '.join(str(e).split())[:300]})") from None
