"""The one training loop every stage shares: teacher, baseline student, and distillation.

Stages differ only in the model, the columns their dataset reads, and `loss_fn(output, batch)`,
which returns the per-sample losses and a flat dict of per-sample tensors to show (distillation
adds `alpha`); the loop averages them over the step's rows.
`train()` reads top to bottom like a recipe: `start_run` (device, optimizer, schedule, resume),
then per epoch `run_epoch` (the steps: forward, backward, clip, step; the epoch's numbers) and
`end_epoch` (the evaluation, the kept epoch, `training.json` and the checkpoint), then `finish_run`.

- AdamW (no weight decay on biases and norms), linear warm-up then linear decay to 0, gradient
  clipping at norm `max_grad_norm`.
- Running sums of the loss (and of what the stage shows) stay on the device; the host reads them
  every `PROGRESS_EVERY` steps for the progress bar, at checkpoints and at the epoch's end. A NaN
  or infinite loss stops the run there with one line naming the first step it appeared at.
- After each epoch, the validation split (ids of the train split hashed aside, `--val-fraction`)
  is scored (`pipeline.scoring.score_batches`) and the epoch with the best `select_metric` there
  is saved to the model folder (a tie goes to the lower validation log loss, then the later
  epoch). The eval split is never looked at here: it only reports (`cpfd evaluate`).
- Every `--log-every` steps the host reads the device's sums and writes a line of
  OUT/metrics.jsonl (`pipeline.training_log`); after each epoch, a line of validation metrics.
- The schedule: `--epochs N`, or by default enough epochs for `min_steps` optimizer steps
  (`TrainOptions.resolve_epochs`), recorded in training.json with the validation split's size.

Launch: one process (`cpfd train-student ...`) on the CPU or one GPU, or N processes under
`torchrun` (`pipeline.distributed`): the model is wrapped in DistributedDataParallel, each rank
reads its share of the row groups, `--batch-size` is the global batch (B / N rows per rank), and
the loss is sum(w * l) * N / (rows of all ranks), so the gradient DDP averages is the mean over
the step's rows, as in one process. An epoch takes as many steps on every rank as its busiest rank
has batches; a rank out of rows repeats its last batch at weight 0 (`data.weighted`), so no rank
waits for another. Validation is scored in shares and rank 0 computes the metrics for all;
rank 0 alone writes the folder, and the checkpoint holds every rank's RNG. With `--device auto`
a GPU is used when present, under bf16 autocast. Same seed, same data, same machine: the same
weights within float rounding (docs/method.md, "What repeats exactly").
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from torch.nn.parallel import DistributedDataParallel

from cpfd.pipeline import distributed
from cpfd.pipeline.checkpoint import read_checkpoint, restore_checkpoint, rng_state, save_checkpoint
from cpfd.pipeline.data import CorpusBatches, make_loader, weighted
from cpfd.pipeline.metrics import classification_metrics
from cpfd.pipeline.options import TrainOptions
from cpfd.pipeline.scoring import autocast, resolve_device, score_batches, to_device
from cpfd.pipeline.training_log import ALPHA_BINS, TrainingLog, add_window, train_line, val_line
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import CHECKPOINT, write_training_record

# loss_fn(output, batch) -> (per-sample losses (B,), {name: per-sample values (B,) to show})
LossFn = Callable[[object, dict], tuple[torch.Tensor, dict]]

# Steps between two reads of the running sums by the host when nothing is logged (--log-every 0):
# the progress bar's numbers.
PROGRESS_EVERY = 20


@dataclass
class Progress:
    """Where a run stands; every checkpoint holds it, so `--resume` continues from it."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epochs finished
    batches: int = 0  # steps done in the current epoch
    sums: dict = field(default_factory=dict)  # the epoch's rows and per-sample sums of the shown numbers, all ranks
    best_score: float = -math.inf
    best_tiebreak: float = -math.inf  # the kept epoch's -validation log loss: what breaks a tie of best_score
    log_window: dict = field(default_factory=dict)  # sums since the last metrics.jsonl line (RunningSums.read)
    log_seconds: float = 0.0  # seconds of training steps since that line


