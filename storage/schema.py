"""Declared Arrow schemas and their version. Everything `storage` writes is cast to these.

The corpus schema is fixed whatever the corpus holds: a tabular corpus stores empty `frames`
lists and empty strings, a corpus without privileged features stores empty `privileged` lists.
One schema keeps every reader, the DuckDB views and the teacher-dump alignment simple.
"""

from __future__ import annotations

import json

import pyarrow as pa

from cpfd.storage.errors import CpfdError

# Bump when a column is added, removed or changes type, or when corpus.json's hashes change meaning;
# readers refuse other versions. 2: ids_sha256 and the fingerprint hash ids with their lengths
# (`storage.corpus.IdDigest`); version 1 joined them with newlines, which ids may contain.
SCHEMA_VERSION = 2

# The file written last into a corpus folder and a teacher-dump folder: a folder counts as one only
# when it holds it (storage.corpus, storage.dump; storage.outputs recognises them by it).
CORPUS_JSON = "corpus.json"
DUMP_MANIFEST = "_manifest.json"
# A model folder's config (written last) and weights; a cross-fitted teacher's record of its folds
# (storage.model_folder; torch-free here, for the commands that only need to recognise a folder).
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
FOLDS = "folds.json"

# Parquet row groups are the unit of streaming and of parallel work (ranks x DataLoader workers).
MAX_ROW_GROUP_ROWS = 65_536

SPLITS = ("train", "eval")

CORPUS_SCHEMA = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("title", pa.string()),
        pa.field("ocr_text", pa.string()),
        pa.field("frames", pa.list_(pa.binary())),  # encoded PNG/JPEG, time order
        pa.field("privileged", pa.list_(pa.float32())),  # NaN = missing; order = corpus.json names
        pa.field("features", pa.list_(pa.float32())),  # non-privileged, available at serving time
    ]
)

CORPUS_COLUMNS = tuple(CORPUS_SCHEMA.names)

# Dictionary-encode only the repetitive strings; never floats or the encoded frames.
CORPUS_DICTIONARY_COLUMNS = ["title", "ocr_text"]


def check_columns(columns, available=CORPUS_COLUMNS) -> list[str]:
    """Validate a column projection; returns it as a list."""
    columns = list(columns)
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; expected some of {list(available)}")
    return columns


# --------------------------------------------------------------------------------------------
# Teacher dump (docs/formats.md, "Teacher dump"): one Parquet shard per corpus shard, same rows, same row groups.
# --------------------------------------------------------------------------------------------

# Bump when a dump column is added, removed or changes type, or what its manifest and footers record
# changes; `storage.dump` refuses other versions. 2: the id digests of corpus schema 2, and each
# shard's footer records `values_sha256` of its logits and losses.
DUMP_SCHEMA_VERSION = 2


def dump_schema(num_classes: int, folds: bool = False) -> pa.Schema:
    """sample_id, label, raw teacher logits (T = 1) and the per-sample teacher loss; with `folds`
    (a cross-fitted teacher's dump) also `fold`: which fold teacher scored the row (-1: all of them)."""
    if num_classes < 2:
        raise ValueError(f"a dump needs at least 2 classes, got {num_classes}")
    fields = [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
        pa.field("logits", pa.list_(pa.float32(), num_classes), nullable=False),
        pa.field("teacher_loss", pa.float32(), nullable=False),  # CE of softmax(logits) vs label
    ]
    if folds:
        fields.append(pa.field("fold", pa.int32(), nullable=False))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# The JSON files beside the Parquet shards: their expected shapes, checked when they are read
# --------------------------------------------------------------------------------------------

# A shape is a type (or tuple of types), a dict of key -> shape (every key required; a key
# written "name?" may be absent), or a one-element list [shape] for a list of such values.
SHARD_FILE = r"part-\d{5}\.parquet"

CORPUS_JSON_SHAPE = {
    "schema_version": int,
    "task?": (str, type(None)),
    "classes": [str],
    "num_classes": int,
    "frames_per_video": int,
    "image_size": int,
    "has_text": bool,
    "privileged_features": [str],
    "features": [str],
    "splits": {f"{split}?": {"rows": int, "shards": [{"file": str, "rows": int, "ids_sha256": str,
                                                      "labels_sha256?": str}]} for split in SPLITS},
    "fingerprint": str,
}

DUMP_MANIFEST_SHAPE = {
    "schema_version": int,
    "teacher": {"dir": str, "weights_sha256": str, "config": dict,
                "folds?": [{"fold": int, "dir": str, "weights_sha256": str}]},
    "corpus": {"path": str, "fingerprint": str, "split": str},
    "num_classes": int,
    "classes": [str],
    "loss": str,
    "logits_temperature": (int, float),
    "shards": [{"file": str, "corpus_file": str, "rows": int, "sha256": str}],
}


def check_json(value, shape, where: str, path: str = "") -> None:
    """Raise CpfdError(f"{where}: ...") naming the first key whose value does not have `shape`."""
    name = path or "the file"
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise CpfdError(f"{where}: {name} must be a JSON object, got {_kind(value)}")
        for key, inner in shape.items():
            optional = key.endswith("?")
            key = key.rstrip("?")
            if key not in value:
                if optional:
                    continue
                raise CpfdError(f"{where}: no {(path + '.' if path else '')}{key!s} field")
            check_json(value[key], inner, where, f"{path}.{key}" if path else key)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            raise CpfdError(f"{where}: {name} must be a JSON list, got {_kind(value)}")
        for i, item in enumerate(value):
            check_json(item, shape[0], where, f"{path}[{i}]")
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        # bool is an int in Python, never in these files
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join({int: "an integer", float: "a number", str: "a string", bool: "true or false",
                                  dict: "an object", type(None): "null"}[t] for t in types)
            raise CpfdError(f"{where}: {name} must be {wanted}, got {_kind(value)}")


def _kind(value) -> str:
    text = json.dumps(value)[:40] if not isinstance(value, (dict, list)) else type(value).__name__
    return {dict: "an object", list: "a list"}.get(type(value), text)
