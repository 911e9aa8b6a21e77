"""`cpfd dump-teacher`: run the teacher once over a corpus split and store its logits and losses.

The teacher runs in eval mode under `torch.inference_mode`, one corpus row group at a time, so
every dump shard has the rows and row groups of its corpus shard (`storage.dump` writes and
checks them). Work is split by corpus shard: `--num-shards N --shard-index I` for a job array,
or, under `torchrun`, by RANK / WORLD_SIZE with no flags. A crash at any moment loses at most the
shard in progress: a rerun skips committed shards and ends with the same dump.

    cpfd dump-teacher runs/teacher runs/corpus --out runs/dump                 # one process
    cpfd dump-teacher T C --out D --num-shards 8 --shard-index $SLURM_ARRAY_TASK_ID
    torchrun --nproc-per-node 8 -m cpfd.cli dump-teacher T C --out D                # one node, 8 GPUs
"""

from __future__ import annotations

import platform
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info
from tqdm.auto import tqdm

from cpfd.teacher.crossfit import combined_weights_sha256, fold_logits, fold_teachers
from cpfd.pipeline.data import Inputs, collate, fold_of, make_loader, training_rows
from cpfd.pipeline.ranks import torchrun_env
from cpfd.pipeline.scoring import forward_logits, inference, precision, resolve_device
from cpfd.pipeline.stages import check_model_fits_corpus, load_model
from cpfd.storage.corpus import Corpus, WorkUnit
from cpfd.storage.dump import (
    DUMP_MANIFEST,
    cross_entropy,
    dump_provenance,
    file_sha256,
    finalize_dump,
    open_dump,
    plan_dump,
    read_dump_columns,
    read_manifest,
    shards_of_worker,
    write_dump_shard,
)
from cpfd.storage.errors import CpfdError, warn
from cpfd.storage.model_folder import WEIGHTS, is_cross_fitted, read_model_config, read_training_record
from cpfd.storage.outputs import check_paths, exclusive, staging_path, swap_in
from cpfd.teacher.df_xvlm import DFXVLMConfig, DFXVLMForClassification

# How far logits recomputed in another call (a rerun after a crash, another job-array worker,
# `--verify`) may be from the stored ones, by the precision of the two computations. Not 0: CPU BLAS
# libraries (MKL with AVX-512 among them) pick their kernels, and so their order of summation, by
# the memory layout of each call, so the same rows give last-bit differences from call to call
# (about 1e-7 relative); under bf16 autocast a row's logits also depend on the batch it ran in.
# Committed shards that a rerun keeps are kept byte for byte; only recomputed rows are "within".
RECOMPUTE_TOLERANCE = {"float32": 1e-4, "bf16 autocast": 5e-2}


def recompute_tolerance(*precisions: str | None) -> float:
    """The bound on |logits diff| between computations in these precisions (the loosest applies)."""
    return max(RECOMPUTE_TOLERANCE.get(p or "", RECOMPUTE_TOLERANCE["bf16 autocast"]) for p in precisions)


def torchrun_share() -> tuple[int, int] | None:
    """(num_shards, shard_index) from torchrun's environment, or None outside torchrun."""
    env = torchrun_env()
    return (env[1], env[0]) if env is not None else None


@dataclass
class Piece:
    """Rows of a table that one teacher model scores in one forward pass, collated: the CPU part of
    scoring (PNG decoding, tokenizing), which a DataLoader worker can do."""

    model: int  # which (fold) model scores them
    rows: np.ndarray  # their positions in the table
    batch: dict  # the tensors, from `pipeline.data.collate`

    def pin_memory(self) -> "Piece":
        """The same piece in page-locked memory (`DataLoader(pin_memory=True)` calls this)."""
        return replace(self, batch={k: v.pin_memory() for k, v in self.batch.items()})


