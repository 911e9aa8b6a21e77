"""Atomic commits: a file (or a directory's manifest) is either absent, old, or complete.

Every writer in `storage` writes to a dot-prefixed temporary name in the target folder, fsyncs it,
renames it over the final name (`os.replace`, atomic on POSIX), then fsyncs the folder so the
rename itself survives a power cut. Temporary names never end in `.parquet` or `.json`, so no glob
of finished files ever picks up a half-written one.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from cpfd.storage.errors import CpfdError

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


def _file_mode() -> int:
    """What `open()` gives a new file under this process's umask (read once: os.umask has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()


def commit(tmp: Path, final: Path) -> None:
    """fsync `tmp`, give it the umask's mode, rename it over `final`, fsync the folder.

    The mode matters for files a library created privately (safetensors writes 0600): a model's
    weights must be readable by whoever may read its config.json, e.g. a serving account."""
    with open(tmp, "rb+") as f:
        os.fchmod(f.fileno(), FILE_MODE)
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fsync_dir(Path(final).parent)


@contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """The temp path to write `path` through: committed when the block ends, removed if it fails.
    A failure to write (a full disk, a library's own I/O error) is a CpfdError naming `path`."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        yield tmp
        commit(tmp, path)
    except CpfdError:
        tmp.unlink(missing_ok=True)
        raise
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CpfdError(f"{path}: cannot write it ({e.strerror or e})") from None
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if type(e).__name__ == "SafetensorError":  # safetensors' own I/O error (e.g. a full disk)
            raise CpfdError(f"{path}: cannot write it ({' '.join(str(e).split())[:200]})") from None
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


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
