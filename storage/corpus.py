"""The corpus directory (docs/formats.md, "Corpus directory"): an atomic shard writer and a validating, streaming reader.

    corpus/corpus.json               written last; a folder without it is not a corpus
    corpus/train/part-00000.parquet  CORPUS_SCHEMA, row groups of at most 64k rows
    corpus/eval/part-00000.parquet

Writing (`CorpusWriter`): rows are buffered per split up to one row group, appended to the open
shard (a dot-prefixed temp file), and a full shard is fsynced and renamed to `part-NNNNN.parquet`.
`close()` commits the last shards, then writes `corpus.json` atomically. Memory is bounded by one
row group per split, whatever the corpus size. Any exception inside `with CorpusWriter(...)`
removes everything this write created, so a crash leaves either no corpus or a complete one.

Reading (`Corpus`): checks `corpus.json` against the shards (schema version, Parquet schema, row
counts, fingerprint over split/shard/row counts/ids), then streams record batches of a split with
column projection, one row group at a time. The unit of parallel work is (shard, row group).
"""

from __future__ import annotations

import hashlib
import json
import re
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpfd.storage.atomic import atomic_write_json, commit, remove_temp_files, temp_path_for
from cpfd.storage.errors import CpfdError
from cpfd.storage.outputs import exclusive, replacing
from cpfd.storage.schema import (
    CORPUS_COLUMNS,
    CORPUS_JSON,
    CORPUS_DICTIONARY_COLUMNS,
    CORPUS_JSON_SHAPE,
    CORPUS_SCHEMA,
    MAX_ROW_GROUP_ROWS,
    SCHEMA_VERSION,
    SHARD_FILE,
    SPLITS,
    check_columns,
    check_json,
)


# A class with fewer rows than this in a split makes its metrics swing with a single row: warned about.
MIN_CLASS_ROWS = 5


def shard_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def fingerprint_of(splits: dict) -> str:
    """Hash of split names, shard files, row counts and each shard's `ids_sha256` (an `IdDigest`)."""
    listing = [
        [split, s["file"], s["rows"], s["ids_sha256"]]
        for split in SPLITS
        for s in splits.get(split, {}).get("shards", [])
    ]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


