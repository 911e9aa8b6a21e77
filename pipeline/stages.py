"""The set-up every training stage shares, and the checks between a model folder and its data.

`prepare_stage` is the one set-up of a training stage: the model folder, the tokenizer, the seed,
the model, the datasets and the training record. The stages (`teacher.train`, `teacher.crossfit`,
`student.train`, `student.distill`) hand it the function that builds their model
(`build(corpus, tokenizer, model_options, rows)`, from `model_config_fields` and `build_model`)
and then differ only in the loss they hand to `pipeline.train.train` and the extra dump columns
their dataset reads. `load_model` loads a model folder with the classes its caller hands in. This
module never imports `teacher` or `student`.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import torch

from cpfd.pipeline import distributed
from cpfd.pipeline.data import (
    CorpusBatches,
    Inputs,
    training_rows,
    validation_rows,
)
from cpfd.pipeline.scoring import inference
from cpfd.pipeline.tokenization import load_tokenizer, save_tokenizer, train_wordpiece_tokenizer
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.checkpoint import read_checkpoint
from cpfd.pipeline.inputs import input_problem, list_column_to_matrix
from cpfd.pipeline.train import check_resume, set_seed
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError, warn
from cpfd.storage.model_folder import (
    CHECKPOINT,
    CONFIG,
    TOKENIZER,
    is_cross_fitted,
    prepare_model_dir,
    read_model_config,
)
from cpfd.storage.outputs import check_paths, exclusive, replacing

# A training run of fewer optimizer steps than this is warned about: it is unlikely to converge.
FEW_STEPS = 50


# ---------------------------------------------------------------------------------------------
# Statistics and tokenizer from the training split
# ---------------------------------------------------------------------------------------------

def training_tables(corpus: Corpus, columns: list[str], rows=()):
    """The train split's row groups, only `columns`, only the rows the selections keep (a model's
    training rows: not its validation rows, nor a cross-fitted teacher's held-out fold)."""
    for table in corpus.iter_batches("train", [*columns, "sample_id"] if rows else columns):
        if rows:
            keep = np.ones(table.num_rows, dtype=bool)
            for selection in rows:
                keep &= selection.mask(table.column("sample_id"))
            table = table.filter(pa.array(keep)).select(columns)
        yield table


def feature_stats(corpus: Corpus, column: str, width: int, rows=()) -> tuple[list[float], list[float]]:
    """NaN-aware mean and std of a dense-feature column over the training rows, streamed."""
    total, total_sq, count = np.zeros(width), np.zeros(width), np.zeros(width)
    for table in training_tables(corpus, [column], rows):
        x = list_column_to_matrix(table.column(0), width).astype(np.float64)
        present = ~np.isnan(x)
        x = np.where(present, x, 0.0)
        total += x.sum(0)
        total_sq += (x * x).sum(0)
        count += present.sum(0)
    mean = total / np.maximum(count, 1)
    std = np.sqrt(np.maximum(total_sq / np.maximum(count, 1) - mean**2, 0.0))
    std[std < 1e-6] = 1.0  # constant or always-missing features: leave them unscaled
    return mean.tolist(), std.tolist()


def train_texts(corpus: Corpus, rows=()):
    for table in training_tables(corpus, ["title", "ocr_text"], rows):
        for title, ocr in zip(table.column(0).to_pylist(), table.column(1).to_pylist()):
            yield f"{title or ''} {ocr or ''}"


def prepare_tokenizer(corpus: Corpus, options: ModelOptions, rows=()):
    """A pretrained folder's tokenizer, or WordPiece trained on the training rows' text."""
    if not corpus.has_text:
        return None
    if options.text_model:
        return load_tokenizer(options.text_model)
    return train_wordpiece_tokenizer(train_texts(corpus, rows), vocab_size=options.vocab_size)


# ---------------------------------------------------------------------------------------------
# Building and loading models
# ---------------------------------------------------------------------------------------------

