"""The teacher-dump directory (docs/formats.md, "Teacher dump"): a crash-safe shard writer and an aligned reader.

    dump/_manifest.json       written last, atomically; a folder without it is an unfinished dump
    dump/part-00000.parquet   one per corpus shard of the dumped split: same file name, same rows in
                              the same order, same row groups; columns of `schema.dump_schema(C)`:
                              sample_id, label, logits (raw, T = 1), teacher_loss (CE vs label)

Every shard carries the dump's provenance (the manifest less its shard list) as JSON under the
Parquet key-value metadata key b"cpfd.dump", so a shard can be matched to its teacher and corpus
even before the manifest exists, and its own record under b"cpfd.shard": {rows, ids_sha256,
labels_sha256} hashed from the rows it holds the way corpus.json hashes a corpus shard, and
`computed` (device, precision, batch size of the teacher run that wrote it).

Writing (the `dump-teacher` command runs the teacher; this module only stores what it computes):

    provenance = dump_provenance(corpus, split, teacher={"dir": ..., "weights_sha256": ..., "config": {...}})
    for shard in plan_dump(out, corpus, split, provenance["teacher"], overwrite, num_shards, shard_index):
        write_dump_shard(out, corpus, split, shard, arrays_for(shard), provenance)
    finalize_dump(out, corpus, split, provenance)  # True once every shard of the split is committed

`arrays_for(shard)` yields one `(sample_ids, labels, logits (n, C) float32, teacher_loss (n,) float32)`
per row group of the corpus shard, in order. The writer checks them against the corpus rows
(ids, labels, shapes, finite values, teacher_loss = CE of the logits) before anything is stored.
A shard is written to `.part-NNNNN.parquet.PID.tmp` (a name of its own per process) and renamed
when complete, so a crash leaves committed shards and at most one temp file per worker. Whoever
finishes the dump reads every committed shard back before `_manifest.json` vouches for it (a
shard damaged on disk after its worker committed it is refused there); a rerun
(`plan_dump`) deletes the temp files of its own shards, keeps the committed shards that check out
(values read back against the `values_sha256` the writer recorded, finite, loss = CE) and
returns the rest. Job arrays: corpus shard i belongs to worker `i % num_shards`; whichever worker
finds every shard committed writes `_manifest.json`. The caller (`teacher.dump`) holds
an advisory lock on each shard it writes, so two processes never write one shard. Two provenances are the same dump when teacher weights, corpus fingerprint,
split, classes and schema agree: paths and `created_at` (when that run started; pass a fixed one
for byte-identical reruns) do not count.

Reading (`open_dump(dump_dir, corpus)` -> `TeacherDump`, the aligned reader): checks the
manifest against the corpus (fingerprint, split, classes, shard names, rows, row groups) and each
shard's footer (provenance, schema, rows, row groups, and its ids and labels digests against the
corpus shard's in corpus.json: the fingerprint covers ids, not labels, so a relabelled corpus is
caught here), then gives for a corpus `WorkUnit` the teacher logits and losses of exactly its
rows, reading only those two columns. Opening reads footers only, so each DataLoader worker can
afford it every epoch. `verify()` is the full pass (file sha256 against the manifest, the id and
label columns against the corpus's, every value finite): `cpfd distill` runs it once before
training. Streaming checks what it reads as well: every shard is written with Parquet page
checksums that every reader verifies (a damaged page is one error line, never data), and each row
read must be finite with teacher_loss the cross-entropy of its logits (`TeacherDump.read`). `read_teacher_losses(dump_dir)` reads
every stored loss of a finished dump without a corpus (calibration, matched PFD). Where a digest is missing (a dump or
corpus written before cpfd recorded them) the shard's columns are compared on its first read
instead. Any mismatch is a one-line `CpfdError` naming the file and the problem; nothing is
ever skipped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cpfd import version
from cpfd.storage.atomic import TMP_SUFFIX, commit, fsync_dir
from cpfd.storage.corpus import Corpus, IdDigest, WorkUnit, hash_labels
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import DUMP_MANIFEST, DUMP_MANIFEST_SHAPE, DUMP_SCHEMA_VERSION, SHARD_FILE, SPLITS, check_json, dump_schema

PROVENANCE_KEY = b"cpfd.dump"
# Each shard's footer also records what its rows are: {"rows", "ids_sha256", "labels_sha256"},
# hashed the way corpus.json hashes a corpus shard, from the rows the writer checked and stored,
# and, when the writer is told, how its logits were computed ("computed": device, precision,
# batch size), which `dump-teacher --verify` needs to recompute them exactly.
DIGESTS_KEY = b"cpfd.shard"

# benchmarks/stream_teacher_columns.py (2 cores): the hot path reads logits and teacher_loss every
# epoch, and zstd saves only ~10% on them (float mantissas are near-random) while halving the rows/s;
# ids and labels, read once per shard, shrink ~15x. So: zstd for those, none for the floats.
DUMP_COMPRESSION = {"sample_id": "zstd", "label": "zstd", "logits.list.element": "none", "teacher_loss": "none"}

TEACHER_COLUMNS = ["logits", "teacher_loss"]

# teacher_loss must be the cross-entropy of the stored logits. The check is loose on purpose: a
# teacher computing its loss under bf16 autocast is fine, a loss with label smoothing or with
# temperature-scaled logits is not.
LOSS_RTOL = 1e-2

# What makes two dumps "the same dump": everything in the provenance but paths and timestamps.
_IDENTITY_KEYS = ("schema_version", "num_classes", "classes", "loss", "logits_temperature")



def dump_provenance(corpus: Corpus, split: str, teacher: dict, created_at: str | None = None) -> dict:
    """The manifest less its shard list: what every shard's key-value metadata holds.

    `teacher` is {"dir": str, "weights_sha256": str, "config": dict (the teacher's config.json)}, and
    for a cross-fitted teacher also "folds": [{"fold", "dir", "weights_sha256"}, ...] (then the
    shards get a `fold` column).
    `created_at` defaults to now (UTC, ISO 8601); pass a fixed one for byte-identical reruns.
    """
    _check_split(corpus, split)
    missing = [k for k in ("dir", "weights_sha256", "config") if k not in teacher]
    if missing:
        raise ValueError(f"teacher provenance needs {missing}, got keys {sorted(teacher)}")
    return {
        "schema_version": DUMP_SCHEMA_VERSION,
        "teacher": {
            "dir": str(teacher["dir"]),
            "weights_sha256": str(teacher["weights_sha256"]),
            "config": teacher["config"],
            # a cross-fitted teacher: each fold's folder and weights (weights_sha256 then hashes them all)
            **({"folds": teacher["folds"]} if teacher.get("folds") else {}),
        },
        "corpus": {"path": str(corpus.path.resolve()), "fingerprint": corpus.fingerprint, "split": split},
        "num_classes": corpus.num_classes,
        "classes": corpus.classes,
        "loss": "cross_entropy",
        "logits_temperature": 1,
        "created_at": created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpfd_version": version(),
    }


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def _as_corpus(corpus: Corpus | str | Path) -> Corpus:
    return corpus if isinstance(corpus, Corpus) else Corpus(corpus)


def _check_split(corpus: Corpus, split: str) -> None:
    if split not in SPLITS:
        raise CpfdError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    if not corpus.shard_paths(split):
        raise CpfdError(f"{corpus.path}: split {split} has no rows to dump")


def _identity(provenance: dict) -> tuple:
    p = provenance
    return (
        tuple(json.dumps(p.get(k), sort_keys=True) for k in _IDENTITY_KEYS),
        (p.get("teacher") or {}).get("weights_sha256"),
        (p.get("corpus") or {}).get("fingerprint"),
        (p.get("corpus") or {}).get("split"),
    )


def _difference(have: dict, want: dict) -> str:
    """Why `have` (a stored provenance) is not the dump `want` describes, in a few words."""
    h_teacher, w_teacher = have.get("teacher") or {}, want.get("teacher") or {}
    h_corpus, w_corpus = have.get("corpus") or {}, want.get("corpus") or {}
    if h_teacher.get("weights_sha256") != w_teacher.get("weights_sha256"):
        return (
            f"another teacher (weights sha256 {str(h_teacher.get('weights_sha256'))[:12]}, "
            f"this one {str(w_teacher.get('weights_sha256'))[:12]})"
        )
    if h_corpus.get("fingerprint") != w_corpus.get("fingerprint"):
        return (
            f"another corpus (fingerprint {str(h_corpus.get('fingerprint'))[:12]}, "
            f"this one {str(w_corpus.get('fingerprint'))[:12]})"
        )
    if h_corpus.get("split") != w_corpus.get("split"):
        return f"another split ({h_corpus.get('split')}, this one {w_corpus.get('split')})"
    for k in _IDENTITY_KEYS:
        if have.get(k) != want.get(k):
            return f"another {k} ({have.get(k)!r}, this one {want.get(k)!r})"
    return "the same dump"


def _check_provenance(provenance: dict, corpus: Corpus, split: str) -> None:
    """A caller bug, not a user mistake: the provenance must describe this corpus split."""
    want = dump_provenance(corpus, split, provenance.get("teacher") or {"dir": "", "weights_sha256": "", "config": {}})
    want["teacher"] = provenance.get("teacher")
    if _identity(provenance) != _identity(want):
        raise ValueError(f"provenance does not describe this corpus split: it has {_difference(provenance, want)}")


def _has_folds(provenance: dict) -> bool:
    """Whether a dump (its provenance or manifest) comes from a cross-fitted teacher: a `fold` column."""
    return bool((provenance.get("teacher") or {}).get("folds"))


def _footer(file: Path) -> tuple[pq.FileMetaData, dict | None]:
    """(Parquet metadata, stored provenance or None); CpfdError if the file is not readable."""
    try:
        md = pq.ParquetFile(file).metadata
    except Exception as e:  # pyarrow raises several types for damaged files
        raise CpfdError(f"{file}: not a readable Parquet file ({e})") from None
    return md, _footer_json(md, PROVENANCE_KEY)


def _footer_json(md: pq.FileMetaData, key: bytes) -> dict | None:
    raw = (md.metadata or {}).get(key)
    try:
        value = json.loads(raw) if raw is not None else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        value = None
    return value if isinstance(value, dict) else None


def _shard_problem(md: pq.FileMetaData, num_classes: int, rows: int, groups: list[int], folds: bool = False) -> str | None:
    """What is wrong with a dump shard's layout against its corpus shard, or None."""
    try:
        schema = md.schema.to_arrow_schema().remove_metadata()
    except Exception as e:
        return f"unreadable schema ({e})"
    if not schema.equals(dump_schema(num_classes, folds)):
        return (f"columns do not match dump schema version {DUMP_SCHEMA_VERSION} with {num_classes} classes"
                + (" and a fold column" if folds else ""))
    if md.num_rows != rows:
        return f"holds {md.num_rows} rows, the corpus shard has {rows}"
    have = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    if have != groups:
        return f"row groups of {have} rows, the corpus shard has {groups}"
    return None


def _content_problem(digests: dict | None, corpus_digests: tuple[str, str | None]) -> str | None:
    """What a shard's DIGESTS_KEY record says is wrong with its rows against the corpus shard, or None.

    A shard written before cpfd recorded digests has none (None): nothing to say here (the reader
    then compares the columns themselves). A corpus written before cpfd recorded labels_sha256
    gives None for it: only the ids are compared.
    """
    if digests is None:
        return None
    ids_sha256, labels_sha256 = corpus_digests
    if digests.get("ids_sha256") != ids_sha256:
        return (
            f"its sample_ids differ from the corpus shard's "
            f"(ids sha256 {str(digests.get('ids_sha256'))[:12]}, the corpus shard has {ids_sha256[:12]})"
        )
    if labels_sha256 is not None and digests.get("labels_sha256") != labels_sha256:
        return (
            f"its labels differ from the corpus shard's (labels sha256 {str(digests.get('labels_sha256'))[:12]}, "
            f"the corpus shard has {labels_sha256[:12]}): the corpus was relabelled after the teacher ran"
        )
    return None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _float32_view(column: pa.ChunkedArray, file: Path) -> np.ndarray:
    """A float32 (or fixed_size_list<float32>) column as a flat, read-only numpy view.

    Straight from the Arrow buffer: no copy, and unlike `to_numpy` it never imports pandas
    (about 1 s and 60 MB the first time, in every DataLoader worker).
    """
    array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
    if array.null_count:
        raise CpfdError(f"{file}: column {column.type} holds nulls")
    if pa.types.is_fixed_size_list(array.type):
        array = array.flatten()  # the values of exactly these rows (the list array's offset applied)
        if array.null_count:
            raise CpfdError(f"{file}: logits hold null values")
    return np.frombuffer(array.buffers()[1], dtype=np.float32, count=len(array), offset=array.offset * 4)


def _first_difference(a: pa.Array, b: pa.Array) -> int:
    if len(a) != len(b):
        return min(len(a), len(b))
    differs = pc.fill_null(pc.not_equal(a, b), True)
    return int(pc.index(differs, True).as_py())


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------


def plan_dump(
    out: str | Path,
    corpus: Corpus | str | Path,
    split: str,
    teacher_provenance: dict,
    overwrite: bool = False,
    num_shards: int = 1,
    shard_index: int = 0,
) -> list[int]:
    """Prepare `out` for this worker; return the corpus shard indexes it still has to write.

    Refuses (CpfdError) a folder holding a dump of another teacher, corpus or split (its
    `_manifest.json`, or committed shards by their stored provenance) unless `overwrite`, which
    clears it: the manifest first, then this worker's shards. Deletes this worker's temp files
    (whichever process wrote them: the caller holds the locks of its shards, `shard_locks`), and
    keeps its committed shards only after checking them: readable, the rows and row groups of the
    corpus shard, the same provenance and id/label digests, and values whose digest is the one the
    writer recorded, finite, with teacher_loss the cross-entropy of the logits. A finished dump of
    the same teacher and corpus split returns [] once every shard's sha256 matches the manifest.
    `teacher_provenance` is {"dir", "weights_sha256", "config"} (a full provenance is accepted too).
    """
    corpus = _as_corpus(corpus)
    _check_split(corpus, split)
    if not (num_shards >= 1 and 0 <= shard_index < num_shards):
        raise CpfdError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    teacher = teacher_provenance.get("teacher", teacher_provenance)
    want = dump_provenance(corpus, split, teacher, created_at="-")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    manifest = out / DUMP_MANIFEST
    if manifest.exists():
        try:
            have = json.loads(manifest.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            have = {}
        have = have if isinstance(have, dict) else {}
        if not overwrite:
            if _identity(have) == _identity(want):
                _check_finished_labels(have, corpus, split, out)
                _check_finished_files(have, out)
                return []  # finished already
            raise CpfdError(f"{out} holds a finished dump of {_difference(have, want)}; pass --overwrite to replace it")
        # Un-finish it first: a crash during the overwrite then leaves "unfinished", never a
        # manifest that describes half-replaced shards.
        manifest.unlink()
        fsync_dir(out)

    names = [p.name for p in corpus.shard_paths(split)]
    groups = corpus.row_groups(split)
    rows = corpus.shard_rows(split)
    digests = corpus.shard_digests(split)
    mine = shards_of_worker(corpus, split, num_shards, shard_index)
    for i in mine:  # this worker's shards: no other process writes them (the caller holds their locks)
        for tmp in out.glob(f".{names[i]}*{TMP_SUFFIX}"):
            tmp.unlink()

    done = set()
    for file in sorted(out.glob("*.parquet")):
        index = names.index(file.name) if file.name in names else None
        owned = index in mine
        if overwrite and (owned or index is None):
            file.unlink()
            continue
        try:
            md, have = _footer(file)
        except CpfdError:
            if owned or index is None:
                raise CpfdError(f"{file}: damaged (not readable Parquet); delete it or pass --overwrite") from None
            continue  # another worker's shard: that worker deals with it
        if have is None or _identity(have) != _identity(want):
            if overwrite:
                continue  # another worker's shard of an old dump: that worker replaces it
            what = "a file that is no cpfd dump shard" if have is None else f"a shard of {_difference(have, want)}"
            raise CpfdError(f"{file}: {what}; pass --overwrite to replace the dump in {out}")
        if index is None:
            raise CpfdError(f"{file}: not a shard of corpus split {split}; delete it or pass --overwrite")
        if owned:
            record = _footer_json(md, DIGESTS_KEY)
            problem = (_shard_problem(md, corpus.num_classes, rows[index], groups[index], _has_folds(want))
                       or _content_problem(record, digests[index]) or _values_problem(file, record, corpus.num_classes))
            if problem:
                raise CpfdError(f"{file}: {problem}; delete it or pass --overwrite")
            done.add(index)
    if overwrite:
        fsync_dir(out)
    return [i for i in mine if i not in done]


def shards_of_worker(corpus: Corpus, split: str, num_shards: int = 1, shard_index: int = 0) -> list[int]:
    """The corpus shards worker `shard_index` of `num_shards` dumps: those whose index mod N is its own."""
    return [i for i in range(len(corpus.shard_paths(split))) if i % num_shards == shard_index]


def _check_finished_files(manifest: dict, out: Path) -> None:
    """A finished dump's shards are still the files its manifest describes (sha256)."""
    for entry in manifest.get("shards", []):
        file = out / str(entry.get("file"))
        if not file.exists() or file_sha256(file) != entry.get("sha256"):
            raise CpfdError(f"{file}: {'missing' if not file.exists() else 'changed since the dump was written'} "
                            f"(sha256 differs from {DUMP_MANIFEST}); pass --overwrite to dump the teacher again")


def values_digest(logits: np.ndarray, loss: np.ndarray, h=None):
    """Update (or start) the sha256 of a row group's values: logits (n, C) then teacher_loss (n,), float32 LE."""
    h = h or hashlib.sha256()
    h.update(np.ascontiguousarray(logits, dtype="<f4").tobytes())
    h.update(np.ascontiguousarray(loss, dtype="<f4").tobytes())
    return h


def _values_problem(file: Path, record: dict | None, num_classes: int) -> str | None:
    """What is wrong with a committed shard's values, read back: the digest its writer recorded, finite
    values, teacher_loss = cross-entropy of the logits (LOSS_RTOL). None when they check out."""
    if not record or "values_sha256" not in record:
        return "its footer records no values digest (written by an older cpfd)"
    try:
        pf = pq.ParquetFile(file, page_checksum_verification=True)
        h = hashlib.sha256()
        for g in range(pf.num_row_groups):
            table = pf.read_row_group(g, columns=["label", *TEACHER_COLUMNS], use_threads=False)
            logits = _float32_view(table.column(1), file).reshape(-1, num_classes)
            loss = _float32_view(table.column(2), file)
            values_digest(logits, loss, h)
            if not (np.isfinite(logits).all() and np.isfinite(loss).all()):
                return f"row group {g} holds NaN or inf"
            if loss_mismatch(logits, table.column(0).to_numpy(), loss):
                return f"row group {g}: teacher_loss is not the cross-entropy of the logits"
    except (pa.ArrowException, OSError) as e:
        return f"not readable ({e})"
    if h.hexdigest() != record["values_sha256"]:
        return "its logits or losses changed after the writer committed it (values digest differs)"
    return None


def _check_finished_labels(manifest: dict, corpus: Corpus, split: str, out: Path) -> None:
    """A finished dump of the same teacher and corpus fingerprint may still predate a relabelling
    (the fingerprint covers ids, not labels): its manifest's label digests tell."""
    for entry, (_, labels_sha256) in zip(manifest.get("shards", []), corpus.shard_digests(split)):
        recorded = entry.get("labels_sha256")
        if recorded and labels_sha256 and recorded != labels_sha256:
            raise CpfdError(
                f"{out} holds a finished dump whose labels differ from corpus {split}/{entry.get('file')} "
                f"(relabelled after the teacher ran); pass --overwrite to dump it again"
            )


def _row_group_table(
    arrays: Sequence, corpus_rows: pa.Table, num_classes: int, schema: pa.Schema, where: str
) -> pa.Table:
    """Check one row group of teacher outputs against the corpus rows; build its Arrow table.
    A cross-fitted dump's schema has `fold`: then a fifth array gives it."""
    folds = "fold" in schema.names
    if len(arrays) != 4 + folds:
        raise ValueError(f"{where}: expected (sample_ids, labels, logits, teacher_loss{', fold' if folds else ''}), "
                         f"got {len(arrays)} arrays")
    sample_ids, labels, logits, loss = arrays[:4]
    n = corpus_rows.num_rows
    logits = np.asarray(logits)
    loss = np.asarray(loss)
    if logits.shape != (n, num_classes):
        raise CpfdError(f"{where}: logits of shape {logits.shape}, expected ({n}, {num_classes})")
    if loss.shape != (n,):
        raise CpfdError(f"{where}: teacher_loss of shape {loss.shape}, expected ({n},)")
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    loss = np.ascontiguousarray(loss, dtype=np.float32)
    if isinstance(sample_ids, pa.ChunkedArray):
        sample_ids = sample_ids.combine_chunks()
    ids = sample_ids if isinstance(sample_ids, pa.Array) else pa.array(sample_ids, type=pa.string())
    if ids.type != pa.string():
        ids = ids.cast(pa.string())
    corpus_ids = corpus_rows.column("sample_id").combine_chunks()
    if not ids.equals(corpus_ids):
        i = _first_difference(ids, corpus_ids)
        got = ids[i].as_py() if i < len(ids) else "<none>"
        raise CpfdError(f"{where}: sample_id of row {i} is {got!r}, the corpus has {corpus_ids[i].as_py()!r}")
    labels = np.asarray(labels).astype(np.int32, copy=False)
    corpus_labels = corpus_rows.column("label").to_numpy()
    if labels.shape != (n,) or not np.array_equal(labels, corpus_labels):
        raise CpfdError(f"{where}: labels differ from the corpus labels")
    if not np.isfinite(logits).all():
        raise CpfdError(f"{where}: the teacher's logits hold NaN or inf")
    if not np.isfinite(loss).all():
        raise CpfdError(f"{where}: teacher_loss holds NaN or inf")
    mismatch = loss_mismatch(logits, labels, loss)
    if mismatch:
        i, expected = mismatch
        raise CpfdError(f"{where}: teacher_loss of row {i} is {loss[i]:.6g}, the cross-entropy of its logits is {expected:.6g}")
    flat = pa.array(logits.reshape(-1), type=pa.float32())
    columns = [ids, pa.array(labels, type=pa.int32()), pa.FixedSizeListArray.from_arrays(flat, num_classes), pa.array(loss)]
    if folds:
        fold = np.asarray(arrays[4]).astype(np.int32)
        if fold.shape != (n,):
            raise CpfdError(f"{where}: fold of shape {fold.shape}, expected ({n},)")
        columns.append(pa.array(fold, type=pa.int32()))
    return pa.Table.from_arrays(columns, schema=schema)


def loss_mismatch(logits: np.ndarray, labels: np.ndarray, loss: np.ndarray) -> tuple[int, float] | None:
    """(first worst row, its cross-entropy) where teacher_loss is not the cross-entropy of the row's
    logits within LOSS_RTOL, or None when every row's is. (n, C), (n,), (n,)."""
    if not len(loss):
        return None
    # Streaming pays this on every row it reads, so: float32 (plenty for a tolerance of 1e-2), and
    # the classes as C contiguous rows (numpy reduces over a short last axis several times slower).
    xt = np.ascontiguousarray(np.asarray(logits, dtype=np.float32).T)  # (C, n)
    m = xt.max(axis=0)  # (n,)
    own = np.take_along_axis(xt, np.asarray(labels, dtype=np.intp)[None, :], axis=0)[0]  # (n,)
    expected = m - own + np.log(np.exp(xt - m).sum(axis=0))  # (n,) cross-entropy
    worst = np.abs(loss - expected) / (1.0 + np.abs(expected))
    i = int(worst.argmax())
    return (i, float(expected[i])) if not worst[i] <= LOSS_RTOL else None  # NaN counts as a mismatch


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[label] per row, computed stably in float64. (n, C), (n,) -> (n,)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=1, keepdims=True) if len(x) else np.zeros((0, 1))
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(x)), np.asarray(labels, dtype=np.int64)]


