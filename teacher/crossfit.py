"""Cross-fitted teachers: K teachers, each trained without one fold of the training rows, so that
each row's teacher loss comes from a teacher that never saw it.

CPFD's alpha is a function of the teacher's loss on each training row. Scored by the teacher
that trained on it, that loss measures memory (low wherever the teacher fit the label, high mostly
where the label is wrong or the row an outlier); scored out of fold, it measures confidence, as
stacking and confident learning do it.

    cpfd train-teacher CORPUS --out T --folds 5      # T/fold-0 .. T/fold-4 + T/folds.json
    cpfd dump-teacher T CORPUS --out D               # each train row by the teacher of its fold

The fold of a row is floor(K * u), u = `pipeline.data.id_uniforms(sample_id, "cpfd.fold")`: stable,
and no state to store. Teacher k trains on the training rows (the train split less its validation
rows) whose fold is not k; every teacher keeps the same validation rows to pick its epoch. The
dump scores a train-split row with the teacher of its fold (`fold` column), so no row is scored
by a teacher that trained on it; an eval-split row, which no teacher trained on, gets the mean of
the K teachers' logits (`fold` = -1).
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from cpfd.pipeline import distributed
from cpfd.pipeline.checkpoint import read_checkpoint
from cpfd.pipeline.data import FOLD_SALT, fold_of, fold_rows, training_rows
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.stages import model_inputs, prepare_stage
from cpfd.pipeline.train import cross_entropy_loss, train
from cpfd.storage.corpus import Corpus
from cpfd.storage.dump import file_sha256
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import (
    CHECKPOINT,
    FOLDS,
    WEIGHTS,
    read_folds,
    read_training_record,
    training_finished,
    write_folds,
)
from cpfd.storage.outputs import check_paths, exclusive, replacing
from cpfd.teacher.train import build_teacher, check_has_privileged

FOLD_RULE = "fold = floor(K * u), u = FNV-1a-64 hash of 'cpfd.fold' + sample_id in [0, 1) (pipeline.data.id_uniforms)"
EVAL_RULE = "mean of the K fold teachers' logits; fold -1"


def combined_weights_sha256(teachers: list[dict]) -> str:
    """One hash for the K teachers' weights: what a dump's provenance compares."""
    return hashlib.sha256("".join(f"{t['fold']}:{t['weights_sha256']}\n" for t in teachers).encode()).hexdigest()


def train_cross_fitted_teacher(corpus_path, out, *, folds: int, model_options: ModelOptions,
                               train_options: TrainOptions, overwrite: bool = False, resume: bool = False,
                               command: str = "", announce=None) -> dict:
    """`cpfd train-teacher --folds K`: K complete teacher folders under `out`, then `folds.json`.

    With `resume`, folds already finished are kept, an interrupted one continues from its
    checkpoint and the rest are trained. Returns the folds.json content.
    """
    if folds < 2:
        raise CpfdError(f"--folds must be at least 2, got {folds}")
    corpus = Corpus(corpus_path)
    check_has_privileged(corpus)
    out = Path(out)
    check_paths({"--out": out}, model_inputs(corpus, model_options))

    def checks() -> None:  # before anything is trained or written; under torchrun, rank 0 says it
        check_folds_have_rows(corpus, folds, train_options.val_fraction)
        if resume and not overwrite:
            check_same_cross_fitting(out, corpus, folds)

    distributed.on_main(checks)

    @contextmanager
    def locked_target() -> Iterator[Path]:
        if not overwrite and not resume and out.is_dir() and any(out.iterdir()):
            what = "a cross-fitted teacher" if (out / FOLDS).exists() else "an unfinished run (pass --resume to continue it)"
            raise CpfdError(f"{out} already holds {what}; pass --overwrite to replace it")
        with exclusive(out, "this teacher folder"):
            with replacing(out, overwrite, lambda d: (d / FOLDS).exists(), keep_on_failure=True, resume=resume) as target:
                target.mkdir(parents=True, exist_ok=True)
                yield target

    with distributed.main_context(locked_target) as target:  # under torchrun, rank 0 holds the folder
        teachers = []
        for k in range(folds):
            fold_dir = target / f"fold-{k}"
            finished, fold_resume = distributed.on_main(
                lambda: (training_finished(fold_dir), resume and (fold_dir / CHECKPOINT).exists()))
            if not finished:
                if announce:
                    announce(f"fold {k + 1}/{folds}: {'resuming' if fold_resume else 'training'} {fold_dir}")
                stage = prepare_stage(corpus, fold_dir, build=build_teacher, stage="train-teacher",
                                      model_options=model_options, train_options=train_options,
                                      overwrite=True, resume=fold_resume, command=command,
                                      record={"fold": {"k": k, "folds": folds, "rule": FOLD_RULE}},
                                      select=(fold_rows(k, folds, inside=False),))
                train(stage.model, stage.train_set, stage.val_set, cross_entropy_loss, fold_dir, train_options,
                      stage.record, resume=fold_resume)
            teachers.append(distributed.on_main(lambda: {
                "fold": k, "dir": fold_dir.name, "training_rows": int(read_training_record(fold_dir)["training_rows"]),
                "weights_sha256": file_sha256(fold_dir / WEIGHTS)}))
        data = {"kind": "cross-fitted teacher (DF-X-VLM)", "folds": folds, "rule": FOLD_RULE, "salt": FOLD_SALT,
                "validation_fraction": train_options.val_fraction, "eval_rule": EVAL_RULE, "teachers": teachers,
                "command": command}
        distributed.on_main(lambda: write_folds(target, data))  # last: the folder counts as a cross-fitted teacher only now
    return data


def check_folds_have_rows(corpus: Corpus, folds: int, val_fraction: float) -> None:
    """Every fold must hold training rows to leave out (and so every teacher rows to train on): a K
    larger than that is refused before any teacher trains."""
    ids = corpus.read_column("train", "sample_id")
    ids = ids.filter(pa.array(training_rows(val_fraction).mask(ids)))
    counts = np.bincount(fold_of(ids, folds), minlength=folds) if len(ids) else np.zeros(folds, np.int64)
    empty = int((counts == 0).sum())
    if empty:
        raise CpfdError(f"--folds {folds}: the {len(ids)} training rows of {corpus.path} (its train split less the "
                        f"validation rows) leave {empty} of the {folds} folds without a row to hold out; use fewer folds")


def check_same_cross_fitting(out: Path, corpus: Corpus, folds: int) -> None:
    """`--resume` continues the cross-fitting in OUT, never another one: the same K, fold rule and
    corpus as its folds.json, and as the training record (or checkpoint) of every fold folder there.
    Mixing two splits would score rows with a teacher that trained on them."""
    def refuse(found: str) -> None:
        raise CpfdError(f"{out}: --resume continues the cross-fitted teacher there, which {found}; this run asks for "
                        f"--folds {folds} on {corpus.path}: pass --overwrite to train a new one, or resume it as it was")

    if (out / FOLDS).exists():
        data = read_folds(out)
        if data["folds"] != folds or data.get("rule") != FOLD_RULE or data.get("salt") != FOLD_SALT:
            refuse(f"has {data['folds']} folds" if data["folds"] != folds else "assigns rows to folds by another rule")
    for fold_dir in sorted(out.glob("fold-*")):
        record = read_training_record(fold_dir)
        if record is None and (fold_dir / CHECKPOINT).exists():
            record = read_checkpoint(fold_dir / CHECKPOINT)["record"]
        if record is None:
            continue  # a fold that had not started: nothing of it is kept
        fold = record.get("fold") or {}
        if fold.get("folds") != folds or fold.get("rule") != FOLD_RULE or fold_dir.name != f"fold-{fold.get('k')}":
            refuse(f"was trained with {fold.get('folds')} folds ({fold_dir.name})" if fold.get("folds") != folds
                   else f"holds a fold trained under another rule or name ({fold_dir.name})")
        if (record.get("corpus") or {}).get("fingerprint") != corpus.fingerprint:
            refuse(f"was trained on another corpus ({(record.get('corpus') or {}).get('path')}, {fold_dir.name})")


def fold_logits(models_logits, ids, split: str, folds: int) -> tuple[np.ndarray, np.ndarray]:
    """The dump's logits and folds for rows scored by every fold teacher.

    `models_logits(k, rows)` gives teacher k's (n, C) logits for the rows at indices `rows`. A train
    row gets its fold's teacher (the one that never trained on it); an eval row the mean of all K.
    Returns (logits (n, C) float32, fold (n,) int32)."""
    n = len(ids)
    if split != "train":
        logits = np.mean([models_logits(k, np.arange(n)) for k in range(folds)], axis=0)
        return logits.astype(np.float32), np.full(n, -1, dtype=np.int32)
    fold = fold_of(ids, folds).astype(np.int32)
    logits = None
    for k in range(folds):
        rows = np.flatnonzero(fold == k)
        if not len(rows):
            continue
        part = models_logits(k, rows)
        if logits is None:
            logits = np.zeros((n, part.shape[1]), dtype=np.float32)
        logits[rows] = part
    return logits, fold


def fold_teachers(teacher_dir: Path) -> list[Path]:
    """The K model folders of a cross-fitted teacher, in fold order; each must have been trained as
    fold k of these K by this rule (its training record says so), or a row could be scored by a
    teacher that trained on it."""
    data = read_folds(teacher_dir)
    dirs = [Path(teacher_dir) / t["dir"] for t in data["teachers"]]
    for k, folder in enumerate(dirs):
        fold = (read_training_record(folder) or {}).get("fold") or {}
        if (fold.get("k"), fold.get("folds"), fold.get("rule")) != (k, data["folds"], data.get("rule")):
            raise CpfdError(f"{folder}: its training record says fold {fold.get('k')} of {fold.get('folds')}, "
                            f"{Path(teacher_dir) / FOLDS} fold {k} of {data['folds']}: train the cross-fitted teacher "
                            "again (train-teacher --folds K --overwrite)")
    return dirs