class IdDigest:
    """sha256 of a sequence of sample ids that no two different sequences share: a shard's `ids_sha256`.

    Joining ids with a separator is ambiguous once an id may hold the separator (["x\\ny", "z"] and
    ["x", "y\\nz"] would agree), so the digest covers the ids' lengths and their bytes apart:
    sha256("cpfd.ids.v2" | count | sha256(lengths as int64 LE) | sha256(UTF-8 bytes, concatenated)).
    `update` takes Arrow string arrays straight from their buffers (no Python loop) or any
    iterable of str; the result does not depend on how the ids are chunked.
    """

    def __init__(self):
        self.count = 0
        self.lengths = hashlib.sha256()
        self.data = hashlib.sha256()

    def update(self, ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> "IdDigest":
        if not isinstance(ids, (pa.Array, pa.ChunkedArray)):
            ids = pa.array(list(ids), type=pa.string())
        for chunk in ids.chunks if isinstance(ids, pa.ChunkedArray) else [ids]:
            if len(chunk) == 0:
                continue
            if chunk.null_count:
                raise CpfdError("sample_id holds nulls")
            chunk = chunk.cast(pa.large_string())
            offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[chunk.offset: chunk.offset + len(chunk) + 1]
            self.lengths.update(np.diff(offsets).astype("<i8").tobytes())
            if chunk.buffers()[2] is not None:
                self.data.update(memoryview(chunk.buffers()[2])[offsets[0]:offsets[-1]])
            self.count += len(chunk)
        return self

    def hexdigest(self) -> str:
        return hashlib.sha256(b"cpfd.ids.v2" + self.count.to_bytes(8, "little") + self.lengths.digest()
                              + self.data.digest()).hexdigest()


def hash_ids(ids: pa.Array | pa.ChunkedArray | Iterable[str]) -> str:
    """`IdDigest` of one sequence of ids, as hex."""
    return IdDigest().update(ids).hexdigest()


def hash_labels(labels: pa.Array | pa.ChunkedArray | Sequence[int], h=None):
    """Update (or start) the sha256 over the labels as little-endian int32: a shard's `labels_sha256`."""
    h = h or hashlib.sha256()
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    if isinstance(labels, pa.Array):
        if labels.null_count:
            raise CpfdError("label holds nulls")
        labels = labels.to_numpy(zero_copy_only=False)
    h.update(np.ascontiguousarray(labels, dtype="<i4").tobytes())
    return h


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


class _SplitWriter:
    """Buffers one split's rows into row groups and rolls shards over at `rows_per_shard`."""

    def __init__(self, folder: Path, rows_per_shard: int, row_group_rows: int):
        self.folder = folder
        self.rows_per_shard = rows_per_shard
        self.row_group_rows = row_group_rows
        self.buffer: dict[str, list] = {c: [] for c in CORPUS_COLUMNS}
        self.buffered = 0
        self.shards: list[dict] = []  # committed: {file, rows, ids_sha256, labels_sha256}
        self.writer: pq.ParquetWriter | None = None
        self.tmp: Path | None = None
        self.shard_rows = 0
        self.ids_hash = self.labels_hash = None

    def add(self, row: dict) -> None:
        for c in CORPUS_COLUMNS:
            self.buffer[c].append(row[c])
        self.buffered += 1
        if self.buffered >= min(self.row_group_rows, self.rows_per_shard - self.shard_rows):
            self.flush_row_group()

    def flush_row_group(self) -> None:
        if self.buffered == 0:
            return
        if self.writer is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.tmp = temp_path_for(self.folder / shard_name(len(self.shards)))
            self.writer = pq.ParquetWriter(
                self.tmp,
                CORPUS_SCHEMA,
                compression="zstd",
                use_dictionary=CORPUS_DICTIONARY_COLUMNS,
                write_statistics=["sample_id", "label"],
            )
            self.shard_rows, self.ids_hash, self.labels_hash = 0, IdDigest(), hashlib.sha256()
        table = pa.Table.from_pydict(self.buffer, schema=CORPUS_SCHEMA)
        self.writer.write_table(table, row_group_size=self.buffered)
        self.ids_hash.update(table.column("sample_id"))
        hash_labels(table.column("label"), self.labels_hash)
        self.shard_rows += self.buffered
        self.buffer = {c: [] for c in CORPUS_COLUMNS}
        self.buffered = 0
        if self.shard_rows >= self.rows_per_shard:
            self.commit_shard()

    def commit_shard(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        final = self.folder / shard_name(len(self.shards))
        commit(self.tmp, final)
        self.shards.append(
            {
                "file": final.name,
                "rows": self.shard_rows,
                "ids_sha256": self.ids_hash.hexdigest(),
                "labels_sha256": self.labels_hash.hexdigest(),
            }
        )
        self.writer, self.tmp, self.shard_rows = None, None, 0

    def close(self) -> None:
        self.flush_row_group()
        self.commit_shard()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.tmp is not None and self.tmp.exists():
            self.tmp.unlink()
        for s in self.shards:
            (self.folder / s["file"]).unlink(missing_ok=True)


def prepare_output_dir(out: Path, overwrite: bool, manifest_name: str, what: str) -> None:
    """Refuse to clobber a finished directory unless `overwrite`; create it if needed."""
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    if (out / manifest_name).exists() and not overwrite:
        raise CpfdError(f"{out} already holds a {what} ({manifest_name}); pass --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)


class CorpusWriter:
    """Write a corpus directory. Use as a context manager; `add(split, row)` for each sample.

    A row is a dict with every column of CORPUS_SCHEMA (`sample_id`, `label`, `title`,
    `ocr_text`, `frames`, `privileged`, `features`).

    The writer holds `out`'s lock (`storage.outputs.exclusive`) until it closes: a second writer
    is refused. With `overwrite` over a finished corpus it writes into a staging folder beside it
    (`self.out`; `self.destination` is the folder asked for) and swaps it in when `close()` has
    written corpus.json, so a failed write leaves the old corpus as it was.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        task: str,
        classes: Sequence[str],
        frames_per_video: int,
        image_size: int,
        has_text: bool,
        privileged_features: Sequence[str],
        features: Sequence[str],
        rows_per_shard: int = 262_144,
        row_group_rows: int = 8_192,
        overwrite: bool = False,
        created_by: str = "cpfd",
        extra: dict | None = None,
    ):
        if not 1 <= row_group_rows <= MAX_ROW_GROUP_ROWS:
            raise CpfdError(f"row_group_rows must be in [1, {MAX_ROW_GROUP_ROWS}], got {row_group_rows}")
        if rows_per_shard < 1:
            raise CpfdError(f"rows_per_shard must be positive, got {rows_per_shard}")
        if len(classes) < 2:
            raise CpfdError(f"a corpus needs at least 2 classes, got {list(classes)}")
        self.destination = Path(out)
        prepare_output_dir(self.destination, overwrite, CORPUS_JSON, "corpus")
        self.created = not any(self.destination.iterdir())  # an empty folder goes again if the write fails
        self._stack = ExitStack()
        try:
            self._stack.enter_context(exclusive(self.destination, "this corpus"))
            self.out = self._stack.enter_context(
                replacing(self.destination, overwrite, lambda d: (d / CORPUS_JSON).exists()))
        except BaseException:
            self._stack.close()
            raise
        for split in SPLITS:
            # Leftovers of an earlier write that never finished (no corpus.json): start clean.
            folder = self.out / split
            remove_temp_files(folder)
            for stale in folder.glob("part-*.parquet") if folder.is_dir() else []:
                stale.unlink()
        self.meta = {
            "schema_version": SCHEMA_VERSION,
            "task": task,
            "classes": [str(c) for c in classes],
            "num_classes": len(classes),
            "frames_per_video": int(frames_per_video),
            "image_size": int(image_size),
            "has_text": bool(has_text),
            "privileged_features": list(privileged_features),
            "features": list(features),
            **(extra or {}),
        }
        self.created_by = created_by
        self.splits = {s: _SplitWriter(self.out / s, rows_per_shard, row_group_rows) for s in SPLITS}
        self.rows_written = {s: 0 for s in SPLITS}
        self.closed = False

    def add(self, split: str, row: dict) -> None:
        if split not in self.splits:
            raise CpfdError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        self.splits[split].add(row)
        self.rows_written[split] += 1

    def close(self) -> dict:
        """Commit the last shards, then `corpus.json` (then swap a staged overwrite in). Returns its content."""
        for w in self.splits.values():
            w.close()
        splits = {s: {"rows": self.rows_written[s], "shards": w.shards} for s, w in self.splits.items()}
        meta = {
            **self.meta,
            "splits": splits,
            "fingerprint": fingerprint_of(splits),
            "created_by": self.created_by,
        }
        atomic_write_json(self.out / CORPUS_JSON, meta)
        self.closed = True
        self._stack.close()  # swaps a staged folder in, then lets go of the lock
        return meta

    def abort(self, error: BaseException | None = None) -> None:
        """Remove what this write created; a staged overwrite is dropped and the old corpus stays."""
        try:
            for w in self.splits.values():
                w.abort()
            for split in SPLITS:
                folder = self.out / split
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
        finally:
            error = error or CpfdError("the corpus write was aborted")
            self._stack.__exit__(type(error), error, error.__traceback__)  # drops the staging folder, unlocks
            if self.created and self.destination.is_dir() and not any(self.destination.iterdir()):
                self.destination.rmdir()

    def __enter__(self) -> "CorpusWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort(exc)
        elif not self.closed:
            self.close()


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkUnit:
    """One row group of one shard: the unit dealt to ranks and DataLoader workers."""

    split: str
    shard: int
    row_group: int
    rows: int
    offset: int  # index of the unit's first row within the split


def check_corpus_json(meta: dict, where: Path) -> None:
    """corpus.json has the shape and the values a reader relies on; CpfdError naming the field otherwise."""
    check_json(meta, CORPUS_JSON_SHAPE, str(where))
    if len(meta["classes"]) < 2 or meta["num_classes"] != len(meta["classes"]):
        raise CpfdError(f"{where}: num_classes {meta['num_classes']} with classes {meta['classes'][:10]} "
                        "(at least 2 names, one per class)")
    if not 0 <= meta["frames_per_video"] <= 256 or not 0 <= meta["image_size"] <= 1024:
        raise CpfdError(f"{where}: frames_per_video {meta['frames_per_video']} and image_size {meta['image_size']} "
                        "must be in [0, 256] and [0, 1024]")
    if meta["frames_per_video"] and not meta["image_size"]:
        raise CpfdError(f"{where}: frames_per_video {meta['frames_per_video']} with image_size 0")
    unknown = sorted(set(meta["splits"]) - set(SPLITS))
    if unknown:
        raise CpfdError(f"{where}: unknown split(s) {unknown} in splits; expected {list(SPLITS)}")
    for split, entry in meta["splits"].items():
        for shard in entry["shards"]:
            if not re.fullmatch(SHARD_FILE, shard["file"]):
                raise CpfdError(f"{where}: splits.{split} lists a shard file {shard['file']!r}; "
                                f"expected names like {shard_name(0)}")


class Corpus:
    """A validated corpus directory. `Corpus(path)` raises CpfdError if it is not sound.

    verify="full" re-hashes every shard's ids (and labels, for corpora that record
    `labels_sha256`) against corpus.json (reads `sample_id` and `label` once); "fast" checks schema version, Parquet schemas and row counts only (what a
    DataLoader worker re-opening an already verified corpus needs).
    """

    def __init__(self, path: str | Path, verify: str = "full"):
        self.path = Path(path)
        meta_path = self.path / CORPUS_JSON
        if not self.path.is_dir():
            raise CpfdError(f"{self.path}: no such corpus directory")
        if not meta_path.exists():
            raise CpfdError(f"{self.path}: no {CORPUS_JSON} (not a corpus, or its write did not finish)")
        try:
            self.meta = json.loads(meta_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise CpfdError(f"{meta_path}: not valid JSON ({e})") from None
        version = self.meta.get("schema_version") if isinstance(self.meta, dict) else None
        if version == 1:
            raise CpfdError(f"{meta_path}: schema_version 1, written by an older cpfd whose id hashes could make two "
                            f"corpora look the same; write it again with this cpfd (cpfd import / cpfd synth)")
        if version != SCHEMA_VERSION:
            raise CpfdError(f"{meta_path}: schema_version {version!r}, this cpfd reads {SCHEMA_VERSION}")
        check_corpus_json(self.meta, meta_path)
        self._check(verify)

    # ---- metadata -----------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])

    @property
    def frames_per_video(self) -> int:
        return int(self.meta["frames_per_video"])

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def has_frames(self) -> bool:
        return self.frames_per_video > 0

    @property
    def has_text(self) -> bool:
        return bool(self.meta["has_text"])

    @property
    def privileged_features(self) -> list[str]:
        return list(self.meta["privileged_features"])

    @property
    def features(self) -> list[str]:
        return list(self.meta["features"])

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def num_rows(self, split: str) -> int:
        return int(self._split(split)["rows"])

    def shard_paths(self, split: str) -> list[Path]:
        return [self.path / split / s["file"] for s in self._split(split)["shards"]]

    def shard_rows(self, split: str) -> list[int]:
        return [int(s["rows"]) for s in self._split(split)["shards"]]

    def shard_digests(self, split: str) -> list[tuple[str, str | None]]:
        """(ids_sha256, labels_sha256) per shard; labels_sha256 is None for a corpus written before
        cpfd recorded it."""
        return [(s["ids_sha256"], s.get("labels_sha256")) for s in self._split(split)["shards"]]

    # ---- validation ---------------------------------------------------------------------
    def _split(self, split: str) -> dict:
        if split not in SPLITS:
            raise CpfdError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
        return self.meta["splits"].get(split, {"rows": 0, "shards": []})

    def _check(self, verify: str) -> None:
        splits = self.meta.get("splits", {})
        if fingerprint_of(splits) != self.meta.get("fingerprint"):
            raise CpfdError(f"{self.path / CORPUS_JSON}: fingerprint does not match its shard listing")
        self._row_groups: dict[str, list[list[int]]] = {}
        for split in SPLITS:
            entry = splits.get(split, {"rows": 0, "shards": []})
            total, groups = 0, []
            for s in entry["shards"]:
                file = self.path / split / s["file"]
                if not file.exists():
                    raise CpfdError(f"{file}: shard listed in corpus.json is missing")
                try:
                    md = pq.ParquetFile(file).metadata
                    schema = md.schema.to_arrow_schema()
                except Exception as e:  # pyarrow raises several types for damaged files
                    raise CpfdError(f"{file}: not a readable Parquet file ({e})") from None
                if not schema.remove_metadata().equals(CORPUS_SCHEMA):
                    raise CpfdError(f"{file}: columns do not match corpus schema version {SCHEMA_VERSION}")
                if md.num_rows != s["rows"]:
                    raise CpfdError(f"{file}: holds {md.num_rows} rows, corpus.json says {s['rows']}")
                if verify == "full":
                    rows = pq.read_table(file, columns=["sample_id", "label"])
                    if hash_ids(rows.column("sample_id")) != s["ids_sha256"]:
                        raise CpfdError(f"{file}: sample ids do not match the corpus fingerprint")
                    if "labels_sha256" in s and hash_labels(rows.column("label")).hexdigest() != s["labels_sha256"]:
                        raise CpfdError(f"{file}: labels do not match labels_sha256 in corpus.json")
                groups.append([md.row_group(i).num_rows for i in range(md.num_row_groups)])
                total += md.num_rows
            if total != entry["rows"]:
                raise CpfdError(f"{self.path / CORPUS_JSON}: split {split} lists {entry['rows']} rows, shards hold {total}")
            self._row_groups[split] = groups

    # ---- streaming ----------------------------------------------------------------------
    def row_groups(self, split: str) -> list[list[int]]:
        """Row counts of each row group, per shard: `row_groups(split)[shard][group]`."""
        self._split(split)
        return self._row_groups[split]

    def work_units(self, split: str) -> list[WorkUnit]:
        units, offset = [], 0
        for shard, groups in enumerate(self.row_groups(split)):
            for group, rows in enumerate(groups):
                units.append(WorkUnit(split, shard, group, rows, offset))
                offset += rows
        return units

    def read_unit(self, unit: WorkUnit, columns: Sequence[str]) -> pa.Table:
        """One row group, only the columns asked for; a damaged one is a CpfdError naming the file."""
        columns = check_columns(columns)
        file = self.shard_paths(unit.split)[unit.shard]
        try:
            table = pq.ParquetFile(file).read_row_group(unit.row_group, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise CpfdError(f"{file}: cannot read row group {unit.row_group} ({' '.join(str(e).split())})") from None
        self.check_rows(table, file, unit.row_group)
        return table

    def check_rows(self, table: pa.Table, file: Path, row_group: int) -> None:
        """The rows hold what corpus.json says: labels among the classes, frames per video, feature counts."""
        where = f"{file}: row group {row_group}"
        if "label" in table.column_names and table.num_rows:
            labels = table.column("label")
            low, high = pc.min(labels).as_py(), pc.max(labels).as_py()
            if labels.null_count or low < 0 or high >= self.num_classes:
                raise CpfdError(f"{where} holds label {high if high >= self.num_classes else low}, "
                                f"corpus.json lists {self.num_classes} classes")
        for column, width in (("frames", self.frames_per_video), ("privileged", len(self.privileged_features)),
                              ("features", len(self.features))):
            if column in table.column_names and table.num_rows:
                lengths = pc.list_value_length(table.column(column)).fill_null(0)
                bad = pc.not_equal(lengths, width)
                if pc.any(bad).as_py():
                    got = pc.filter(lengths, bad)[0].as_py()
                    raise CpfdError(f"{where} holds a row with {got} {column} values, corpus.json says {width}")

    def iter_batches(
        self, split: str, columns: Sequence[str], units: Sequence[WorkUnit] | None = None
    ) -> Iterator[pa.Table]:
        """Yield one table per row group of `split` (or of `units`), projected to `columns`."""
        columns = check_columns(columns)
        units = self.work_units(split) if units is None else units
        open_file, current = None, None
        for unit in units:
            file = self.shard_paths(unit.split)[unit.shard]
            try:
                if file != current:
                    open_file, current = pq.ParquetFile(file), file
                table = open_file.read_row_group(unit.row_group, columns=columns)
            except (pa.ArrowException, OSError) as e:
                raise CpfdError(f"{file}: cannot read row group {unit.row_group} ({' '.join(str(e).split())})") from None
            self.check_rows(table, file, unit.row_group)
            yield table

    def read_column(self, split: str, column: str) -> pa.ChunkedArray:
        """A whole (small) column of a split, e.g. labels for class counts."""
        check_columns([column])
        tables = []
        for f in self.shard_paths(split):
            try:
                tables.append(pq.read_table(f, columns=[column]))
            except (pa.ArrowException, OSError) as e:
                raise CpfdError(f"{f}: cannot read {column} ({' '.join(str(e).split())})") from None
        if not tables:
            return pa.chunked_array([], type=CORPUS_SCHEMA.field(column).type)
        return pa.concat_tables(tables).column(0)

    def label_counts(self, split: str) -> list[int]:
        """How many rows of each class the split holds (reads the label column only)."""
        if not self.num_rows(split):
            return [0] * self.num_classes
        labels = self.read_column(split, "label").to_numpy()
        return np.bincount(labels, minlength=self.num_classes)[: self.num_classes].tolist()

    def split_problems(self, splits: Sequence[str] = SPLITS) -> list[str]:
        """What a user should hear about the splits: one empty, or holding one class, or a handful of rows."""
        problems = []
        for split in splits:
            counts = self.label_counts(split)
            present = [self.classes[i] for i, n in enumerate(counts) if n]
            if sum(counts) == 0:
                problems.append(f"{self.path}: the {split} split has no rows")
            elif len(present) < 2:
                problems.append(f"{self.path}: the {split} split holds one class ({present[0]}, {sum(counts)} rows): "
                                + ("a model cannot learn to tell classes apart from it" if split == "train" else
                                   "ROC AUC, PR AUC and F1 are undefined or meaningless on it"))
            elif min(n for n in counts if n) < MIN_CLASS_ROWS:
                rare = min((n, c) for c, n in zip(self.classes, counts) if n)
                problems.append(f"{self.path}: the {split} split holds {rare[0]} row(s) of class {rare[1]}: "
                                "metrics on it swing with a single row")
        return problems

    def summary(self) -> dict:
        """What `cpfd info` prints: splits, rows, class counts, features, frames, version."""
        splits = {}
        for split in SPLITS:
            labels = self.read_column(split, "label").to_numpy() if self.num_rows(split) else []
            counts = {c: 0 for c in self.classes}
            for i, c in enumerate(self.classes):
                counts[c] = int((labels == i).sum()) if len(labels) else 0
            splits[split] = {
                "rows": self.num_rows(split),
                "shards": len(self.shard_paths(split)),
                "row_groups": sum(len(g) for g in self.row_groups(split)),
                "label_counts": counts,
            }
        return {
            "kind": "corpus",
            "path": str(self.path),
            "task": self.meta.get("task"),
            "schema_version": self.meta["schema_version"],
            "classes": self.classes,
            "frames_per_video": self.frames_per_video,
            "image_size": self.image_size,
            "has_text": self.has_text,
            "privileged_features": self.privileged_features,
            "features": self.features,
            "splits": splits,
            "fingerprint": self.fingerprint,
            "created_by": self.meta.get("created_by"),
        }
