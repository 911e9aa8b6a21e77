"""What a training writes as it goes: OUT/metrics.jsonl, and TensorBoard events with --tensorboard.

Every `--log-every` optimizer steps the loop hands `TrainingLog.steps` the sums it read from the
device (over all ranks) since the last line; after each epoch, `TrainingLog.epoch` gets the
validation metrics. Rank 0 alone writes. One JSON object per line:

    {"kind": "train", "step": 40, "epoch": 2, "lr": 0.00098, "loss": 0.61, "ce": 0.66, "kd": 0.55,
     "kd_weighted": 0.27, "alpha_mean": 0.49, "alpha_p10": 0.12, "alpha_p50": 0.47, "alpha_p90": 0.88,
     "alpha_below_half": 0.52, "teacher_loss": 0.42, "grad_norm": 1.7, "samples_per_s": 812.0,
     "steps": 20, "rows": 640}
    {"kind": "val", "step": 56, "epoch": 1, "loss": 0.58, "roc_auc": 0.71, "pr_auc": 0.62, ...}

Train values are means over the rows (grad_norm: over the steps) since the previous line; `kd`
is the raw distillation term T^2 * KL, `kd_weighted` alpha times it; the alpha and teacher-loss
fields are there for distillation only. A resumed run first drops the lines past its checkpoint
(`TrainingLog.open(resume_step=...)`), so no step is logged twice. `tensorboard_tag` names each
field as TensorBoard shows it (`loss/ce`, `alpha/mean`, `val/roc_auc`...).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from cpfd.storage.atomic import atomic_write_bytes
from cpfd.storage.model_folder import METRICS_LOG, TENSORBOARD_DIR, read_metrics_log

ALPHA_BINS = 1000  # alpha's histogram over [0, 1]: percentiles to 0.001, one all-reduce under torchrun

TAGS = {"loss": "loss/total", "ce": "loss/ce", "kd": "loss/kd", "kd_weighted": "loss/kd_weighted",
        "alpha_mean": "alpha/mean", "alpha_p10": "alpha/p10", "alpha_p50": "alpha/p50", "alpha_p90": "alpha/p90",
        "alpha_below_half": "alpha/below_0.5", "teacher_loss": "teacher/loss", "lr": "optim/lr",
        "grad_norm": "optim/grad_norm", "samples_per_s": "speed/samples_per_s"}


def tensorboard_tag(kind: str, name: str) -> str:
    return f"val/{name}" if kind == "val" else TAGS.get(name, f"train/{name}")


def histogram_quantile(counts: list[float], q: float) -> float:
    """The q-quantile of values binned into len(counts) equal bins over [0, 1] (the bin's centre)."""
    total = sum(counts)
    if total <= 0:
        return math.nan
    running = 0.0
    for i, c in enumerate(counts):
        running += c
        if running >= q * total:
            return (i + 0.5) / len(counts)
    return (len(counts) - 0.5) / len(counts)


def train_line(window: dict, *, step: int, epoch: int, lr: float, seconds: float) -> dict:
    """One metrics.jsonl line from the sums over the rows of the steps since the last line:
    `window` = {"rows", "steps", "loss", ..., "grad_norm" (summed over steps), "alpha_hist"}."""
    rows = max(window.get("rows", 0.0), 1e-12)
    line = {"kind": "train", "step": step, "epoch": epoch, "lr": lr, "loss": window["loss"] / rows}
    line["ce"] = window["ce"] / rows if "ce" in window else line["loss"]  # the teacher's and baseline's loss is CE
    for name in ("kd", "kd_weighted"):
        if name in window:
            line[name] = window[name] / rows
    if "alpha" in window:
        line["alpha_mean"] = window["alpha"] / rows
    if "alpha_hist" in window:
        hist = window["alpha_hist"]
        for q in (10, 50, 90):
            line[f"alpha_p{q}"] = histogram_quantile(hist, q / 100)
        line["alpha_below_half"] = sum(hist[: len(hist) // 2]) / max(sum(hist), 1e-12)
    if "teacher_loss" in window:
        line["teacher_loss"] = window["teacher_loss"] / rows
    line["grad_norm"] = window["grad_norm"] / max(window["steps"], 1)
    line["samples_per_s"] = window["rows"] / seconds if seconds > 0 else math.nan
    line["steps"], line["rows"] = int(window["steps"]), int(round(window["rows"]))
    return line


def val_line(metrics: dict, *, step: int, epoch: int) -> dict:
    """The line after an epoch: the validation split's metrics (`val_*` of the epoch's record)."""
    shown = {k[4:]: v for k, v in metrics.items() if k.startswith("val_") and isinstance(v, (int, float))}
    return {"kind": "val", "step": step, "epoch": epoch, **shown}


def add_window(into: dict, window: dict) -> dict:
    """Sums of two windows (lists added element by element)."""
    out = dict(into)
    for k, v in window.items():
        if isinstance(v, list):
            out[k] = [a + b for a, b in zip(out[k], v)] if k in out else list(v)
        else:
            out[k] = out.get(k, 0.0) + v
    return out


class TrainingLog:
    """OUT/metrics.jsonl (and OUT/tensorboard/ with `tensorboard`), written by rank 0 only."""

    def __init__(self, out_dir: Path, *, enabled: bool, tensorboard: bool, resume_step: int | None):
        self.path = Path(out_dir) / METRICS_LOG
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        if resume_step is None:  # a new run: no lines of an earlier one
            self.path.unlink(missing_ok=True)
        else:  # no step past the checkpoint twice
            kept = [line for line in read_metrics_log(self.path) if line["step"] <= resume_step]
            atomic_write_bytes(self.path, "".join(json.dumps(line) + "\n" for line in kept).encode())
        if tensorboard:
            self.writer = tensorboard_writer(Path(out_dir) / TENSORBOARD_DIR, purge_step=resume_step)

    def write(self, line: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(line, allow_nan=True) + "\n")
        if self.writer is not None:
            for name, value in line.items():
                if name not in ("kind", "step", "epoch", "steps", "rows") and isinstance(value, (int, float)):
                    self.writer.add_scalar(tensorboard_tag(line["kind"], name), value, line["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def tensorboard_writer(folder: Path, purge_step: int | None):
    """torch's SummaryWriter over `folder` (the optional `tensorboard` package); a resumed run drops
    the events past its checkpoint (`purge_step`)."""
    from torch.utils.tensorboard import SummaryWriter

    if purge_step is None and folder.exists():
        import shutil

        shutil.rmtree(folder)  # a new run: no curves of an earlier one
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def check_tensorboard() -> None:
    """--tensorboard needs the package: one line saying what to install."""
    from cpfd.storage.errors import CpfdError

    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CpfdError("--tensorboard needs the tensorboard package: pip install 'cpfd[tensorboard]' "
                        "(or pip install tensorboard)") from None