def model_config_fields(corpus: Corpus, tokenizer, options: ModelOptions, rows=()) -> dict:
    """The config fields every model shares, sized for `corpus`: classes, inputs, backbones and sizes,
    and its dense features' normalization from statistics of the training rows (`rows`: the
    selections that pick them). A stage adds its own fields (the teacher: the privileged features)."""
    feature_mean, feature_std = feature_stats(corpus, "features", len(corpus.features), rows) if corpus.features else ([], [])
    return dict(
        num_classes=corpus.num_classes,
        classes=corpus.classes,
        frames_per_video=corpus.frames_per_video,
        image_size=corpus.image_size,
        has_text=corpus.has_text,
        vocab_size=len(tokenizer) if tokenizer is not None else 0,
        feature_names=corpus.features,
        feature_mean=feature_mean,
        feature_std=feature_std,
        vision_model_path=options.vision_model,
        text_model_path=options.text_model,
        hidden_size=options.hidden_size,
        num_layers=options.num_layers,
        num_heads=options.num_heads,
        fusion_layers=options.fusion_layers,
        patch_size=options.patch_size,
        max_length=options.max_length,
        dropout=options.dropout,
    )


def pretrained_note(options: ModelOptions) -> str:
    """` (--vision-model P or --text-model Q)` for an error about a model built from pretrained folders."""
    given = " or ".join(f"{o} {p}" for o, p in (("--vision-model", options.vision_model),
                                               ("--text-model", options.text_model)) if p)
    return f" ({given})" if given else ""


def build_model(make: Callable[[], torch.nn.Module], corpus: Corpus, options: ModelOptions) -> torch.nn.Module:
    """`make()`, a stage's fresh model from its config, with the pretrained backbones loaded and one
    forward pass checked; a config or backbone that cannot work is one line naming the options."""
    try:
        model = make()
    except (ValueError, TypeError, RuntimeError, MemoryError) as error:
        raise CpfdError(f"cannot build the model from these options{pretrained_note(options)}: "
                        f"{' '.join(str(error).split())[:300]}") from None
    model.load_pretrained_backbones(vision_model_path=options.vision_model, text_model_path=options.text_model)
    check_forward(model, corpus, options)
    return model


def check_forward(model, corpus: Corpus, options: ModelOptions) -> None:
    """One forward pass on a dummy video of the corpus's shapes, in eval mode (no dropout, so no
    random draw that would move the seed's trajectory): a backbone that cannot run on these inputs
    fails here with one line, not after the data has started to load."""
    config = model.config
    batch = {"labels": torch.zeros(1, dtype=torch.long)}
    if config.frames_per_video:
        batch["frames"] = torch.zeros(1, config.frames_per_video, config.image_size, config.image_size, 3, dtype=torch.uint8)
    if config.has_text:
        batch["input_ids"] = torch.zeros(1, config.max_length, dtype=torch.long)
        batch["attention_mask"] = torch.ones(1, config.max_length, dtype=torch.long)
    if config.feature_names:
        batch["features"] = torch.zeros(1, len(config.feature_names))
    if getattr(config, "privileged_features", None):
        batch["privileged"] = torch.zeros(1, len(config.privileged_features))
    try:
        with inference(model):
            model(batch)
    except (RuntimeError, ValueError, TypeError, IndexError) as error:
        raise CpfdError(f"the model does not run on {corpus.path}'s inputs{pretrained_note(options)}: "
                        f"{' '.join(str(error).split())[:300]}") from None


def load_model(model_dir: Path, architectures: dict[str, type]):
    """(model, tokenizer or None) from a model folder, whose config.json names its architecture:
    one of `architectures` (name -> model class, handed in by the stage that loads it). Safetensors only."""
    model_dir = Path(model_dir)
    if is_cross_fitted(model_dir):
        raise CpfdError(f"{model_dir}: is a cross-fitted teacher (folds.json): one model per fold; use one fold's "
                        f"folder ({model_dir / 'fold-0'}), or dump them all with `cpfd dump-teacher`")
    architecture = read_model_config(model_dir).get("architecture")
    if architecture not in architectures:
        raise CpfdError(f"{model_dir / CONFIG}: architecture {architecture!r} is not "
                        f"{' or '.join(architectures)}")
    model = architectures[architecture].from_pretrained(model_dir)
    tokenizer = load_tokenizer(model_dir / TOKENIZER) if (model_dir / TOKENIZER).is_dir() else None
    if model.config.has_text and tokenizer is None:
        raise CpfdError(f"{model_dir}: the model reads text but the folder has no tokenizer/")
    return model, tokenizer


