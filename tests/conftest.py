"""Shared pytest set-up: the repo root on sys.path, so tests run from a checkout too."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
