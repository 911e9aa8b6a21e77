"""Shared pytest set-up: the repo root on sys.path for `tests.*` helpers (cpfd itself is the installed package)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# The test models are tiny: one intra-op thread is faster than two on a 2-core machine (thread
# hand-offs cost more than the matrix work) and keeps timings stable when the machine is busy.
torch.set_num_threads(1)