def reads_privileged(model) -> bool:
    """Whether the model reads the privileged columns (the teacher, DF-X-VLM); a student never does."""
    return bool(getattr(model.config, "privileged_features", None))


def check_model_fits_corpus(model, model_dir: Path, corpus: Corpus) -> None:
    config = model.config
    problems = []
    if list(config.classes) != corpus.classes:
        problems.append(f"classes {list(config.classes)} vs corpus {corpus.classes}")
    problem = input_problem(config, frames=corpus.has_frames, text=corpus.has_text, features=corpus.features)
    if problem:
        problems.append(problem)
    elif config.frames_per_video != corpus.frames_per_video:
        problems.append(f"{config.frames_per_video} frames per video vs corpus {corpus.frames_per_video}")
    if reads_privileged(model) and list(config.privileged_features) != corpus.privileged_features:
        problems.append(f"privileged features {list(config.privileged_features)} vs corpus {corpus.privileged_features}")
    if problems:
        raise CpfdError(f"model {model_dir} does not fit corpus {corpus.path}: " + "; ".join(problems))


def dataset_for(model, corpus: Corpus, split: str, tokenizer, batch_size: int, **kw) -> CorpusBatches:
    """The batches a model reads: a student never asks for the privileged column."""
    return CorpusBatches(
        corpus, split, Inputs.for_corpus(corpus, privileged=reads_privileged(model)),
        tokenizer=tokenizer, max_length=model.config.max_length, batch_size=batch_size, **kw,
    )


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------

@dataclass
class Stage:
    """What a training stage trains with, built by `prepare_stage`."""

    model: torch.nn.Module
    tokenizer: object
    train_set: CorpusBatches
    val_set: CorpusBatches | None  # rows of the train split held out to pick the kept epoch
    record: dict  # training.json's start: stage, command, architecture, corpus, options (+ the stage's own)