# A resumed run continues the interrupted one: options that change its trajectory must agree.
RESUME_RECORD_KEYS = ("stage", "corpus", "dump", "distillation")  # the data and the loss
RESUME_MUST_MATCH = ("epochs", "min_steps", "max_steps", "val_fraction", "batch_size", "lr", "weight_decay",
                     "warmup_ratio", "max_grad_norm", "seed",
                     "num_workers")  # with the number of processes: how an epoch's rows are dealt out


def cross_entropy_loss(output, batch: dict) -> tuple[torch.Tensor, dict]:
    """The plain supervised loss, per sample: what the teacher and the baseline student train with."""
    return F.cross_entropy(output.logits.float(), batch["labels"], reduction="none"), {}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_then_linear_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def adamw(model: torch.nn.Module, options: TrainOptions) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and norm weights (ndim < 2) are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": options.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=options.lr)


def check_resume(state: dict, options: TrainOptions, record: dict, checkpoint: Path) -> None:
    """A resume must continue the same run: the same trajectory options, the same number of processes,
    and the same data and loss."""
    if state.get("world_size") != distributed.world():
        raise CpfdError(f"{checkpoint}: the interrupted run trained on {state.get('world_size')} process(es), "
                        f"this one on {distributed.world()}; resume it with the same number (torchrun --nproc-per-node)")
    saved = state.get("options") or {}
    changed = [k for k in RESUME_MUST_MATCH if saved.get(k) != getattr(options, k)]
    if changed:
        raise CpfdError(f"{checkpoint}: --resume needs the options of the interrupted run; "
                        + ", ".join(f"{k} was {saved.get(k)!r}, now {getattr(options, k)!r}" for k in changed))
    before = state.get("record") or {}
    moved = [k for k in RESUME_RECORD_KEYS if json.dumps(before.get(k), sort_keys=True, default=str)
             != json.dumps(record.get(k), sort_keys=True, default=str)]
    if moved:
        raise CpfdError(f"{checkpoint}: --resume needs the inputs of the interrupted run; "
                        + "; ".join(f"{k} was {before.get(k)}, now {record.get(k)}" for k in moved))
    before_model, model = (before.get("options") or {}).get("model"), (record.get("options") or {}).get("model")
    if before_model != model:
        changed = sorted(k for k in set(before_model or {}) | set(model or {})
                         if (before_model or {}).get(k) != (model or {}).get(k))
        raise CpfdError(f"{checkpoint}: --resume needs the model options of the interrupted run; "
                        + ", ".join(f"{k} was {(before_model or {}).get(k)!r}, now {(model or {}).get(k)!r}"
                                    for k in changed))


def read_resumable(checkpoint: Path, options: TrainOptions, record: dict) -> dict:
    """The state of the checkpoint a run resumes from, once it is known to continue the same run."""
    state = read_checkpoint(checkpoint)
    check_resume(state, options, record, checkpoint)
    return state


