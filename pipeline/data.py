"""The torch dataset over corpus shards: row groups in, model-ready batches out.

`CorpusBatches` is an IterableDataset that yields whole batches (dicts of tensors), because Arrow
is fast in columns and slow in rows. Its unit of work is one row group of one shard
(`storage.corpus.WorkUnit`); units are dealt round-robin to (torch.distributed rank x DataLoader
worker), so every row is read exactly once per epoch however many processes share the work.
Only the columns a stage needs are read: a student never reads `privileged`.

Batch keys (present when the stage asks for that input):
    frames          uint8 (B, F, H, W, 3)    decoded frames, the model normalizes them
    input_ids       int64 (B, L)             [CLS] title [SEP] ocr_text [SEP]
    attention_mask  int64 (B, L)
    features        float32 (B, Df)          non-privileged dense features, NaN = missing
    privileged      float32 (B, Dp)          teacher only
    labels          int64 (B,)
Extra columns from an aligned source (the teacher dump) are added by `extra`, see
`storage.dump.TeacherDump`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from cpfd.pipeline import distributed
from cpfd.pipeline.inputs import Inputs, batch_arrays
from cpfd.pipeline.tokenization import encode_text
from cpfd.storage.corpus import Corpus, WorkUnit
from cpfd.storage.errors import CpfdError


def collate(table: pa.Table, inputs: Inputs, tokenizer, max_length: int, widths: dict) -> dict:
    """One Arrow table of rows -> the batch dict of tensors (`pipeline.inputs.batch_arrays`, as tensors)."""
    def encode(titles, ocr_texts):
        return encode_text(tokenizer, titles, ocr_texts, max_length=max_length)

    return {key: torch.from_numpy(array) for key, array in batch_arrays(table, inputs, encode, widths).items()}


def id_uniforms(ids: pa.Array | pa.ChunkedArray, salt: str) -> np.ndarray:
    """A number in [0, 1) per sample id, from a 64-bit FNV-1a hash of `salt` + the id's UTF-8 bytes.

    The same on every machine and in every process (no Python hash randomization), computed column
    by column over the ids' bytes with numpy (no loop over rows), so a training split, a validation
    split or a fold follows from the id alone and needs no stored state."""
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    ids = ids.cast(pa.large_binary())
    n = len(ids)
    if n == 0:
        return np.zeros(0)
    offsets = np.frombuffer(ids.buffers()[1], dtype=np.int64)[ids.offset: ids.offset + n + 1]
    data = np.frombuffer(ids.buffers()[2], dtype=np.uint8) if ids.buffers()[2] is not None else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    prime = np.uint64(0x100000001B3)
    h = np.full(n, 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for byte in salt.encode():
            h = (h ^ np.uint64(byte)) * prime
        for k in range(int(lengths.max(initial=0))):
            alive = lengths > k
            byte = np.zeros(n, dtype=np.uint64)
            byte[alive] = data[offsets[:-1][alive] + k]
            h = np.where(alive, (h ^ byte) * prime, h)
        h ^= h >> np.uint64(33)  # fold the high bits down: FNV's low bits mix poorly
        h = h * np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class RowSelection:
    """The rows of a split whose id hashes (`id_uniforms` with `salt`) into [lo, hi), or outside it.

    validation_rows(0.1) is the validation split carved from train; training_rows(0.1) the rest;
    with cross-fitting, fold k of K is [k/K, (k+1)/K) under the salt "cpfd.fold"."""

    salt: str
    lo: float = 0.0
    hi: float = 1.0
    inside: bool = True

    def mask(self, ids) -> np.ndarray:
        u = id_uniforms(ids, self.salt)
        hit = (u >= self.lo) & (u < self.hi)
        return hit if self.inside else ~hit


VALIDATION_SALT = "cpfd.validation"
FOLD_SALT = "cpfd.fold"


def validation_rows(fraction: float) -> RowSelection:
    return RowSelection(VALIDATION_SALT, 0.0, fraction, inside=True)


def training_rows(fraction: float) -> RowSelection:
    return RowSelection(VALIDATION_SALT, 0.0, fraction, inside=False)


def fold_rows(k: int, folds: int, inside: bool = True) -> RowSelection:
    return RowSelection(FOLD_SALT, k / folds, (k + 1) / folds, inside=inside)


def fold_of(ids, folds: int) -> np.ndarray:
    """The fold (0..folds-1) of each id."""
    return np.minimum((id_uniforms(ids, FOLD_SALT) * folds).astype(np.int64), folds - 1)


def deal(units: Sequence, part: int, parts: int) -> list:
    """Round-robin share `part` of `parts` (rank x worker) of the work units."""
    return list(units[part::parts])


class CorpusBatches(IterableDataset):
    """Batches of one corpus split, streamed row group by row group.

    `extra(unit, table_rows) -> dict of numpy arrays` lets an aligned source (the teacher dump)
    add columns for the same rows; `extra_open()` is called once per worker to open it.
    """

    def __init__(
        self,
        corpus: Corpus | str,
        split: str,
        inputs: Inputs,
        *,
        tokenizer=None,
        max_length: int = 32,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        extra_open: Callable[[], Callable[[WorkUnit], dict]] | None = None,
        select: Sequence[RowSelection] = (),
    ):
        # An opened Corpus was verified by its caller; a path is verified here, once, in the parent.
        corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        if inputs.text and tokenizer is None:
            raise ValueError("a corpus with text needs a tokenizer")
        self.corpus_path = corpus.path
        self.split = split
        self.inputs = inputs
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.skip_batches = 0  # batches of this epoch already trained on (set when resuming)
        self.extra_open = extra_open
        self.units = corpus.work_units(split)
        self.select = tuple(select)
        # Rows of each unit that the selections keep: read once, here (ids only), for the batch count.
        self.unit_rows = [u.rows for u in self.units] if not self.select else [
            int(self._mask(table.column(0)).sum()) for table in corpus.iter_batches(split, ["sample_id"], self.units)]
        self.num_rows = sum(self.unit_rows)
        self.widths = {"features": len(corpus.features), "privileged": len(corpus.privileged_features),
                       "image_size": corpus.image_size}
        self._corpus = None

    def _mask(self, ids) -> np.ndarray:
        mask = np.ones(len(ids), dtype=bool)
        for selection in self.select:
            mask &= selection.mask(ids)
        return mask

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """Reshuffle for a new epoch (same seed + epoch -> same order), optionally starting
        `skip_batches` into it: the position of a resumed run (nothing skipped is decoded)."""
        self.epoch = epoch
        self.skip_batches = skip_batches

    def __len__(self) -> int:  # batches, for progress bars (one process, no remainders lost)
        return -(-self.num_rows // self.batch_size)

    def epoch_pairs(self, epoch: int) -> list[tuple[WorkUnit, int]]:
        """Every (unit, selected rows) pair in the epoch's order (shuffled by seed and epoch)."""
        pairs = list(zip(self.units, self.unit_rows))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(pairs))
            pairs = [pairs[i] for i in order]
        return pairs

    def rank_batches(self, epoch: int, world: int, workers: int) -> list[int]:
        """How many batches each of `world` ranks yields in `epoch`, each over `workers` DataLoader
        workers (each worker batches its own rows). The same on every rank: no communication."""
        pairs, workers = self.epoch_pairs(epoch), max(workers, 1)
        parts = world * workers
        return [sum(-(-sum(rows for _, rows in deal(pairs, r * workers + w, parts)) // self.batch_size)
                    for w in range(workers)) for r in range(world)]

    def steps(self, epoch: int, world: int = 1, workers: int = 0) -> int:
        """Optimizer steps of the epoch: every rank takes as many as the rank with the most batches
        (ranks with fewer repeat a batch at weight 0), so no rank waits for another at a collective."""
        return max(self.rank_batches(epoch, world, workers))

    def any_batch(self) -> dict:
        """A batch of the split's first rows, whatever this process's share: what a rank with no rows
        at all in an epoch steps with, at weight 0."""
        table = Corpus(self.corpus_path, verify="fast").read_unit(self.units[0], self.inputs.columns())
        extra = self.extra_open()(self.units[0]) if self.extra_open is not None else {}
        n = min(self.batch_size, table.num_rows)
        return self._batch(table.slice(0, n), {k: v[:n] for k, v in extra.items()})

    def __iter__(self) -> Iterator[dict]:
        rank, world = distributed.rank(), distributed.world()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # A DataLoader takes batches from its workers in turn: of the batches a resumed epoch has
        # done already, this worker did every `workers`-th.
        skip = self.skip_batches // workers + (1 if worker < self.skip_batches % workers else 0)
        return self.part_batches(rank * workers + worker, world * workers, skip_rows=skip * self.batch_size)

    def part_batches(self, part: int, parts: int, skip_rows: int = 0) -> Iterator[dict]:
        """The batches of share `part` of `parts` (rank x DataLoader worker) in this epoch, after its
        first `skip_rows` rows; the last batch of a share may be short."""
        if self._corpus is None:
            self._corpus = Corpus(self.corpus_path, verify="fast")
        extra = self.extra_open() if self.extra_open is not None else None
        columns = self.inputs.columns() + (["sample_id"] if self.select else [])
        pending: pa.Table | None = None
        pending_extra: dict | None = None
        skip = skip_rows
        for unit, rows in deal(self.epoch_pairs(self.epoch), part, parts):
            if skip >= rows:  # a resumed epoch: these rows were trained on already (or none are selected)
                skip -= rows
                continue
            table = self._corpus.read_unit(unit, columns)
            more = extra(unit) if extra is not None else {}
            if self.select:  # only the selected rows, the dump's columns with them
                keep = self._mask(table.column("sample_id"))
                table = table.filter(pa.array(keep)).drop_columns(["sample_id"])
                more = {k: v[keep] for k, v in more.items()}
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch, unit.shard, unit.row_group]).permutation(table.num_rows)
                table = table.take(order)
                more = {k: v[order] for k, v in more.items()}
            if skip:
                table, more, skip = table.slice(skip), {k: v[skip:] for k, v in more.items()}, 0
            if pending is not None:
                table = pa.concat_tables([pending, table])
                more = {k: np.concatenate([pending_extra[k], v]) for k, v in more.items()}
            start = 0
            while table.num_rows - start >= self.batch_size:
                yield self._batch(table.slice(start, self.batch_size), {k: v[start:start + self.batch_size] for k, v in more.items()})
                start += self.batch_size
            pending = table.slice(start) if start < table.num_rows else None
            pending_extra = {k: v[start:] for k, v in more.items()}
        if pending is not None and pending.num_rows:
            yield self._batch(pending, pending_extra)

    def _batch(self, table: pa.Table, more: dict) -> dict:
        try:
            batch = collate(table, self.inputs, self.tokenizer, self.max_length, self.widths)
        except CpfdError as e:
            raise CpfdError(f"{self.corpus_path} ({self.split} split): {e}") from None
        for key, value in more.items():
            batch[key] = torch.from_numpy(np.ascontiguousarray(value))
        return batch