class TeacherCollator:
    """The CPU side of a `TeacherScorer`: which model scores which rows of a table, in which batches,
    and collating them with that model's tokenizer. It holds no model, so DataLoader workers get it."""

    def __init__(self, inputs: Inputs, widths: dict, tokenizers: list, max_lengths: list[int], num_classes: int,
                 split: str, cross_fitted: bool):
        self.inputs, self.widths, self.split, self.cross_fitted = inputs, widths, split, cross_fitted
        self.tokenizers, self.max_lengths, self.num_classes = tokenizers, max_lengths, num_classes

    def batches(self, table, batch_size: int) -> list[tuple[int, np.ndarray]]:
        """(model, rows) of each forward pass over the table, in order: a single teacher scores every
        row; a cross-fitted one a train row with the teacher of its fold, an eval row with all K
        (`teacher.crossfit.fold_logits` combines them)."""
        n, folds = table.num_rows, len(self.tokenizers)
        if not self.cross_fitted:
            routes = [(0, np.arange(n))]
        elif self.split != "train":
            routes = [(k, np.arange(n)) for k in range(folds)]
        else:
            fold = fold_of(table.column("sample_id"), folds)
            routes = [(k, np.flatnonzero(fold == k)) for k in range(folds)]
        return [(k, rows[start:start + batch_size]) for k, rows in routes for start in range(0, len(rows), batch_size)]

    def piece(self, table, model: int, rows: np.ndarray) -> Piece:
        """Collate these rows of the table (decode frames, tokenize) for this model."""
        consecutive = len(rows) and rows[-1] - rows[0] + 1 == len(rows)
        part = table.slice(int(rows[0]), len(rows)) if consecutive else table.take(rows)
        return Piece(model, rows, collate(part, self.inputs, self.tokenizers[model], self.max_lengths[model], self.widths))

    def combine(self, ids, scored: list[tuple[int, np.ndarray]]) -> np.ndarray:
        """(n, C) float32 logits of a table's rows from the logits of its batches, in `batches` order."""
        per_model = {}
        for model, logits in scored:
            per_model.setdefault(model, []).append(logits)
        per_model = {k: np.concatenate(parts) for k, parts in per_model.items()}
        if not self.cross_fitted:
            return per_model.get(0, np.zeros((0, self.num_classes), np.float32))
        logits, _ = fold_logits(lambda k, rows: per_model[k], ids, self.split, len(self.tokenizers))
        return logits if logits is not None else np.zeros((0, self.num_classes), np.float32)


class TeacherScorer:
    """The teacher and what it needs to score corpus rows: logits (n, C) float32 per table.

    A cross-fitted teacher (`train-teacher --folds K`) is K models: a train-split row is scored by
    the teacher of its fold, an eval-split row by the mean of all K (`teacher.crossfit`); the
    table must then hold `sample_id`. Scoring is two parts: `collator` (a `TeacherCollator`) cuts a
    table into batches and collates them on the CPU, in this process or in DataLoader workers;
    `forward` runs one collated batch through its model on the device, here."""

    def __init__(self, teacher_dir: Path, corpus: Corpus, device: str, batch_size: int, split: str = "train"):
        teacher_dir = Path(teacher_dir)
        self.cross_fitted = is_cross_fitted(teacher_dir)
        self.dirs = fold_teachers(teacher_dir) if self.cross_fitted else [teacher_dir]
        self.device = resolve_device(device)  # under torchrun: the GPU of LOCAL_RANK
        self.models, tokenizers = [], []
        for folder in self.dirs:
            architecture = read_model_config(folder).get("architecture")
            if architecture != DFXVLMConfig.architecture:
                raise CpfdError(f"{folder}: is a {architecture}, dump-teacher needs a "
                                "teacher (DF-X-VLM, from `cpfd train-teacher`)")
            model, tokenizer = load_model(folder, {DFXVLMConfig.architecture: DFXVLMForClassification})
            check_model_fits_corpus(model, folder, corpus)
            self.models.append(model.to(self.device))
            tokenizers.append(tokenizer)
        self.model = self.models[0]
        self.teacher_dir, self.split = teacher_dir, split
        self.inputs = Inputs.for_corpus(corpus, privileged=True)
        widths = {"features": len(corpus.features), "privileged": len(corpus.privileged_features)}
        self.collator = TeacherCollator(self.inputs, widths, tokenizers, [m.config.max_length for m in self.models],
                                        self.model.config.num_classes, split, self.cross_fitted)
        self.batch_size = batch_size

    def provenance(self) -> dict:
        """The dump's `teacher` entry: folder, weights hash and config (and each fold's, when cross-fitted)."""
        if not self.cross_fitted:
            return {"dir": str(self.teacher_dir), "weights_sha256": file_sha256(self.teacher_dir / WEIGHTS),
                    "config": self.model.config.to_dict()}
        folds = [{"fold": k, "dir": str(d), "weights_sha256": file_sha256(d / WEIGHTS)} for k, d in enumerate(self.dirs)]
        return {"dir": str(self.teacher_dir), "weights_sha256": combined_weights_sha256(folds),
                "config": self.model.config.to_dict(), "folds": folds}

    def computed_with(self) -> dict:
        """How this scorer computes logits; each dump shard records it, `--verify` reads it back."""
        cuda = self.device.type == "cuda"
        return {
            "device": self.device.type,
            "device_name": torch.cuda.get_device_name(self.device) if cuda else platform.machine(),
            "precision": precision(self.device),
            "batch_size": self.batch_size,
            "torch": torch.__version__,
        }

    def forward(self, piece: Piece) -> torch.Tensor:
        """(n, C) float32 logits of one collated piece, left on the device (`pipeline.scoring`: eval
        mode, no autograd, the device's autocast)."""
        model = self.models[piece.model]
        with inference(model):
            return forward_logits(model, piece.batch, self.device)

    def logits(self, table, batch_size: int | None = None) -> np.ndarray:
        """(n, C) float32 logits of the table's rows, in batches of `batch_size` (default: the scorer's)."""
        scored = [(model, self.forward(self.collator.piece(table, model, rows)).cpu().numpy())
                  for model, rows in self.collator.batches(table, batch_size or self.batch_size)]
        return self.collator.combine(table.column("sample_id") if self.cross_fitted else None, scored)

    def folds(self, ids) -> np.ndarray | None:
        """The `fold` column of a cross-fitted dump for rows with these ids (None for a single teacher)."""
        if not self.cross_fitted:
            return None
        return fold_of(ids, len(self.models)).astype(np.int32) if self.split == "train" else np.full(len(ids), -1, np.int32)


