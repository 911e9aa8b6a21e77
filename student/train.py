"""`cpfd train-student`: X-VLM without distillation, the baseline. `build_student` is also the model
`cpfd distill` trains.
"""

from __future__ import annotations

from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.stages import build_model, model_config_fields, model_inputs, model_output, prepare_stage
from cpfd.pipeline.train import cross_entropy_loss, train
from cpfd.storage.corpus import Corpus
from cpfd.student.xvlm import XVLMConfig, XVLMForClassification


def build_student(corpus: Corpus, tokenizer, options: ModelOptions, rows=()) -> XVLMForClassification:
    """A fresh X-VLM sized for `corpus` (frames, text and non-privileged features; never the privileged ones)."""
    fields = model_config_fields(corpus, tokenizer, options, rows)
    return build_model(lambda: XVLMForClassification(XVLMConfig.build(**fields)), corpus, options)


def train_student(corpus_path, out, *, model_options: ModelOptions, train_options: TrainOptions,
                  overwrite: bool = False, resume: bool = False, command: str = "") -> dict:
    """`cpfd train-student`: the baseline, trained with cross-entropy alone; returns the training record."""
    corpus = Corpus(corpus_path)
    with model_output(out, overwrite=overwrite, resume=resume, inputs=model_inputs(corpus, model_options)) as target:
        stage = prepare_stage(corpus, target, build=build_student, stage="train-student", model_options=model_options,
                              train_options=train_options, overwrite=overwrite, resume=resume, command=command)
        return train(stage.model, stage.train_set, stage.val_set, cross_entropy_loss, target, train_options,
                     stage.record, resume=resume)
