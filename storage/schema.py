"""Declared Arrow schemas and their version. Everything `storage` writes is cast to these.

The corpus schema is fixed whatever the corpus holds: a tabular corpus stores empty `frames`
lists and empty strings, a corpus without privileged features stores empty `privileged` lists.
One schema keeps every reader, the DuckDB views and the teacher-dump alignment simple.
"""

from __future__ import annotations

import pyarrow as pa

# Bump when a column is added, removed or changes type; readers refuse other versions.
SCHEMA_VERSION = 1

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
# Teacher dump (DESIGN.md 4.4): one Parquet shard per corpus shard, same rows, same row groups.
# --------------------------------------------------------------------------------------------

# Bump when a dump column is added, removed or changes type; `storage.dump` refuses other versions.
DUMP_SCHEMA_VERSION = 1


def dump_schema(num_classes: int) -> pa.Schema:
    """sample_id, label, raw teacher logits (T = 1) and the per-sample teacher loss."""
    if num_classes < 2:
        raise ValueError(f"a dump needs at least 2 classes, got {num_classes}")
    return pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("label", pa.int32(), nullable=False),
            pa.field("logits", pa.list_(pa.float32(), num_classes), nullable=False),
            pa.field("teacher_loss", pa.float32(), nullable=False),  # CE of softmax(logits) vs label
        ]
    )