def write_dump_shard(
    out: str | Path,
    corpus: Corpus | str | Path,
    split: str,
    shard_index: int,
    row_group_arrays: Iterable[Sequence],
    provenance: dict,
    *,
    computed: dict | None = None,
    compression: str | dict = DUMP_COMPRESSION,
) -> dict:
    """Write and commit the dump shard of corpus shard `shard_index`.

    Returns {file, corpus_file, rows, ids_sha256, labels_sha256[, computed]}: the digests, hashed
    as corpus.json hashes a corpus shard, and `computed` (how the teacher computed these logits,
    e.g. {"device", "precision", "batch_size"}) also go into the shard's footer under DIGESTS_KEY.

    `row_group_arrays` yields `(sample_ids, labels, logits (n, C) float32, teacher_loss (n,) float32)`
    once per row group of the corpus shard, in order; ids and labels must equal the corpus rows.
    The shard is written under a temp name and renamed only when complete; on any error the
    temp file is removed. `compression` (a Parquet codec, or one per column) is for benchmarks.
    """
    corpus = _as_corpus(corpus)
    _check_split(corpus, split)
    _check_provenance(provenance, corpus, split)
    corpus_files = corpus.shard_paths(split)
    if not 0 <= shard_index < len(corpus_files):
        raise CpfdError(f"shard {shard_index} is not in split {split} ({len(corpus_files)} shards)")
    corpus_file = corpus_files[shard_index]
    groups = corpus.row_groups(split)[shard_index]
    num_classes = corpus.num_classes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    final = out / corpus_file.name
    tmp = final.with_name(f".{final.name}.{os.getpid()}{TMP_SUFFIX}")  # per process: two writers never share one
    schema = dump_schema(num_classes, _has_folds(provenance)).with_metadata({PROVENANCE_KEY: json.dumps(provenance).encode()})
    corpus_pf = pq.ParquetFile(corpus_file)
    writer = None
    rows, ids_hash, labels_hash, values_hash = 0, IdDigest(), hashlib.sha256(), hashlib.sha256()
    try:
        writer = pq.ParquetWriter(
            tmp,
            schema,
            compression=compression,
            use_dictionary=False,  # ids are unique, floats never repeat
            write_statistics=["sample_id", "label", "teacher_loss"],
            write_page_checksum=True,  # every reader verifies them: a damaged page is an error, not data
        )
        count = 0
        for g, arrays in enumerate(row_group_arrays):
            where = f"{final} (corpus {split}/{corpus_file.name}, row group {g})"
            if g >= len(groups):
                raise CpfdError(f"{where}: the corpus shard has only {len(groups)} row groups")
            corpus_rows = corpus_pf.read_row_group(g, columns=["sample_id", "label"])
            table = _row_group_table(arrays, corpus_rows, num_classes, schema, where)
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
            ids_hash.update(table.column("sample_id"))
            hash_labels(table.column("label"), labels_hash)
            values_digest(_float32_view(table.column("logits"), final), _float32_view(table.column("teacher_loss"), final),
                          values_hash)  # what a resume reads back to trust the shard
            rows += table.num_rows
            count += 1
        if count != len(groups):
            raise CpfdError(f"{final}: got {count} row groups, the corpus shard has {len(groups)}")
        digests = {"rows": rows, "ids_sha256": ids_hash.hexdigest(), "labels_sha256": labels_hash.hexdigest(),
                   "values_sha256": values_hash.hexdigest()}
        if computed is not None:
            digests["computed"] = computed
        writer.add_key_value_metadata({DIGESTS_KEY: json.dumps(digests)})
        writer.close()
        writer = None
        commit(tmp, final)
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"file": final.name, "corpus_file": f"{split}/{corpus_file.name}", **digests}


