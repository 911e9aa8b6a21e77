"""The options of a training run and of a new model, as dataclasses: the one place their defaults live.

The command line builds its options from these defaults (`cli.py`), the stages take them, and
`training.json` records them (`experiment.options` holds what `cpfd experiment` adds). Importing this module does
not import torch, so the command line can check what it is given before loading anything heavy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cpfd.storage.errors import CpfdError
from cpfd.pipeline.sizes import FUSION_LAYERS, HIDDEN_SIZE, MAX_LENGTH, NUM_HEADS, NUM_LAYERS, PATCH_SIZE, VOCAB_SIZE

# Bounds on sizes a command line may ask for: beyond them a run would allocate terabytes.
MAX_HIDDEN_SIZE, MAX_LAYERS, MAX_LENGTH_TOKENS, MAX_VOCAB = 8192, 128, 8192, 1_000_000
MAX_BATCH_SIZE = 1 << 20


# The default schedule ("auto"): enough epochs for at least `min_steps` optimizer steps, so that a
# corpus of a few hundred rows gets as many updates as a large one, within these bounds. The kept
# epoch is the best on the validation split, so the later epochs of a long schedule cannot hurt it.
AUTO_MIN_EPOCHS = 3
AUTO_MAX_EPOCHS = 200


@dataclass
class TrainOptions:
    epochs: int | None = None  # None: the "auto" schedule (see resolve_epochs)
    min_steps: int = 600  # the auto schedule's floor of optimizer steps
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs)
    val_fraction: float = 0.1  # share of the train split's ids held out to pick the kept epoch
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1  # share of all steps spent warming up linearly from 0
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    select_metric: str = "roc_auc"  # validation metric that picks the kept epoch (--select-by); ties: log loss
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: at epoch ends only)
    keep_checkpoint: bool = False  # a finished run deletes its checkpoint (the size of the model, twice) unless asked
    log_every: int = 20  # optimizer steps between two lines of OUT/metrics.jsonl (0: none)
    tensorboard: bool = False  # also TensorBoard events under OUT/tensorboard/ (the optional package)
    progress: bool = True

    def check(self) -> None:
        """One-line errors for values a command line's ranges let through (nan, inf, huge seeds)."""
        for option, value in (("--lr", self.lr), ("--weight-decay", self.weight_decay),
                              ("--warmup-ratio", self.warmup_ratio)):
            if not math.isfinite(value):
                raise CpfdError(f"{option} must be a finite number, got {value}")
        if not self.lr > 0:
            raise CpfdError(f"--lr must be positive, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.warmup_ratio <= 1:
            raise CpfdError("--weight-decay must be >= 0 and --warmup-ratio in [0, 1], "
                            f"got {self.weight_decay} and {self.warmup_ratio}")
        if not 0 <= self.seed < 2**32:
            raise CpfdError(f"--seed must be in [0, 2**32), got {self.seed}")
        if not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise CpfdError(f"--batch-size must be in [1, {MAX_BATCH_SIZE}], got {self.batch_size}")
        if self.select_metric not in ("roc_auc", "pr_auc", "log_loss"):
            raise CpfdError(f"--select-by must be roc_auc, pr_auc or log_loss, got {self.select_metric!r}")
        if self.log_every < 0:
            raise CpfdError(f"--log-every must be 0 (no metrics.jsonl) or a number of steps, got {self.log_every}")
        if not (math.isfinite(self.val_fraction) and 0 <= self.val_fraction < 1):
            raise CpfdError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")

    def resolve_epochs(self, steps_per_epoch: int) -> tuple[int, str]:
        """(epochs, rule): --epochs as given ("fixed"), or the auto schedule: at least
        `min_steps` optimizer steps, between AUTO_MIN_EPOCHS and AUTO_MAX_EPOCHS epochs."""
        if self.epochs is not None:
            return self.epochs, "fixed"
        wanted = math.ceil(self.min_steps / max(steps_per_epoch, 1))
        return min(AUTO_MAX_EPOCHS, max(AUTO_MIN_EPOCHS, wanted)), "auto"


@dataclass
class ModelOptions:
    """Backbones and sizes of a new model (a pretrained folder overrides the matching sizes)."""

    vision_model: str | None = None  # local Hugging Face vision model folder (e.g. a ViT)
    text_model: str | None = None  # local Hugging Face text model folder (e.g. all-MiniLM-L6-v2)
    hidden_size: int = HIDDEN_SIZE
    num_layers: int = NUM_LAYERS
    num_heads: int = NUM_HEADS
    fusion_layers: int = FUSION_LAYERS
    patch_size: int = PATCH_SIZE
    vocab_size: int = VOCAB_SIZE  # for the WordPiece tokenizer trained when no text model is given
    max_length: int = MAX_LENGTH  # tokens of title + OCR text
    dropout: float | None = None  # None: 0.1 in the fusion and heads, the backbones' own; a number: everywhere

    def check(self, image_size: int | None = None) -> None:
        """One-line errors for sizes that pass each option's range but cannot work together;
        `image_size` is the corpus's frame size (None: no frames)."""
        if self.hidden_size % self.num_heads:
            raise CpfdError(f"--hidden-size {self.hidden_size} is not divisible by --num-heads {self.num_heads}")
        for option, value, most in (("--hidden-size", self.hidden_size, MAX_HIDDEN_SIZE),
                                    ("--num-layers", self.num_layers, MAX_LAYERS),
                                    ("--fusion-layers", self.fusion_layers, MAX_LAYERS),
                                    ("--max-length", self.max_length, MAX_LENGTH_TOKENS),
                                    ("--vocab-size", self.vocab_size, MAX_VOCAB)):
            if value > most:
                raise CpfdError(f"{option} {value} is above the largest cpfd builds ({most})")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise CpfdError(f"--dropout must be in [0, 1), got {self.dropout}")
        if image_size and self.vision_model is None and self.patch_size > image_size:
            raise CpfdError(f"--patch-size {self.patch_size} is larger than the corpus's frames ({image_size} px)")
