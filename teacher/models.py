"""The model classes of both stages, by the architecture name a model folder's config.json records.

They live here because the teacher package may import the student's X-VLM (DF-X-VLM is X-VLM plus
a branch) and the student package never imports the teacher: what takes a folder of either stage
(`cpfd evaluate`, the experiment's evaluations and its report) loads it with these.
"""

from __future__ import annotations

from pathlib import Path

from cpfd.pipeline import stages
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification
from cpfd.teacher.df_xvlm import DFXVLMConfig, DFXVLMForClassification

ARCHITECTURES = {XVLMConfig.architecture: XVLMForClassification, DFXVLMConfig.architecture: DFXVLMForClassification}


def load_model(model_dir: Path):
    """(model, tokenizer or None) from a model folder of either stage."""
    return stages.load_model(model_dir, ARCHITECTURES)