class RunningSums:
    """Per-sample sums of the loss and the shown numbers over the rows of the steps since the last
    `read`, kept on the device (no host sync per step), with alpha's histogram (when the stage shows
    alpha) and the sum of the steps' gradient norms. `rows` counts the rows (padding rows of a rank
    that ran out weigh 0).

    `read()` brings the sums over all ranks to the host and starts a new window (a collective: every
    rank calls it at the same step); it raises CpfdError if a loss since the last read was NaN or
    infinite, naming the first step where it was.
    """

    def __init__(self, step: int, device: torch.device, histogram: bool = True):
        self.device = device
        self.histogram = histogram  # alpha's histogram: for metrics.jsonl's percentiles only
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None  # (len(names),) float64
        self.hist: torch.Tensor | None = None  # (ALPHA_BINS,) float64, when alpha is shown
        self.grad_norm = torch.zeros((), dtype=torch.float64, device=device)
        self.steps = 0
        self.step = torch.tensor(step, device=device)
        self.first_bad_step = torch.tensor(-1, device=device)

    def add(self, losses: torch.Tensor, shown: dict, weight: torch.Tensor, grad_norm: torch.Tensor) -> None:
        self.step += 1
        self.steps += 1
        weight = weight.detach().to(torch.float64)
        losses = losses.detach().to(torch.float64)
        finite = torch.isfinite(torch.where(weight > 0, losses, 0.0)).all()
        self.first_bad_step = torch.where((self.first_bad_step < 0) & ~finite, self.step, self.first_bad_step)
        if not self.names:
            self.names = ["rows", "loss", *shown]
        values = torch.stack([torch.ones_like(losses), losses, *(v.detach().to(torch.float64) for v in shown.values())])
        step_sums = (torch.where(weight > 0, values, 0.0) * weight).sum(1)  # (names,)
        self.sums = step_sums if self.sums is None else self.sums + step_sums
        if self.histogram and "alpha" in shown:
            bins = (shown["alpha"].detach().float() * ALPHA_BINS).long().clamp(0, ALPHA_BINS - 1)
            counts = torch.bincount(bins, weights=weight, minlength=ALPHA_BINS)
            self.hist = counts if self.hist is None else self.hist + counts
        self.grad_norm = self.grad_norm + grad_norm.detach().to(torch.float64)

    def read(self) -> dict:
        """{"rows", "loss", shown names..., "steps", "grad_norm" (summed over the steps, averaged over
        ranks), "alpha_hist" (when shown)} over all ranks since the last read; {} when no step ran."""
        if self.sums is None:
            return {}
        never = torch.iinfo(torch.int64).max
        bad = int(distributed.all_min(torch.where(self.first_bad_step < 0, never, self.first_bad_step)))
        if bad != never:
            raise CpfdError(f"training diverged: the loss is NaN or infinite at step {bad} "
                            "(lower --lr, or check the inputs for extreme values)")
        parts = [self.sums, *([self.hist] if self.hist is not None else []), self.grad_norm.view(1)]
        totals = distributed.all_sum(torch.cat(parts)).tolist()
        window = dict(zip(self.names, totals[:len(self.names)]))
        if self.hist is not None:
            window["alpha_hist"] = totals[len(self.names):-1]
        window["grad_norm"] = totals[-1] / distributed.world()  # every rank clipped the same gradient
        window["steps"] = self.steps
        self.sums = torch.zeros_like(self.sums)
        self.hist = torch.zeros_like(self.hist) if self.hist is not None else None
        self.grad_norm = torch.zeros_like(self.grad_norm)
        self.steps = 0
        return window


def evaluate(model: torch.nn.Module, dataset: CorpusBatches, device: torch.device, num_workers: int = 0) -> dict:
    """Metrics of the model on a dataset (its validation split), through the one scoring path.

    Under torchrun each rank scores its share of the rows; rank 0 computes the metrics over all of
    them and every rank gets the same numbers (so the same epoch is kept everywhere)."""
    labels, logits = score_batches(model, make_loader(dataset, num_workers, pin_memory=device.type == "cuda"), device)
    if distributed.world() == 1:
        return classification_metrics(labels, logits)
    shares = distributed.gather((labels, logits))
    return distributed.on_main(lambda: classification_metrics(np.concatenate([s[0] for s in shares]),
                                                              np.concatenate([s[1] for s in shares])))


def plan_epochs(train_set: CorpusBatches, options: TrainOptions, world: int) -> tuple[list[int], str]:
    """(optimizer steps of each epoch, rule). An epoch takes as many steps as its busiest rank has
    batches (`CorpusBatches.steps`); the schedule is --epochs, --max-steps, or the auto rule on the
    first epoch's steps, and the steps of the last epoch stop at --max-steps."""
    def steps_of(epoch: int) -> int:
        return train_set.steps(epoch, world, options.num_workers)

    epochs, rule = options.resolve_epochs(steps_of(0))
    if not options.max_steps:
        return [steps_of(e) for e in range(epochs)], rule
    plan, left = [], options.max_steps
    while left > 0:
        plan.append(min(steps_of(len(plan)), left))
        left -= plan[-1]
    return plan, "max_steps"


def weighted_loss(losses: torch.Tensor, weight: torch.Tensor, world: int) -> torch.Tensor:
    """This rank's share of the mean loss over the global batch: sum(w * l) * world / (rows of all ranks).

    DDP averages the gradients of `world` ranks, so the gradient is that of the mean over every real
    row of the step, as one process over the same rows computes it (padding rows weigh 0)."""
    rows = distributed.all_sum(weight.sum())
    return (torch.where(weight > 0, losses, 0.0) * weight).sum() * world / rows.clamp_min(1)


