"""What `cpfd experiment` adds to the training and model options (`pipeline.options`), with its defaults.

Importing this module does not import torch: the command line builds its options from these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cpfd.storage.errors import CpfdError
from cpfd.student.mappings import MAPPINGS

CPFD_MAPPINGS = tuple(m for m in MAPPINGS if m != "constant")

# The default corpus and budget of `cpfd experiment` (and so `make experiment`), chosen on the
# validation split of baseline students only, before any distillation result on them was seen
# (docs/results.md, "How the default was chosen"; benchmarks/student_budget.py).
DEFAULT_PRESET = "task1"
DEFAULT_TRAIN_SAMPLES = 2000
DEFAULT_EVAL_SAMPLES = 2000
DEFAULT_MAPPINGS = ("neg-sigmoid", "exp-decay")
EXPERIMENT_LR = 1e-3  # the experiment's learning rate (TrainOptions.lr stays the commands' default)


@dataclass
class ExperimentOptions:
    out: Path = Path("runs/experiment")
    corpus: Path | None = None  # a user's corpus; None = synthesize one
    preset: str = DEFAULT_PRESET  # the synthetic corpus (ignored, and refused by the CLI, with `corpus`)
    train_samples: int | None = DEFAULT_TRAIN_SAMPLES
    eval_samples: int | None = DEFAULT_EVAL_SAMPLES
    story: str = "latent"
    privileged_strength: float = 1.0
    label_noise: float | None = None  # synthetic corpus: flip rate both ways in place of the preset's (None: its own)
    privileged_missing: float = 0.0  # synthetic corpus: share of videos without privileged features
    seeds: int = 1
    mappings: list[str] = field(default_factory=lambda: list(DEFAULT_MAPPINGS))
    primary_mapping: str = "exp-decay"  # the CPFD row of Table 3; fixed before any result is seen
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    pfd_alpha: float = 0.5
    matched_pfd: bool = True  # PFD at each mapping's mean alpha (Table 6)
    confidences: list[str] = field(default_factory=lambda: ["loss"])  # signals the primary mapping reads (arms)
    cross_fit: int = 0  # K > 1: also a cross-fitted teacher, its dumps, and PFD / CPFD from them
    bootstrap: int = 1000  # replicates of the paired bootstrap over eval rows
    threads: int | None = None  # torch intra-op threads; None: 1 for the tiny default models, else all cores
    nproc_per_node: int = 1  # > 1: each training a torchrun job of this many processes
    jobs: int | None = None  # steps at once; None: the cores this process may use / each step's threads
    progress: bool = True


def check_experiment_options(options: ExperimentOptions) -> None:
    unknown = [m for m in options.mappings if m not in CPFD_MAPPINGS]
    if unknown:
        raise CpfdError(f"--mappings: unknown mapping(s) {unknown}; expected some of {list(CPFD_MAPPINGS)}")
    if not options.mappings:
        raise CpfdError("--mappings: give at least one mapping")
    if options.primary_mapping not in options.mappings:
        raise CpfdError(f"--primary-mapping {options.primary_mapping} is not among --mappings {options.mappings}")
    bad = [c for c in options.confidences if c not in ("loss", "entropy", "margin")]
    if bad or not options.confidences or len(set(options.confidences)) != len(options.confidences):
        raise CpfdError(f"--confidences: expected distinct ones of loss, entropy, margin, got {options.confidences}")
    if "loss" not in options.confidences:
        raise CpfdError("--confidences must include loss: the other signals' arms are compared with it")
    if options.seeds < 1:
        raise CpfdError(f"--seeds must be at least 1, got {options.seeds}")
    bad = [t for t in options.temperatures if not 0 < t < float("inf")]
    if bad or not options.temperatures:
        raise CpfdError(f"--temperatures must be positive numbers, got {options.temperatures}")
    if not 0 <= options.pfd_alpha <= 1:
        raise CpfdError(f"--pfd-alpha must be in [0, 1], got {options.pfd_alpha}")
    if options.cross_fit == 1 or options.cross_fit < 0:
        raise CpfdError(f"--cross-fit must be 0 (off) or at least 2 folds, got {options.cross_fit}")
    if options.nproc_per_node < 1:
        raise CpfdError(f"--nproc-per-node must be at least 1, got {options.nproc_per_node}")
    if options.jobs is not None and options.jobs < 1:
        raise CpfdError(f"--jobs must be at least 1, got {options.jobs}")
    if options.bootstrap < 100:
        raise CpfdError(f"--bootstrap must be at least 100 replicates, got {options.bootstrap}")
