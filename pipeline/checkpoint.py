"""Training checkpoints for `--resume`: one file, no pickle.

`checkpoint.safetensors` in the output folder holds every tensor of the training state (model
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

from cpfd.storage.atomic import commit, temp_path_for
from cpfd.storage.errors import CpfdError

CHECKPOINT = "checkpoint.safetensors"


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
    tmp = temp_path_for(path)
    save_file(tensors, str(tmp), metadata={"cpfd.state": json.dumps(meta)})
    commit(tmp, path)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, schedule) -> dict:
    """Restore model, optimizer, schedule and RNG from `path`; return the JSON state."""
    if not path.exists():
        raise CpfdError(f"{path}: no checkpoint to resume from (run without --resume)")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["cpfd.state"])
        tensors = load_file(str(path))
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as e:
        raise CpfdError(f"{path}: not a readable checkpoint ({e})") from None
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta.pop("param_groups")})
    schedule.load_state_dict(meta.pop("schedule"))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, *rest = meta.pop("rng_numpy")
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta.pop("rng_python")
    random.setstate((version, tuple(internal), gauss))
    return meta