@dataclass
class Run:
    """A training run between its steps: what `start_run` sets up and `run_epoch` / `end_epoch` advance."""

    model: torch.nn.Module
    ddp: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    optimizer: torch.optim.Optimizer
    schedule: torch.optim.lr_scheduler.LambdaLR
    device: torch.device
    plan: list[int]  # optimizer steps of each epoch
    record: dict  # what training.json holds
    progress: Progress
    out_dir: Path
    options: TrainOptions
    log: TrainingLog  # OUT/metrics.jsonl (and TensorBoard events), rank 0
    clock: float = 0.0  # when the steps since the last read of the sums began

    def save_progress(self) -> None:
        """The checkpoint: model, optimizer, schedule, progress, record, every rank's RNG (rank 0 writes)."""
        rng = distributed.gather(rng_state(self.device))  # every rank's
        if distributed.is_main():
            save_checkpoint(self.out_dir / CHECKPOINT, self.model, self.optimizer, self.schedule,
                            {"progress": asdict(self.progress), "record": self.record, "options": asdict(self.options)},
                            rng)


def train(
    model: torch.nn.Module,
    train_set: CorpusBatches,
    val_set: CorpusBatches | None,
    loss_fn: LossFn,
    out_dir: Path,
    options: TrainOptions,
    record: dict,
    resume: bool = False,
) -> dict:
    """Train `model`, keep the best epoch's weights in `out_dir`, return the training record.

    `record` (command, corpus, resolved options...) is written to `out_dir/training.json`
    together with one metrics dict per epoch. A checkpoint (model, optimizer, schedule, progress,
    RNG) is written every `options.checkpoint_every` steps and at every epoch end; `resume=True`
    continues from it and ends with the weights an uninterrupted run would have reached.
    Under torchrun every rank calls this; rank 0 alone writes `out_dir`.
    """
    run = start_run(model, train_set, val_set, Path(out_dir), options, record, resume)
    for epoch in range(run.progress.epoch, len(run.plan)):
        metrics = run_epoch(run, epoch, train_set, loss_fn)
        end_epoch(run, epoch, metrics, val_set)
    return finish_run(run)


def start_run(model: torch.nn.Module, train_set: CorpusBatches, val_set: CorpusBatches | None, out_dir: Path,
              options: TrainOptions, record: dict, resume: bool) -> Run:
    """The set-up: device, schedule of epochs, AdamW and its learning-rate schedule, the record, the
    seed of this rank, the checkpoint a resume continues from, and DDP under torchrun."""
    world, rank = distributed.world(), distributed.rank()
    if distributed.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(options.device)
    model.to(device)
    plan, rule = plan_epochs(train_set, options, world)
    total_steps = sum(plan)
    optimizer = adamw(model, options)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_then_linear_decay(int(options.warmup_ratio * total_steps), total_steps))
    record = {**record, "options": {**record.get("options", {}), **asdict(options)}, "device": str(device),
              "processes": world,
              "schedule": {"rule": rule, "epochs": len(plan), "steps": total_steps,
                           "steps_per_epoch": plan[0], "min_steps": options.min_steps},
              "training_rows": train_set.num_rows,
              "validation": {"fraction": options.val_fraction, "rows": val_set.num_rows if val_set is not None else 0},
              "epochs": []}
    progress = Progress()
    checkpoint = out_dir / CHECKPOINT
    set_seed((options.seed + rank) % 2**32)  # dropout differs between ranks; one process draws as before
    if resume:
        state = distributed.on_main(lambda: read_resumable(checkpoint, options, record))
        try:
            progress = Progress(**state["progress"])
        except TypeError:
            raise CpfdError(f"{checkpoint}: not a checkpoint of this cpfd version; rerun without --resume") from None
        restore_checkpoint(checkpoint, state, model, optimizer, schedule, rank, device)
        record = state["record"]
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if world > 1 else model
    log = TrainingLog(out_dir, enabled=distributed.is_main() and options.log_every > 0,
                      tensorboard=options.tensorboard, resume_step=progress.step if resume else None)
    return Run(model, ddp, optimizer, schedule, device, plan, record, progress, out_dir, options, log)