def prepare_stage(corpus: Corpus, out: Path, *, build: Callable, stage: str, model_options: ModelOptions,
                  train_options: TrainOptions, overwrite: bool, resume: bool, command: str,
                  record: dict | None = None, extra_open=None, select=()) -> Stage:
    """The one set-up of every training stage: checks, model folder, tokenizer, seed, model, datasets, record.

    `build(corpus, tokenizer, model_options, rows)` makes the stage's model (`teacher.train.build_teacher`,
    `student.train.build_student`), after the seed is set; `stage` names it in training.json
    (train-teacher, train-student, distill); `record` adds the stage's own entries (the dump and
    the distillation for distill); `extra_open` adds aligned columns to the training batches;
    `select` narrows the training rows further (a cross-fitted teacher's folds). The validation
    split (`--val-fraction` of the train split's ids, by hash) is held out of training and picks
    the kept epoch.
    """
    world = distributed.world()

    def check() -> None:  # the same on every rank: under torchrun rank 0 alone says what is wrong
        model_options.check(corpus.image_size if corpus.has_frames else None)
        train_options.check()
        if train_options.batch_size % world:
            raise CpfdError(f"--batch-size {train_options.batch_size} is the global batch and must divide evenly "
                            f"among the {world} processes of this torchrun job")
        if corpus.num_rows("train") == 0:
            raise CpfdError(f"{corpus.path}: the train split is empty")

    distributed.on_main(check)
    out = Path(out)
    record = {
        "stage": stage,
        "command": command,
        "corpus": {"path": str(corpus.path), "fingerprint": corpus.fingerprint},
        **(record or {}),
        "options": {"model": asdict(model_options)},
    }
    fraction = train_options.val_fraction
    rows = (training_rows(fraction),) + tuple(select)  # what the model learns from, tokenizer and statistics too

    def folder_and_tokenizer():  # rank 0 alone touches OUT; the other ranks get the tokenizer from it
        prepare_model_dir(out, overwrite, resume)
        if resume:  # refuse another run's resume before anything in OUT is written over
            check_resume(read_checkpoint(out / CHECKPOINT), train_options, record, out / CHECKPOINT)
            return load_tokenizer(out / TOKENIZER) if corpus.has_text else None  # the interrupted run's own
        return prepare_tokenizer(corpus, model_options, rows)

    tokenizer = distributed.on_main(folder_and_tokenizer)
    set_seed(train_options.seed)  # the initial weights are part of what the seed fixes
    model = build(corpus, tokenizer, model_options, rows)
    if tokenizer is not None and not resume:
        distributed.on_main(lambda: save_tokenizer(tokenizer, out / TOKENIZER))
    # --batch-size is the global batch: each of the torchrun job's processes reads its share of it
    batch_size = train_options.batch_size // world
    train_set = dataset_for(model, corpus, "train", tokenizer, batch_size, shuffle=True,
                            seed=train_options.seed, extra_open=extra_open, select=rows)
    val_set = (dataset_for(model, corpus, "train", tokenizer, batch_size,
                           select=(validation_rows(fraction),)) if fraction > 0 else None)
    if train_set.num_rows == 0:
        raise CpfdError(f"{corpus.path}: no training rows are left once the validation split is held out "
                        f"(--val-fraction {fraction})")
    if not resume:
        distributed.on_main(lambda: warn_about_the_data(corpus, train_set.num_rows, val_set, train_options))
    val_set = val_set if val_set is not None and val_set.num_rows else None
    record = {"stage": stage, "command": command, "architecture": model.config.architecture,
              "num_parameters": sum(p.numel() for p in model.parameters()), **record}
    return Stage(model, tokenizer, train_set, val_set, record)


def warn_about_the_data(corpus: Corpus, training: int, val_set: CorpusBatches | None, options: TrainOptions) -> None:
    """Warnings a new run starts with: splits with one class or a handful of rows, an empty validation
    split, and a schedule of too few optimizer steps to converge."""
    for problem in corpus.split_problems():
        warn(problem)
    if val_set is not None and val_set.num_rows == 0:
        warn(f"{corpus.path}: the validation split (--val-fraction {options.val_fraction}) holds no rows: "
             "the last epoch is kept")
    per_epoch = -(-training // options.batch_size)
    epochs, _ = options.resolve_epochs(per_epoch)
    steps = options.max_steps or epochs * per_epoch
    epochs = -(-steps // per_epoch)
    if steps < FEW_STEPS:
        warn(f"training takes {steps} optimizer steps ({training} training rows, batch {options.batch_size}, "
             f"{epochs} epoch{'s' if epochs > 1 else ''}): too few to converge; raise --epochs (or leave it out: "
             "the auto schedule) or lower --batch-size")


def has_model(folder: Path) -> bool:
    """A folder holding a model (finished or not): what --overwrite must not destroy before the new one is there."""
    return (Path(folder) / CONFIG).exists()


@contextmanager
def model_output(out: Path, *, overwrite: bool, resume: bool, inputs: dict) -> Iterator[Path]:
    """The folder a training stage writes: `out` checked against the stage's inputs, locked against a
    second writer, and (with --overwrite over a model) a staging folder swapped in only when the
    run finishes. A failed or killed overwrite keeps OUT as it was and its staging folder, which
    the same command with --resume continues."""
    out = Path(out)
    check_paths({"--out": out}, inputs)

    @contextmanager
    def locked_target() -> Iterator[Path]:
        with exclusive(out, "this model folder"):
            with replacing(out, overwrite, has_model, keep_on_failure=True, resume=resume) as target:
                yield target

    with distributed.main_context(locked_target) as target:  # under torchrun, rank 0 holds the folder
        yield target


def model_inputs(corpus: Corpus, model_options: ModelOptions) -> dict:
    return {"CORPUS": corpus.path, "--vision-model": model_options.vision_model, "--text-model": model_options.text_model}