@contextmanager
def naming(corpus: Corpus, unit: WorkUnit) -> Iterator[None]:
    """A CpfdError raised while scoring a unit's rows (a damaged frame) names the shard and row group."""
    try:
        yield
    except CpfdError as e:
        raise CpfdError(f"{corpus.shard_paths(unit.split)[unit.shard]} (row group {unit.row_group}): {e}") from None


@dataclass
class UnitPiece:
    """What a dump's DataLoader worker hands the main process: one piece of unit `unit` (its position
    in the dump's list), which has `pieces` pieces; its first piece also carries the unit's ids and
    labels (what the dump writes besides the logits)."""

    unit: int
    pieces: int
    piece: Piece
    ids: pa.Array | None = None
    labels: np.ndarray | None = None

    def pin_memory(self) -> "UnitPiece":
        return replace(self, piece=self.piece.pin_memory())


class CollatedUnits(IterableDataset):
    """The dump's units read and collated in DataLoader workers: worker w of W takes units w, w + W,
    ... and yields each unit's pieces in order, one batch at a time (`UnitPiece`)."""

    def __init__(self, corpus: Corpus, units: list[WorkUnit], columns: list[str], collator: TeacherCollator,
                 batch_size: int):
        self.corpus_path, self.units, self.columns = corpus.path, units, columns
        self.collator, self.batch_size = collator, batch_size
        self.split = units[0].split if units else "train"  # for make_loader's warning

    def __iter__(self) -> Iterator[UnitPiece]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        corpus = Corpus(self.corpus_path, verify="fast")  # the parent verified it in full
        for index in range(worker, len(self.units), workers):
            unit = self.units[index]
            table = corpus.read_unit(unit, self.columns)
            batches = self.collator.batches(table, self.batch_size)
            for j, (model, rows) in enumerate(batches):
                with naming(corpus, unit):
                    piece = self.collator.piece(table, model, rows)
                first = j == 0
                yield UnitPiece(index, len(batches), piece, table.column("sample_id").combine_chunks() if first else None,
                                table.column("label").to_numpy() if first else None)