def run_epoch(run: Run, epoch: int, train_set: CorpusBatches, loss_fn: LossFn) -> dict:
    """The epoch's optimizer steps (forward, the stage's loss, backward, clip, update), from where a
    resumed run stopped; returns its flat metrics dict (means of the loss and shown numbers, rate).
    Every --log-every steps (and at the run's last step) a metrics.jsonl line of the steps since the
    last one."""
    options, progress, device = run.options, run.progress, run.device
    world, rank, main = distributed.world(), distributed.rank(), distributed.is_main()
    if progress.batches == 0:
        progress.sums = {}
    steps, total_steps = run.plan[epoch], sum(run.plan)
    mine = train_set.rank_batches(epoch, world, options.num_workers)[rank]  # the rest: padding at weight 0
    train_set.set_epoch(epoch, skip_batches=min(progress.batches, mine))
    sums = RunningSums(progress.step, device, histogram=options.log_every > 0)
    rows_before, start = progress.sums.get("rows", 0.0), time.perf_counter()
    run.clock = start
    every = options.log_every or PROGRESS_EVERY  # steps between two reads of the sums by the host
    run.model.train()
    batches = weighted(make_loader(train_set, options.num_workers, pin_memory=device.type == "cuda"),
                       steps - progress.batches, train_set.any_batch)
    bar = tqdm(batches, total=steps, initial=progress.batches, disable=not (options.progress and main),
               desc=f"epoch {epoch + 1}/{len(run.plan)}", file=sys.stderr)
    for batch in bar:
        # ---- one step: forward, the stage's loss, backward, clip, update ------------------
        batch = to_device(batch, device)
        weight = batch.pop("weight")
        with autocast(device):
            output = run.ddp(batch)
            losses, shown = loss_fn(output, batch)
        weighted_loss(losses, weight, world).backward()  # DDP averages the gradients over ranks
        grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), options.max_grad_norm)
        run.optimizer.step()
        lr = run.optimizer.param_groups[0]["lr"]  # the step's learning rate (a host float, no sync)
        run.schedule.step()
        run.optimizer.zero_grad(set_to_none=True)

        # ---- bookkeeping: sums stay on the device, the host reads them now and then -------
        sums.add(losses, shown, weight, grad_norm)
        progress.step, progress.batches = progress.step + 1, progress.batches + 1
        last = progress.step == total_steps
        if progress.step % every == 0 or last:
            collect(run, sums)
            line = train_line(progress.log_window, step=progress.step, epoch=epoch + 1, lr=lr,
                              seconds=progress.log_seconds)
            if options.log_every:  # this read is a log step (or the run's last step)
                run.log.write(line)
            progress.log_window, progress.log_seconds = {}, 0.0
            if options.progress and main:
                bar.set_postfix(**{k: f"{line[k]:.4f}" for k in ("loss", "alpha_mean") if k in line},
                                samples_s=f"{line['samples_per_s']:.0f}")
        if options.checkpoint_every and progress.step % options.checkpoint_every == 0 and progress.step < total_steps:
            collect(run, sums)
            run.save_progress()
    bar.close()
    collect(run, sums)
    rows = progress.sums.get("rows", 0.0)
    return {"epoch": epoch + 1, "step": progress.step, "lr": run.schedule.get_last_lr()[0],
            "samples_per_s": (rows - rows_before) / max(time.perf_counter() - start, 1e-9),
            **{f"train_{k}": v / max(rows, 1) for k, v in progress.sums.items() if k != "rows"}}


def collect(run: Run, sums: RunningSums) -> None:
    """Read the device's sums (all ranks) into the epoch's totals and the pending metrics.jsonl window."""
    window = sums.read()
    now = time.perf_counter()
    run.progress.log_seconds += now - run.clock
    run.clock = now
    if not window:
        return
    per_row = {k: v for k, v in window.items() if k not in ("alpha_hist", "grad_norm", "steps")}
    run.progress.sums = add_window(run.progress.sums, per_row)
    run.progress.log_window = add_window(run.progress.log_window, window)