def finalize_dump(out: str | Path, corpus: Corpus | str | Path, split: str, provenance: dict) -> bool:
    """Write `_manifest.json` if every shard of the split is committed; else return False.

    Idempotent: a manifest already there for the same dump is kept (True). Shards of another
    provenance (an overwrite still under way in another worker) count as not committed.
    """
    corpus = _as_corpus(corpus)
    _check_split(corpus, split)
    _check_provenance(provenance, corpus, split)
    out = Path(out)
    manifest_path = out / DUMP_MANIFEST
    if manifest_path.exists():
        try:
            if _identity(json.loads(manifest_path.read_text())) == _identity(provenance):
                return True
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    shards = []
    rows, groups, digests = corpus.shard_rows(split), corpus.row_groups(split), corpus.shard_digests(split)
    for i, corpus_file in enumerate(corpus.shard_paths(split)):
        file = out / corpus_file.name
        if not file.exists():
            return False
        md, have = _footer(file)
        if have is None or _identity(have) != _identity(provenance):
            return False
        recorded = _footer_json(md, DIGESTS_KEY)
        problem = (_shard_problem(md, corpus.num_classes, rows[i], groups[i], _has_folds(provenance))
                   or _content_problem(recorded, digests[i])
                   # what a worker committed may have changed on disk since: read it back before the
                   # manifest vouches for it (its values digest, page checksums, finite, loss = CE)
                   or _values_problem(file, recorded, corpus.num_classes))
        if problem:
            raise CpfdError(f"{file}: {problem}; delete it and rerun")
        entry = {"file": file.name, "corpus_file": f"{split}/{corpus_file.name}", "rows": rows[i]}
        entry.update({k: v for k, v in (recorded or {}).items() if k in ("ids_sha256", "labels_sha256", "computed")})
        shards.append(entry)
    for entry in shards:
        entry["sha256"] = file_sha256(out / entry["file"])
    manifest = {k: v for k, v in provenance.items() if k not in ("created_at", "cpfd_version")}
    manifest["shards"] = shards
    manifest["created_at"] = provenance["created_at"]
    manifest["cpfd_version"] = provenance["cpfd_version"]
    # Two job-array workers may finish at the same moment: each writes its own temp file (still
    # dot-prefixed and `.tmp`-suffixed), and the last rename wins with a complete manifest.
    tmp = manifest_path.with_name(f".{DUMP_MANIFEST}.{os.getpid()}{TMP_SUFFIX}")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    commit(tmp, manifest_path)
    return True


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