def scored_units(scorer: TeacherScorer, corpus: Corpus, units: list[WorkUnit], columns: list[str],
                 num_workers: int = 0) -> Iterator[tuple]:
    """(ids, labels, logits) of each unit in the order of `units`, read and collated in this process
    (`num_workers` 0) or in that many DataLoader workers (pinned memory on CUDA), scored here.

    With workers the loader takes a piece from each in turn, so the pieces of the units in flight
    interleave: each is scored as it comes, its logits kept (a few floats a row, not the batch)
    until its unit is complete, and units are handed on in order."""
    if not units:
        return
    dataset = CollatedUnits(corpus, units, columns, scorer.collator, scorer.batch_size)
    stream = iter(make_loader(dataset, num_workers, pin_memory=scorer.device.type == "cuda", ranks=1))  # units: this worker's
    started: dict[int, dict] = {}
    try:
        for index in range(len(units)):
            while index not in started or len(started[index]["scored"]) < started[index]["pieces"]:
                item = next(stream)
                unit = started.setdefault(item.unit, {"pieces": item.pieces, "scored": []})
                if item.ids is not None:
                    unit["ids"], unit["labels"] = item.ids, item.labels
                unit["scored"].append((item.piece.model, scorer.forward(item.piece)))  # on the device, no sync
            unit = started.pop(index)
            scored = [(model, logits.cpu().numpy()) for model, logits in unit["scored"]]
            yield unit["ids"], unit["labels"], scorer.collator.combine(unit["ids"], scored)
    finally:
        # A failed or abandoned dump stops its workers now: the error's traceback keeps the loader
        # alive, and its workers would otherwise shut down (about 10 s) whenever a collection finds it.
        shutdown = getattr(stream, "_shutdown_workers", None)  # torch's loader iterator; absent at 0 workers
        if shutdown is not None:
            shutdown()


def dump_teacher(teacher_dir, corpus_path, out, *, split: str = "train", batch_size: int = 256,
                 num_shards: int | None = None, shard_index: int | None = None, overwrite: bool = False,
                 device: str = "auto", num_workers: int = 0, progress: bool = True) -> dict:
    """Dump this worker's share of the split; write `_manifest.json` if the dump is then complete.

    With `num_workers` > 0, DataLoader workers read and collate the row groups (`scored_units`)
    while this process runs the teacher; the dump is the same whatever their number."""
    teacher_dir, out = Path(teacher_dir), Path(out)
    corpus = Corpus(corpus_path)
    if (num_shards is None) != (shard_index is None):
        raise CpfdError("--num-shards and --shard-index go together")
    if num_shards is None:
        num_shards, shard_index = torchrun_share() or (1, 0)
    if not 0 <= shard_index < num_shards:
        raise CpfdError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    check_paths({"--out": out}, {"TEACHER": teacher_dir, "CORPUS": corpus.path})
    scorer = TeacherScorer(teacher_dir, corpus, device, batch_size, split)
    teacher = scorer.provenance()
    provenance = dump_provenance(corpus, split, teacher)
    # --overwrite over a finished dump writes the new one beside it (every job-array worker into the
    # same staging folder) and swaps it in once complete: a failure never loses the old dump.
    target = staging_path(out) if overwrite and (out / DUMP_MANIFEST).exists() else out
    names = [p.name for p in corpus.shard_paths(split)]
    with ExitStack() as locks:
        for i in shards_of_worker(corpus, split, num_shards, shard_index):  # one writer per shard
            locks.enter_context(exclusive(target / names[i], f"shard {names[i]} of this dump"))
        todo = plan_dump(target, corpus, split, teacher, overwrite, num_shards, shard_index)

        columns = ["sample_id", *scorer.inputs.columns()]
        units = [u for shard in todo for u in corpus.work_units(split) if u.shard == shard]  # in writing order
        bar = tqdm(total=sum(u.rows for u in units), unit="rows", desc="dump-teacher", disable=not progress)
        scored = locks.enter_context(closing(scored_units(scorer, corpus, units, columns, num_workers)))

        def row_groups(shard: int):
            for _ in (u for u in units if u.shard == shard):
                ids, labels, logits = next(scored)
                bar.update(len(labels))
                arrays = (ids, labels, logits, cross_entropy(logits, labels).astype(np.float32))
                folds = scorer.folds(ids)
                yield arrays if folds is None else (*arrays, folds)

        for shard in todo:
            write_dump_shard(target, corpus, split, shard, row_groups(shard), provenance, computed=scorer.computed_with())
        bar.close()
    finished = finish_dump(target, out, corpus, split, provenance)
    if finished:
        _, line = stored_fit_gap(out)
        if line:
            warn(f"{out}: {line}")
    return {"out": str(out), "split": split, "shards_written": len(todo), "rows_written": sum(u.rows for u in units),
            "finished": finished, "num_shards": num_shards, "shard_index": shard_index}


