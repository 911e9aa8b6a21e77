"""Atomic commits: a file (or a directory's manifest) is either absent, old, or complete.

Every writer in `storage` writes to a dot-prefixed temporary name in the target folder, fsyncs it,
renames it over the final name (`os.replace`, atomic on POSIX), then fsyncs the folder so the
rename itself survives a power cut. Temporary names never end in `.parquet` or `.json`, so no glob
of finished files ever picks up a half-written one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def temp_path_for(path: Path) -> Path:
    """`dir/name` -> `dir/.name.tmp`: hidden, and invisible to `*.parquet` / `*.json` globs."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_SUFFIX}")


def fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp`, rename it over `final`, fsync the folder."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    tmp = temp_path_for(path)
    with open(tmp, "wb") as f:
        f.write(data)
    commit(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete leftovers of an interrupted write (dot-prefixed `*.tmp` files) in `folder`."""
    removed = []
    folder = Path(folder)
    if folder.is_dir():
        for p in folder.glob(f".*{TMP_SUFFIX}"):
            p.unlink()
            removed.append(p)
    return removed