# What picks the kept epoch (--select-by): a metric of the validation split, higher is better
# (log_loss is negated). A tie (a metric that saturated, e.g. ROC AUC 1.0 on 20 rows) goes to the
# epoch with the lower validation log loss, and only a tie of both to the later epoch.
SELECT_METRICS = ("roc_auc", "pr_auc", "log_loss")


def selection_score(metrics: dict, select_metric: str, has_validation: bool) -> tuple[float, float]:
    """(score, tie-break) of an epoch from its metrics: higher is better for both; NaN never wins."""
    if not has_validation:
        return 0.0, 0.0
    value = metrics.get(f"val_{select_metric}", math.nan)
    score = -value if select_metric == "log_loss" else value
    tiebreak = -metrics.get("val_log_loss", math.nan)
    return (-math.inf if score != score else score), (-math.inf if tiebreak != tiebreak else tiebreak)


def better_epoch(score: float, tiebreak: float, best_score: float, best_tiebreak: float) -> bool:
    """Whether an epoch replaces the kept one: a higher score, or the same score and a tie-break at
    least as high (so an exact tie of both goes to the later epoch)."""
    return score > best_score or (score == best_score and tiebreak >= best_tiebreak)


def end_epoch(run: Run, epoch: int, metrics: dict, val_set: CorpusBatches | None) -> None:
    """The end of an epoch: the evaluation on the validation split, the kept epoch (its weights saved),
    training.json, the checkpoint, and a line for the person watching."""
    options, progress, record, main = run.options, run.progress, run.record, distributed.is_main()
    if val_set is not None:  # the validation split picks the kept epoch; the eval split only reports
        metrics.update({f"val_{k}": v for k, v in evaluate(run.model, val_set, run.device, options.num_workers).items()})
    # Without validation rows, every epoch scores the same and the last one is kept.
    score, tiebreak = selection_score(metrics, options.select_metric, has_validation=val_set is not None)
    if better_epoch(score, tiebreak, progress.best_score, progress.best_tiebreak) or "best_epoch" not in record:
        progress.best_score, progress.best_tiebreak = score, tiebreak
        if main:
            run.model.save_pretrained(run.out_dir)
        record["best_epoch"] = epoch + 1
        # F1 is reported at the threshold that is best on the validation split (binary tasks)
        record["threshold"] = metrics.get("val_best_threshold")
    record["epochs"].append(metrics)
    if main:
        write_training_record(run.out_dir, record)
        if val_set is not None:
            run.log.write(val_line(metrics, step=progress.step, epoch=epoch + 1))
    progress.epoch, progress.batches = epoch + 1, 0
    run.save_progress()
    if options.progress and main:
        shown = ", ".join(f"{k[4:]} {metrics[k]:.4f}" for k in ("val_roc_auc", "val_pr_auc", "val_best_f1") if k in metrics)
        tqdm.write(f"epoch {epoch + 1}: train loss {metrics['train_loss']:.4f}" + (f"; validation {shown}" if shown else ""),
                   file=sys.stderr)


def finish_run(run: Run) -> dict:
    """Mark the record finished (what `cpfd experiment` checks before reusing a folder) and drop the
    checkpoint unless asked to keep it: nothing is left to resume. Returns the record."""
    run.record["finished"] = True
    run.log.close()
    if distributed.is_main():
        write_training_record(run.out_dir, run.record)
        if not run.options.keep_checkpoint:
            (run.out_dir / CHECKPOINT).unlink(missing_ok=True)  # the weights and the record are kept
    return run.record


def format_training_summary(record: dict, out: Path) -> str:
    """The line a training command prints when it is done: the folder and its kept epoch's metrics."""
    best = record["epochs"][record["best_epoch"] - 1]
    shown = ", ".join(f"{k[4:]} {best[k]:.4f}" for k in ("val_roc_auc", "val_pr_auc", "val_best_f1") if k in best)
    kept = (f"kept epoch {record['best_epoch']} of {len(record['epochs'])}"
            + (f", by validation ROC AUC: {shown}" if shown else " (no validation rows: the last)"))
    return f"wrote {out} ({kept})"