# A teacher whose mean loss on the rows it trained on is below a third of its loss on its own
# validation rows has memorised them: its soft labels there are nearly the labels.
OVERFIT_RATIO = 3.0


def fit_gap(dump_dir: Path, val_fraction: float) -> dict | None:
    """The teacher's mean stored loss on the dump's training rows and on its validation rows (the
    train split's ids the teacher held out, `--val-fraction`, by the same hash); None without both."""
    table = read_dump_columns(dump_dir, ["sample_id", "teacher_loss"])
    if not val_fraction or table.num_rows == 0:
        return None
    trained = training_rows(val_fraction).mask(table.column("sample_id"))
    losses = table.column("teacher_loss").to_numpy().astype(np.float64)
    if trained.all() or not trained.any():
        return None
    return {"training": float(losses[trained].mean()), "validation": float(losses[~trained].mean()),
            "training_rows": int(trained.sum()), "validation_rows": int((~trained).sum())}


def overfit_warning(gap: dict | None) -> str | None:
    """A line when the teacher fits its training rows far better than its validation rows."""
    if gap is None or not gap["validation"] > OVERFIT_RATIO * gap["training"]:
        return None
    ratio = gap["validation"] / max(gap["training"], 1e-12)
    return (f"the teacher fits the rows it trained on far better than its validation rows (mean loss "
            f"{gap['training']:.3g} on {gap['training_rows']} against {gap['validation']:.3g} on "
            f"{gap['validation_rows']}, {ratio:.0f}x): on the rows a student learns from, its soft labels are "
            "nearly the labels, and PFD may train the baseline's model again; dump a cross-fitted teacher "
            "(train-teacher --folds K) or distill at a higher --temperature")


def stored_fit_gap(dump_dir: Path) -> tuple[dict | None, str | None]:
    """`fit_gap` of a stored dump, at the --val-fraction its teacher's training.json records, and
    `overfit_warning`'s line; (None, None) for an eval-split dump, a cross-fitted teacher, or a
    teacher folder no longer there (what `cpfd inspect` shows)."""
    manifest = read_manifest(dump_dir)
    teacher = Path(manifest.get("teacher", {}).get("dir") or "")
    if manifest.get("corpus", {}).get("split") != "train" or not teacher.is_dir() or is_cross_fitted(teacher):
        return None, None
    try:
        fraction = ((read_training_record(teacher) or {}).get("options") or {}).get("val_fraction") or 0.0
    except CpfdError:
        return None, None
    gap = fit_gap(dump_dir, fraction)
    return gap, overfit_warning(gap)


def finish_dump(target: Path, out: Path, corpus: Corpus, split: str, provenance: dict) -> bool:
    """Write the manifest once every shard is there; a staged overwrite is then swapped into `out`.
    The swap happens under `out`'s lock, so of two workers finishing together one swaps."""
    if target == out:
        return finalize_dump(out, corpus, split, provenance)
    with exclusive(out, "this dump", wait=True):
        if not target.exists():  # another worker of this overwrite swapped it in already
            return finalize_dump(out, corpus, split, provenance)
        if not finalize_dump(target, corpus, split, provenance):
            return False
        swap_in(target, out)
        return True


def format_dump_summary(result: dict) -> str:
    """What `cpfd dump-teacher` prints: rows and shards this worker wrote, and whether the dump is complete."""
    state = "complete" if result["finished"] else "waiting for the other shard workers"
    return f"dumped {result['rows_written']} rows in {result['shards_written']} shard(s) to {result['out']} ({state})"


def format_verification(check: dict) -> str:
    """What `dump-teacher --verify` prints: the largest differences, the tolerance, and a note if any."""
    line = (f"verified {check['rows']} rows: max |logits diff| {check['max_abs_diff_logits']:.3g}, "
            f"max |loss diff| {check['max_abs_diff_loss']:.3g} (within {check['tolerance']:g})")
    return line + (f"\nnote: {check['note']}" if check["note"] else "")