def weighted(batches, steps: int, fallback) -> Iterator[dict]:
    """Exactly `steps` batches, each with a `weight` per row: 1 for the batches of `batches`, then the
    last of them again at weight 0 until `steps` (a rank with fewer rows than another takes part in
    every step; its extra batches add nothing). `fallback()` gives a batch when there was none."""
    last = None
    for batch in batches:
        if steps <= 0:
            return
        last = batch
        yield {**batch, "weight": torch.ones(len(batch["labels"]))}
        steps -= 1
    while steps > 0:
        last = last if last is not None else fallback()
        yield {**last, "weight": torch.zeros(len(last["labels"]))}
        steps -= 1


def make_loader(dataset: CorpusBatches, num_workers: int = 0, pin_memory: bool = False,
                ranks: int | None = None) -> DataLoader:
    """A DataLoader over pre-batched data: workers decode frames and tokenize in parallel.

    `pin_memory` (for a CUDA device) hands out batches in page-locked memory, so that their
    non-blocking copies to the GPU (`pipeline.scoring.to_device`) overlap with compute.
    Warns (once, here in the parent, not in every worker every epoch) when ranks x workers
    outnumber the row groups: some of them would idle. `ranks` is how many processes share the
    dataset's row groups (default: the torchrun world; 1 for units that are this process's alone)."""
    parts = (distributed.world() if ranks is None else ranks) * max(num_workers, 1)
    if parts > len(dataset.units):
        warnings.warn(f"{parts} ranks x DataLoader workers share {len(dataset.units)} row groups of the "
                      f"{dataset.split} split: some will idle (write the corpus with a smaller --row-group-rows; docs/scaling.md)",
                      stacklevel=2)
    # A private generator: creating a loader iterator draws a base seed from it, and drawing from
    # the global RNG instead would shift dropout after a resume. The dataset seeds its own order.
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, persistent_workers=False,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(0))
