"""The device a command runs on, and the one forward pass outside training.

Every forward pass that is not a training step goes through `score_batches`: `cpfd evaluate`, the
eval pass after each epoch, `cpfd predict`, `cpfd dump-teacher` and its `--verify`, and the
report's serving-latency table. It puts the model in eval mode and gives back the mode it found,
turns autograd off, moves each batch to the device and runs it under the device's autocast
(bf16 on CUDA, plain float32 on the CPU), so all of them compute the same logits for the same rows.

    device = resolve_device("auto")                       # cuda (cuda:LOCAL_RANK under torchrun) or cpu
    labels, logits = score_batches(model, batches, device)   # (N,) int64, (N, C) float32 numpy
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from cpfd.pipeline.ranks import local_rank
from cpfd.storage.errors import CpfdError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """`--device`: auto = CUDA when available, else the CPU. Under torchrun each process takes the
    GPU of its LOCAL_RANK."""
    if name not in DEVICES:
        raise CpfdError(f"--device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise CpfdError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    local = local_rank()
    if local is None:
        return torch.device("cuda")
    if not local.isdigit() or int(local) >= torch.cuda.device_count():
        raise CpfdError(f"LOCAL_RANK={local!r}: expected a GPU index below {torch.cuda.device_count()} "
                        "(set by torchrun)")
    return torch.device("cuda", int(local))


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full float32 on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


def precision(device: torch.device) -> str:
    """What `autocast(device)` computes in, as dump shards record it."""
    return "bf16 autocast" if device.type == "cuda" else "float32"


def to_device(batch: dict, device: torch.device) -> dict:
    """Non-blocking copies: from pinned memory (DataLoader pin_memory) they overlap with compute."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@contextmanager
def inference(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside the block; the model gets back the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def forward_logits(model: torch.nn.Module, batch: dict, device: torch.device) -> torch.Tensor:
    """(B, C) float32 logits of one batch on `device`; call it inside `inference(model)`."""
    with autocast(device):
        return model(to_device(batch, device)).logits.float()


def score_batches(model: torch.nn.Module, batches: Iterable[dict], device: torch.device, *, progress: bool = False,
                  desc: str = "score", total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and logits (N, C) float32 of a model over batches, in batch order.

    Batches without `labels` (the serve path) give labels of -1.
    """
    labels, logits = [], []
    with inference(model):
        for batch in tqdm(batches, total=total, desc=desc, disable=not progress, leave=False):
            out = forward_logits(model, batch, device)
            logits.append(out.cpu().numpy())
            labels.append(batch["labels"].numpy() if "labels" in batch else np.full(len(out), -1))
    if not logits:
        num_classes = model.config.num_classes
        return np.zeros(0, dtype=np.int64), np.zeros((0, num_classes), dtype=np.float32)
    return np.concatenate(labels).astype(np.int64), np.concatenate(logits)
