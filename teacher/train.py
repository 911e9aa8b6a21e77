"""`cpfd train-teacher`: DF-X-VLM, trained with cross-entropy on everything the corpus holds, the
privileged features included. `teacher.crossfit` trains K of them (`--folds K`).
"""

from __future__ import annotations

from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.stages import build_model, feature_stats, model_config_fields, model_inputs, model_output, prepare_stage
from cpfd.pipeline.train import cross_entropy_loss, train
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.teacher.df_xvlm import DFXVLMConfig, DFXVLMForClassification


def build_teacher(corpus: Corpus, tokenizer, options: ModelOptions, rows=()) -> DFXVLMForClassification:
    """A fresh DF-X-VLM sized for `corpus`, its privileged features normalized with statistics of the training rows."""
    fields = model_config_fields(corpus, tokenizer, options, rows)
    mean, std = feature_stats(corpus, "privileged", len(corpus.privileged_features), rows)

    def make():
        config = DFXVLMConfig.build(**fields, privileged_features=corpus.privileged_features,
                                    privileged_mean=mean, privileged_std=std)
        return DFXVLMForClassification(config)

    return build_model(make, corpus, options)


def check_has_privileged(corpus: Corpus) -> None:
    if not corpus.privileged_features:
        raise CpfdError(f"{corpus.path}: the corpus has no privileged features; a teacher needs them "
                        "(train a student with `cpfd train-student`)")


def train_teacher(corpus_path, out, *, model_options: ModelOptions, train_options: TrainOptions,
                  overwrite: bool = False, resume: bool = False, command: str = "") -> dict:
    """`cpfd train-teacher` (one teacher); returns the training record."""
    corpus = Corpus(corpus_path)
    check_has_privileged(corpus)
    with model_output(out, overwrite=overwrite, resume=resume, inputs=model_inputs(corpus, model_options)) as target:
        stage = prepare_stage(corpus, target, build=build_teacher, stage="train-teacher", model_options=model_options,
                              train_options=train_options, overwrite=overwrite, resume=resume, command=command)
        return train(stage.model, stage.train_set, stage.val_set, cross_entropy_loss, target, train_options,
                     stage.record, resume=resume)