def read_manifest(dump_dir: str | Path) -> dict:
    """The manifest of a finished dump; CpfdError for a folder that is not one."""
    path = Path(dump_dir)
    if not path.is_dir():
        raise CpfdError(f"{path}: no such dump directory")
    manifest = path / DUMP_MANIFEST
    if not manifest.exists():
        raise CpfdError(f"{path}: no {DUMP_MANIFEST} (not a teacher dump, or an unfinished one: rerun dump-teacher)")
    try:
        meta = json.loads(manifest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CpfdError(f"{manifest}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CpfdError(f"{manifest}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("schema_version")
    if version != DUMP_SCHEMA_VERSION:
        raise CpfdError(f"{manifest}: dump schema_version {version!r}, this cpfd reads {DUMP_SCHEMA_VERSION}"
                        + ("; dump the teacher again with this cpfd" if isinstance(version, int) and version < DUMP_SCHEMA_VERSION else ""))
    check_json(meta, DUMP_MANIFEST_SHAPE, str(manifest))
    for entry in meta["shards"]:
        if not re.fullmatch(SHARD_FILE, entry["file"]):
            raise CpfdError(f"{manifest}: lists a shard file {entry['file']!r}; expected names like part-00000.parquet")
    return meta


def shard_files(dump_dir: str | Path, manifest: dict | None = None) -> list[Path]:
    """The dump's Parquet files, in corpus shard order (what DuckDB scans)."""
    manifest = manifest or read_manifest(dump_dir)
    return [Path(dump_dir) / s["file"] for s in manifest["shards"]]


def _read_columns(file: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(file, columns=columns, page_checksum_verification=True)
    except (pa.ArrowException, OSError) as e:
        raise CpfdError(f"{file}: cannot read {', '.join(columns)} ({e})") from None


def read_dump_columns(dump_dir: str | Path, columns: list[str]) -> pa.Table:
    """Columns of every shard of a finished dump, in corpus order (no corpus needed)."""
    files = shard_files(dump_dir)
    missing = [f for f in files if not f.exists()]
    if missing:
        raise CpfdError(f"{missing[0]}: shard listed in {DUMP_MANIFEST} is missing")
    return pa.concat_tables([_read_columns(f, columns) for f in files])


def read_teacher_losses(dump_dir: str | Path) -> np.ndarray:
    """Every stored teacher loss of a finished dump (4 bytes a row), in corpus order, as float32."""
    return read_dump_columns(dump_dir, ["teacher_loss"]).column(0).to_numpy()


class TeacherDump:
    """A teacher dump checked against its corpus: logits and losses per corpus WorkUnit.

    `TeacherDump(dump_dir, corpus, split=None)` raises CpfdError unless the dump was made from
    this corpus (and of `split`, when given) and every shard has the corpus shard's rows and
    row groups. `read(unit)` returns (logits (n, C) float32, teacher_loss (n,) float32), read-only
    views of the Arrow buffers; `extra(unit)` returns writable copies under the batch keys
    `teacher_logits` and `teacher_loss`.
    """

    def __init__(self, dump_dir: str | Path, corpus: Corpus | str | Path, split: str | None = None,
                 check_reads: bool = True):
        self.path = Path(dump_dir)
        # what is read is checked: page checksums, and each row finite with loss = CE (off only to
        # measure what the checks cost: benchmarks/stream_teacher_columns.py)
        self.check_reads = check_reads
        self.corpus = _as_corpus(corpus)
        self.manifest = read_manifest(self.path)
        m, where = self.manifest, self.path / DUMP_MANIFEST
        if m["corpus"].get("fingerprint") != self.corpus.fingerprint:
            raise CpfdError(
                f"{self.path}: dump of another corpus (fingerprint {str(m['corpus'].get('fingerprint'))[:12]}, "
                f"{self.corpus.path} has {self.corpus.fingerprint[:12]})"
            )
        self.split = m["corpus"].get("split")
        if split is not None and split != self.split:
            raise CpfdError(f"{self.path}: dump of the {self.split} split, the {split} split was asked for")
        if self.split not in SPLITS:
            raise CpfdError(f"{where}: unknown split {self.split!r}")
        if m["num_classes"] != self.corpus.num_classes or list(m["classes"]) != self.corpus.classes:
            raise CpfdError(
                f"{where}: {m['num_classes']} classes {m['classes']}, the corpus has {self.corpus.num_classes} {self.corpus.classes}"
            )
        if m.get("loss") != "cross_entropy" or m.get("logits_temperature") != 1:
            raise CpfdError(f"{where}: loss {m.get('loss')!r} at temperature {m.get('logits_temperature')}, expected cross_entropy at 1")
        self.num_classes = int(m["num_classes"])
        corpus_files = self.corpus.shard_paths(self.split)
        if len(m["shards"]) != len(corpus_files):
            raise CpfdError(f"{where}: lists {len(m['shards'])} shards, corpus split {self.split} has {len(corpus_files)}")
        self.files: list[Path] = []
        self.corpus_files = corpus_files
        self.row_groups = self.corpus.row_groups(self.split)
        # Shards whose rows are known to be the corpus shard's: by their recorded digests, here,
        # or else by comparing the columns the first time the shard is read (check_ids).
        self._rows_checked: set[int] = set()
        self._records: list[dict] = []  # each shard's DIGESTS_KEY footer record ({} when it has none)
        corpus_digests = self.corpus.shard_digests(self.split)
        for shard, (entry, corpus_file, rows, groups) in enumerate(
            zip(m["shards"], corpus_files, self.corpus.shard_rows(self.split), self.row_groups)
        ):
            file = self.path / entry["file"]
            if entry["file"] != corpus_file.name:
                raise CpfdError(f"{file}: listed where the corpus has {self.split}/{corpus_file.name}")
            if entry["rows"] != rows:
                raise CpfdError(f"{file}: manifest says {entry['rows']} rows, the corpus shard has {rows}")
            if not file.exists():
                raise CpfdError(f"{file}: shard listed in {DUMP_MANIFEST} is missing")
            md, provenance = _footer(file)
            if provenance is None or _identity(provenance) != _identity(m):
                what = "no cpfd dump shard" if provenance is None else f"a shard of {_difference(provenance, m)}"
                raise CpfdError(f"{file}: {what}, not of the dump {DUMP_MANIFEST} describes")
            record = _footer_json(md, DIGESTS_KEY)
            problem = (_shard_problem(md, self.num_classes, rows, groups, _has_folds(m))
                       or _content_problem(record, corpus_digests[shard]))
            if problem:
                raise CpfdError(f"{file}: {problem}")
            if record is not None and corpus_digests[shard][1] is not None:
                self._rows_checked.add(shard)
            self._records.append(record or {})
            self.files.append(file)
        self._open: tuple[int, pq.ParquetFile] | None = None

    def computed_with(self, shard: int) -> dict:
        """How the teacher computed the shard's logits ({"device", "precision", "batch_size", ...}),
        as its writer recorded it; {} for a shard written without that record."""
        return dict(self._records[shard].get("computed") or {})

    # ---- checks -------------------------------------------------------------------------
    def check_ids(self, shard: int) -> None:
        """Compare the shard's sample_id and label columns with the corpus shard's, row group by row group.

        `verify()` does this for every shard; streaming does it on a shard's first read only when
        the digests could not be compared at open (a dump or corpus written before cpfd recorded
        them)."""
        file, corpus_file = self.files[shard], self.corpus_files[shard]
        try:
            dump_pf, corpus_pf = pq.ParquetFile(file), pq.ParquetFile(corpus_file)
            offset = 0
            for g in range(len(self.row_groups[shard])):
                have = dump_pf.read_row_group(g, columns=["sample_id", "label"])
                want = corpus_pf.read_row_group(g, columns=["sample_id", "label"])
                # Labels too: the fingerprint covers ids, and teacher_loss is only valid for its label.
                for column in ("sample_id", "label"):
                    a, b = have.column(column).combine_chunks(), want.column(column).combine_chunks()
                    if not a.equals(b):
                        i = _first_difference(a, b)
                        raise CpfdError(
                            f"{file}: {column} of row {offset + i} is {a[i].as_py()!r}, "
                            f"corpus {self.split}/{corpus_file.name} has {b[i].as_py()!r}"
                        )
                offset += have.num_rows
        except (pa.ArrowException, OSError) as e:
            raise CpfdError(f"{file}: cannot read sample_id and label ({e})") from None
        self._rows_checked.add(shard)

    def verify(self) -> None:
        """A full pass: every shard's sha256 against the manifest, its ids and labels against the
        corpus columns, and its values (`read`: page checksums, finite, loss = CE). Reads the whole
        dump and the corpus ids once; streaming then checks the values of each row it reads again."""
        for shard, entry in enumerate(self.manifest["shards"]):
            file = self.files[shard]
            if file_sha256(file) != entry.get("sha256"):
                raise CpfdError(f"{file}: sha256 differs from {DUMP_MANIFEST} (the file changed after the dump)")
            self.check_ids(shard)
        for unit in self.corpus.work_units(self.split):
            self._check_values(unit, *self._read_row_group(unit))

    # ---- streaming ----------------------------------------------------------------------
    def _file(self, shard: int) -> pq.ParquetFile:
        if self._open is None or self._open[0] != shard:
            if shard not in self._rows_checked:
                self.check_ids(shard)
            self._open = (shard, pq.ParquetFile(self.files[shard], page_checksum_verification=self.check_reads))
        return self._open[1]

    def read(self, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
        """(logits (n, C) float32, teacher_loss (n,) float32) for exactly the rows of `unit`, checked."""
        labels, logits, loss = self._read_row_group(unit)
        if self.check_reads:
            self._check_values(unit, labels, logits, loss)
        return logits, loss

    def _read_row_group(self, unit: WorkUnit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(labels, logits, teacher_loss) of the unit's row group, its pages' checksums verified."""
        if unit.split != self.split:
            raise CpfdError(f"{self.path}: dump of the {self.split} split, asked for a row group of {unit.split}")
        if not 0 <= unit.shard < len(self.files) or not 0 <= unit.row_group < len(self.row_groups[unit.shard]):
            raise CpfdError(f"{self.path}: no shard {unit.shard} row group {unit.row_group} in split {self.split}")
        file = self.files[unit.shard]
        pf = self._file(unit.shard)
        try:
            # One thread: three plain columns decode faster than a thread pool starts, and
            # each DataLoader worker is already a process of its own (stream_teacher_columns.py).
            table = pf.read_row_group(unit.row_group, columns=["label", *TEACHER_COLUMNS], use_threads=False)
        except (pa.ArrowException, OSError) as e:  # a damaged page fails its checksum here
            raise CpfdError(f"{file}: cannot read row group {unit.row_group} ({' '.join(str(e).split())})") from None
        if table.num_rows != unit.rows:
            raise CpfdError(f"{file}: row group {unit.row_group} holds {table.num_rows} rows, the corpus has {unit.rows}")
        labels = table.column(0).to_numpy()
        logits = _float32_view(table.column(1), file).reshape(-1, self.num_classes)
        return labels, logits, _float32_view(table.column(2), file)

    def _check_values(self, unit: WorkUnit, labels: np.ndarray, logits: np.ndarray, loss: np.ndarray) -> None:
        """Every row read: finite, and teacher_loss the cross-entropy of its logits (LOSS_RTOL). A few
        floats a row, nothing next to a training step (benchmarks/stream_teacher_columns.py)."""
        where = f"{self.files[unit.shard]}: row group {unit.row_group}"
        if not (np.isfinite(logits).all() and np.isfinite(loss).all()):
            raise CpfdError(f"{where} holds NaN or inf logits or losses (the file changed after the dump)")
        mismatch = loss_mismatch(logits, labels, loss)
        if mismatch:
            i, expected = mismatch
            raise CpfdError(f"{where}, row {i}: teacher_loss {loss[i]:.6g} is not the cross-entropy of its logits "
                            f"({expected:.6g}): the file changed after the dump")

    def extra(self, unit: WorkUnit) -> dict:
        """The `CorpusBatches` extra columns for `unit` (writable copies)."""
        logits, loss = self.read(unit)
        return {"teacher_logits": np.array(logits), "teacher_loss": np.array(loss)}

    def iter_teacher_columns(self, units: Sequence[WorkUnit] | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(logits, teacher_loss) per unit, for all row groups of the split when `units` is None."""
        for unit in self.corpus.work_units(self.split) if units is None else units:
            yield self.read(unit)

    def iter_ids_and_losses(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """(sample_id, teacher_loss) per shard, in corpus order: what an alpha log needs."""
        for file in self.files:
            table = _read_columns(file, ["sample_id", "teacher_loss"])
            yield table.column(0).combine_chunks(), table.column(1).to_numpy()

    def extra_for_corpus_batches(self) -> "DumpExtra":
        """A picklable `extra_open` for `pipeline.data.CorpusBatches`; each worker reopens the files."""
        return DumpExtra(str(self.path), str(self.corpus.path), self.split)

    @property
    def num_rows(self) -> int:
        return sum(int(s["rows"]) for s in self.manifest["shards"])


class DumpExtra:
    """`extra_open` for CorpusBatches: called once per DataLoader worker, returns `extra(unit)`."""

    def __init__(self, dump_dir: str, corpus_path: str, split: str):
        self.dump_dir, self.corpus_path, self.split = dump_dir, corpus_path, split

    def __call__(self):
        # The parent verified the corpus in full; a worker only needs the fast check.
        corpus = Corpus(self.corpus_path, verify="fast")
        return TeacherDump(self.dump_dir, corpus, self.split).extra


def open_dump(dump_dir: str | Path, corpus: Corpus | str | Path, split: str | None = None) -> TeacherDump:
    """`TeacherDump(dump_dir, corpus, split)`: a dump checked against the corpus it is used with."""
    return TeacherDump(dump_dir, corpus, split)


# --------------------------------------------------------------------------------------------
# cpfd info
# --------------------------------------------------------------------------------------------


def describe_dump(path: str | Path) -> dict:
    """What `cpfd info DUMP` prints (reads the manifest and the `label` column only)."""
    path = Path(path)
    m = read_manifest(path)
    counts = np.zeros(int(m["num_classes"]), dtype=np.int64)
    missing = []
    for file in shard_files(path, m):
        if not file.exists():
            missing.append(file.name)
            continue
        try:
            pf = pq.ParquetFile(file)
            for g in range(pf.num_row_groups):
                labels = pf.read_row_group(g, columns=["label"]).column(0).to_numpy()
                counts += np.bincount(labels, minlength=len(counts))[: len(counts)]
        except Exception as e:
            raise CpfdError(f"{file}: not a readable Parquet file ({e})") from None
    return {
        "kind": "dump",
        "path": str(path),
        "schema_version": m["schema_version"],
        "split": m["corpus"].get("split"),
        "rows": sum(int(s["rows"]) for s in m["shards"]),
        "shards": len(m["shards"]),
        "missing_shards": missing,
        "classes": list(m["classes"]),
        "num_classes": int(m["num_classes"]),
        "label_counts": {c: int(n) for c, n in zip(m["classes"], counts)},
        "teacher": {"dir": m["teacher"].get("dir"), "weights_sha256": m["teacher"].get("weights_sha256")},
        "corpus": dict(m["corpus"]),
        "loss": m.get("loss"),
        "logits_temperature": m.get("logits_temperature"),
        "created_at": m.get("created_at"),
        "cpfd_version": m.get("cpfd_version"),
    }


def format_dump_description(d: dict) -> str:
    """Human-readable text for `describe_dump`'s output."""
    counts = ", ".join(f"{c} {n}" for c, n in d["label_counts"].items())
    lines = [
        f"teacher dump {d['path']}  (dump schema v{d['schema_version']}, cpfd {d['cpfd_version']}, {d['created_at']})",
        f"  split {d['split']}: {d['rows']} rows in {d['shards']} shard(s); {counts}",
        f"  classes: {', '.join(d['classes'])}",
        f"  teacher: {d['teacher']['dir']} (weights sha256 {d['teacher']['weights_sha256']})"
        + (f"; cross-fitted, {len(folds)} fold teachers: each train row scored by the one that never saw it"
           if (folds := d["teacher"].get("folds")) else ""),
        f"  corpus: {d['corpus'].get('path')} (fingerprint {d['corpus'].get('fingerprint')})",
        f"  columns: sample_id, label, logits[{d['num_classes']}] (T = {d['logits_temperature']}), teacher_loss ({d['loss']})"
        + (", fold" if d["teacher"].get("folds") else ""),
    ]
    if d["missing_shards"]:
        lines.append(f"  MISSING shards: {', '.join(d['missing_shards'])}")
    return "\n".join(lines)
