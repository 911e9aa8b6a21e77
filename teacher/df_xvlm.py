"""DF-X-VLM, the teacher: the X-VLM backbone plus a dense-feature (DF) branch over privileged features.

Paper section 3.2 and Fig. 1: the X-VLM branch reads frames and text (and the non-privileged
`features`, as the student does); the DF branch reads the privileged dense features, which exist only
at training time. The two representations are concatenated and an MLP head gives the logits. A
tabular corpus (no frames, no text) gives the features branch + the DF branch.

The X-VLM part is `student.xvlm.XVLMEncoder`, reused as is, so teacher and student share one backbone
definition. The privileged features go through the same `DenseFeatureBranch` (normalization with
stored statistics, NaN -> 0 plus a missing indicator).

    config = DFXVLMConfig.build(privileged_features=names, privileged_mean=mean, privileged_std=std,
                                num_classes=2, frames_per_video=4, image_size=32, has_text=True,
                                vocab_size=len(tokenizer), feature_names=[], feature_mean=[], feature_std=[])
    teacher = DFXVLMForClassification(config)
    out = teacher(batch)     # batch as for the student, plus `privileged` (B, Dp) float32, NaN = missing
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cpfd.student.xvlm import (
    ClassificationHead,
    DenseFeatureBranch,
    PreTrainedClassifier,
    XVLMConfig,
    XVLMEncoder,
    XVLMOutput,
)


@dataclass
class DFXVLMConfig(XVLMConfig):
    """An X-VLM config plus the privileged features the DF branch reads."""

    architecture: str = "DF-X-VLM"
    privileged_features: list[str] = field(default_factory=list)
    # Training-split statistics of the privileged features, used to normalize them inside the model.
    privileged_mean: list[float] = field(default_factory=list)
    privileged_std: list[float] = field(default_factory=list)
    df_hidden: int = 32

    def __post_init__(self) -> None:
        super().__post_init__()
        sizes = (len(self.privileged_features), len(self.privileged_mean), len(self.privileged_std))
        if len(set(sizes)) != 1:
            raise ValueError(f"expected privileged_features, privileged_mean, privileged_std of one length, "
                             f"got {sizes}")
        if not self.privileged_features:
            raise ValueError("expected at least one privileged feature: DF-X-VLM without them is X-VLM")

    @classmethod
    def build(cls, privileged_features: list[str], privileged_mean: list[float], privileged_std: list[float],
              df_hidden: int = 32, **xvlm_options: Any) -> DFXVLMConfig:
        """`XVLMConfig.build(**xvlm_options)` plus the privileged features."""
        backbone = XVLMConfig.build(**xvlm_options).to_dict()
        backbone.pop("architecture")
        return cls(**backbone, privileged_features=list(privileged_features),
                   privileged_mean=[float(m) for m in privileged_mean],
                   privileged_std=[float(s) for s in privileged_std], df_hidden=df_hidden)


class DFXVLMForClassification(PreTrainedClassifier):
    """DF-X-VLM: `forward(batch) -> XVLMOutput(logits, pooled)`; `batch` must hold `privileged`."""

    config_class = DFXVLMConfig

    def __init__(self, config: DFXVLMConfig):
        super().__init__()
        self.config = config
        self.encoder = XVLMEncoder(config)
        self.df_branch = DenseFeatureBranch(config.privileged_mean, config.privileged_std, config.df_hidden,
                                            config.dropout)
        self.head = ClassificationHead(self.encoder.output_size + config.df_hidden, config.head_hidden,
                                       config.num_classes, config.dropout)

    def forward(self, batch: dict[str, torch.Tensor]) -> XVLMOutput:
        if "privileged" not in batch:
            raise ValueError(f"expected batch key 'privileged' (the teacher needs it), got {sorted(batch)}")
        xvlm = self.encoder(batch)  # (B, H)
        dense = self.df_branch(batch["privileged"])  # (B, Hdf)
        pooled = torch.cat([xvlm, dense], dim=-1)  # (B, H + Hdf)
        return XVLMOutput(logits=self.head(pooled), pooled=pooled)
