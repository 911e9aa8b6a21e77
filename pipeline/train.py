"""The one training loop every stage shares: teacher, baseline student, and distillation.

Stages differ only in the model, the columns their dataset reads, and `loss_fn(output, batch)`,
which returns the scalar loss and a flat dict of numbers to show (distillation adds `alpha`).
Read `train()` top to bottom: AdamW, linear warm-up then linear decay, gradient clipping,
evaluation on the eval split after each epoch, the best epoch's weights kept in `out_dir`, a tqdm
bar with loss and samples/s, and `training.json` rewritten (atomically) after every epoch.

Launch: one process (`cpfd train-student ...`) on the CPU or one GPU. With `--device auto` a GPU
is used when present, under bf16 autocast. Same seed, same data, same machine -> same weights on
the CPU.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cpfd.pipeline.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from cpfd.pipeline.data import CorpusBatches, make_loader
from cpfd.pipeline.metrics import classification_metrics
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.errors import CpfdError

LossFn = Callable[[object, dict], tuple[torch.Tensor, dict]]


@dataclass
class TrainOptions:
    epochs: int = 5
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # share of all steps spent warming up linearly from 0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    select_metric: str = "roc_auc"  # eval metric that picks the kept epoch
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: at epoch ends only)
    progress: bool = True


# A resumed run continues the interrupted one: options that change its trajectory must agree.
RESUME_RECORD_KEYS = ("stage", "corpus", "dump", "distillation")  # the data and the loss
RESUME_MUST_MATCH = ("epochs", "max_steps", "batch_size", "lr", "weight_decay", "warmup_ratio", "max_grad_norm", "seed")


def cross_entropy_loss(output, batch: dict) -> tuple[torch.Tensor, dict]:
    """The plain supervised loss: what the teacher and the baseline student train with."""
    return F.cross_entropy(output.logits.float(), batch["labels"]), {}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CpfdError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise CpfdError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full float32 on the CPU (exact, repeatable)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def warmup_then_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


@torch.no_grad()
def predict_logits(model, dataset: CorpusBatches, device: torch.device, num_workers: int = 0,
                   progress: bool = False, desc: str = "predict") -> tuple[np.ndarray, np.ndarray]:
    """Labels (N,) and logits (N, C) of a model over a dataset, in dataset order."""
    model.eval()
    labels, logits = [], []
    for batch in tqdm(make_loader(dataset, num_workers), total=len(dataset), desc=desc, disable=not progress, leave=False):
        batch = to_device(batch, device)
        with autocast(device):
            out = model(batch)
        labels.append(batch["labels"].cpu().numpy())
        logits.append(out.logits.float().cpu().numpy())
    if not labels:
        return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(labels), np.concatenate(logits)


def train(
    model: torch.nn.Module,
    train_set: CorpusBatches,
    eval_set: CorpusBatches | None,
    loss_fn: LossFn,
    out_dir: Path,
    options: TrainOptions,
    record: dict,
    resume: bool = False,
) -> dict:
    """Train `model`, keep the best epoch's weights in `out_dir`, return the training record.

    `record` (command, corpus, resolved options...) is written to `out_dir/training.json`
    together with one metrics dict per epoch. A checkpoint (model, optimizer, schedule, step,
    RNG, position in the data) is written every `options.checkpoint_every` steps and at every
    epoch end; `resume=True` continues from it and ends with the weights an uninterrupted run
    would have reached.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(options.seed)
    device = resolve_device(options.device)
    model.to(device)

    steps_per_epoch = len(train_set)
    total_steps = options.max_steps or options.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch) if steps_per_epoch else 0
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)  # no weight decay on biases and norms
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": options.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=options.lr,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear_decay(int(options.warmup_ratio * total_steps), total_steps)
    )

    record = {**record, "options": {**record.get("options", {}), **asdict(options)}, "device": str(device), "epochs": []}
    position = {"step": 0, "epoch": 0, "batches": 0, "sums": {"loss": 0.0}, "seen": 0, "best_score": -math.inf}
    checkpoint = out_dir / CHECKPOINT
    if resume:
        state = load_checkpoint(checkpoint, model, optimizer, schedule)
        changed = [k for k in RESUME_MUST_MATCH if state["options"].get(k) != getattr(options, k)]
        if changed:
            raise CpfdError(f"{checkpoint}: --resume needs the options of the interrupted run; "
                            + ", ".join(f"{k} was {state['options'].get(k)!r}, now {getattr(options, k)!r}" for k in changed))
        moved = [k for k in RESUME_RECORD_KEYS if json.dumps(state["record"].get(k), sort_keys=True, default=str)
                 != json.dumps(record.get(k), sort_keys=True, default=str)]
        if moved:
            raise CpfdError(f"{checkpoint}: --resume needs the inputs of the interrupted run; "
                            + "; ".join(f"{k} was {state['record'].get(k)}, now {record.get(k)}" for k in moved))
        position, record = state["position"], state["record"]

    def save(position: dict) -> None:
        save_checkpoint(checkpoint, model, optimizer, schedule,
                        {"position": position, "record": record, "options": asdict(options)})

    step = position["step"]
    for epoch in range(position["epoch"], epochs):
        resumed = epoch == position["epoch"] and position["batches"] > 0
        batches = position["batches"] if resumed else 0
        sums, seen = (dict(position["sums"]), position["seen"]) if resumed else ({"loss": 0.0}, 0)
        train_set.set_epoch(epoch, skip_batches=batches)
        model.train()
        bar = tqdm(make_loader(train_set, options.num_workers), total=steps_per_epoch, initial=batches,
                   disable=not options.progress, desc=f"epoch {epoch + 1}/{epochs}", file=sys.stderr)
        seen_here, start = 0, time.perf_counter()
        for batch in bar:
            batch = to_device(batch, device)
            with autocast(device):
                output = model(batch)
                loss, shown = loss_fn(output, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            batches += 1

            n = len(batch["labels"])
            seen += n
            seen_here += n
            sums["loss"] += loss.item() * n
            for k, v in shown.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", **{k: f"{v / seen:.3f}" for k, v in sums.items() if k != "loss"},
                            samples_s=f"{seen_here / (time.perf_counter() - start):.0f}")
            if options.checkpoint_every and step % options.checkpoint_every == 0 and step < total_steps:
                save({**position, "step": step, "epoch": epoch, "batches": batches, "sums": sums, "seen": seen})
            if step >= total_steps:
                break
        bar.close()

        metrics = {"epoch": epoch + 1, "step": step, "lr": schedule.get_last_lr()[0],
                   "samples_per_s": seen_here / max(time.perf_counter() - start, 1e-9),
                   **{f"train_{k}": v / max(seen, 1) for k, v in sums.items()}}
        if eval_set is not None:
            labels, logits = predict_logits(model, eval_set, device, options.num_workers)
            metrics.update({f"eval_{k}": v for k, v in classification_metrics(labels, logits).items()})
            model.train()
        score = metrics.get(f"eval_{options.select_metric}", -metrics["train_loss"])
        score = -math.inf if score != score else score  # NaN never wins
        if score > position["best_score"] or "best_epoch" not in record:
            position["best_score"] = score
            model.save_pretrained(out_dir)
            record["best_epoch"] = epoch + 1
        record["epochs"].append(metrics)
        atomic_write_json(out_dir / "training.json", record)
        position = {**position, "step": step, "epoch": epoch + 1, "batches": 0, "sums": {"loss": 0.0}, "seen": 0}
        save(position)
        if options.progress:
            shown = ", ".join(f"{k[5:]} {metrics[k]:.4f}" for k in ("eval_roc_auc", "eval_pr_auc", "eval_f1") if k in metrics)
            tqdm.write(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.4f}" + (f"; eval {shown}" if shown else ""), file=sys.stderr)
    record["finished"] = True  # what `cpfd experiment` checks before reusing a model folder
    atomic_write_json(out_dir / "training.json", record)
    return record