def verify_dump(teacher_dir, corpus_path, dump_dir, *, rows: int, seed: int = 0, device: str = "auto",
                batch_size: int = 256) -> dict:
    """Recompute the teacher on `rows` random committed rows; largest |difference| of logits and loss.

    Under bf16 autocast a row's logits depend on the batch it ran in (its shape, its padding), so
    when the dump was computed in that precision and this run computes in it too, the very batches
    the dump ran (its recorded batch size, from the start of the row group) are recomputed and
    the differences are exactly 0 on the same machine. Otherwise only the picked rows are, in
    batches of `batch_size`: float32 gives differences of float32 size whatever the batches.
    Returns {rows, max_abs_diff_logits, max_abs_diff_loss, tolerance, dumped_with: [distinct records],
    recomputed_with, note (None, or why differences of a lower precision's size are expected)}.
    Raises CpfdError when a difference exceeds the tolerance (`RECOMPUTE_TOLERANCE` of the
    loosest precision involved): the dump does not hold what this teacher computes.
    """
    corpus = Corpus(corpus_path)
    dump = open_dump(dump_dir, corpus)
    split = dump.split
    scorer = TeacherScorer(Path(teacher_dir), corpus, device, batch_size, split)
    now = scorer.computed_with()
    units = corpus.work_units(split)
    total = sum(u.rows for u in units)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(rows, total), replace=False))
    worst_logits = worst_loss = 0.0
    dumped_with = []
    columns = ["sample_id", *scorer.inputs.columns()]
    for unit in units:
        local = picked[(picked >= unit.offset) & (picked < unit.offset + unit.rows)] - unit.offset
        if not len(local):
            continue
        recorded = dump.computed_with(unit.shard)
        if recorded not in dumped_with:
            dumped_with.append(recorded)
        table = corpus.read_unit(unit, columns)
        stored_logits, stored_loss = dump.read(unit)
        if now["precision"] != "float32" and recorded.get("precision") == now["precision"] and recorded.get("batch_size"):
            size = int(recorded["batch_size"])  # rerun each dump batch holding a picked row, whole
            batches = [(int(start), local[(local >= start) & (local < start + size)]) for start in np.unique(local // size) * size]
        else:
            size, batches = None, [(None, local)]
        for start, rows_in in batches:
            if start is None:
                logits = scorer.logits(table.take(rows_in))
            else:
                logits = scorer.logits(table.slice(start, size), batch_size=size)[rows_in - start]
            loss = cross_entropy(logits, table.column("label").to_numpy()[rows_in]).astype(np.float32)  # as stored
            worst_logits = max(worst_logits, float(np.abs(logits - stored_logits[rows_in]).max()))
            worst_loss = max(worst_loss, float(np.abs(loss - stored_loss[rows_in]).max()))
    tolerance = recompute_tolerance(now["precision"], *(d.get("precision") for d in dumped_with))
    if worst_logits > tolerance or worst_loss > tolerance:
        raise CpfdError(
            f"{dump_dir}: --verify: recomputed rows differ from the stored ones by up to {max(worst_logits, worst_loss):.3g} "
            f"(tolerance {tolerance:g}): the dump does not hold what teacher {teacher_dir} computes"
        )
    return {
        "rows": int(len(picked)),
        "max_abs_diff_logits": worst_logits,
        "max_abs_diff_loss": worst_loss,
        "tolerance": tolerance,
        "dumped_with": dumped_with,
        "recomputed_with": now,
        "note": verify_note(dumped_with, now),
    }


def _setting(computed: dict) -> str:
    return f"{computed.get('device', '?')} ({computed.get('device_name', '?')}, {computed.get('precision', '?')})"


def verify_note(dumped_with: list[dict], now: dict) -> str | None:
    """Why `--verify` may see more than float32-sized differences, or None when it should not."""
    if any(not d for d in dumped_with):
        return "some shards do not record how they were computed (written by an older cpfd)"
    other = [d for d in dumped_with if (d.get("device"), d.get("device_name"), d.get("precision"))
             != (now["device"], now["device_name"], now["precision"])]
    if not other:
        return None
    lower = "bf16 autocast" in (now["precision"], *(d.get("precision") for d in other))
    return (
        f"the dump was computed on {', '.join(sorted({_setting(d) for d in other}))}, this check on {_setting(now)}"
        + (": differences of bf16 size (about 1e-2) are expected" if lower else "")
    )
