"""Training checkpoints for `--resume`: one file, no pickle.

`checkpoint.safetensors` (`storage.model_folder.CHECKPOINT`) in the output folder holds every tensor
of the training state (model weights under `model.`, AdamW moments under `optimizer.`, each rank's
torch RNG under `rng.<rank>.`), and its safetensors metadata holds the rest as JSON: step, epoch,
batches done in the epoch, running sums, best score, the schedule's and optimizer's scalar state,
each rank's numpy/python RNG, the number of processes, the options the run was started with. Under
torchrun the weights and optimizer state are the same on every rank (DDP keeps them so) and rank 0
writes them; the RNG states come from every rank (`rng_state` there, gathered). It is written to a
temp file and renamed, so a crash leaves the previous one.
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


def rng_state(device: torch.device) -> dict:
    """This process's random state: torch (CPU, and the GPU it trains on), numpy, Python."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    schedule, state: dict, rng_states: list[dict]) -> None:
    """Write the training state; `rng_states` holds every rank's `rng_state()`, in rank order."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, param_state in opt["state"].items():
        for name, value in param_state.items():
            tensors[f"optimizer.{index}.{name}"] = value.detach().cpu().contiguous()
    for rank, rng in enumerate(rng_states):
        tensors[f"rng.{rank}.torch"] = rng["torch"]
        if rng["cuda"] is not None:
            tensors[f"rng.{rank}.cuda"] = rng["cuda"]
    meta = {
        **state,
        "world_size": len(rng_states),
        "param_groups": opt["param_groups"],
        "schedule": schedule.state_dict(),  # lr_lambdas are closures: stored as None, rebuilt by the caller
        "rng": [{"numpy": rng["numpy"], "python": rng["python"]} for rng in rng_states],
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata={"cpfd.state": json.dumps(meta)})


STATE_KEYS = ("param_groups", "schedule", "rng", "world_size", "progress", "record", "options")


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
                       schedule, rank: int = 0, device: torch.device = torch.device("cpu")) -> None:
    """Put model, optimizer, schedule and rank `rank`'s RNG back to the state `path` holds (`meta`
    from `read_checkpoint`)."""
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
        set_rng_state({**meta["rng"][rank], "torch": tensors[f"rng.{rank}.torch"],
                       "cuda": tensors.get(f"rng.{rank}.cuda")}, device)
    except (SafetensorError, KeyError, IndexError, ValueError, TypeError, RuntimeError, OSError) as e:
        raise CpfdError(f"{path}: cannot restore the training state ({' '.join(str(e).split())[:300]})") from None
