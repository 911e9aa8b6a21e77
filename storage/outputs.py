"""Where commands write: an output is never one of the inputs, one writer holds an output at a time,
and `--overwrite` replaces an old result only once the new one is complete.

    check_paths({"--out": out}, {"CORPUS": corpus_dir, "--text-model": text_model})
    with exclusive(out):                                   # a second writer is refused, one line
        with replacing(out, overwrite, complete=has_model) as target:
            ...write everything into target...             # OUT itself, or a staging folder beside it

- `check_paths` refuses an output that is, or lies inside, one of the command's inputs, and an
  input that lies inside an output that may be replaced (paths are compared after resolving
  symlinks). `check_file_output` adds what a single-file output needs: not a file an input lists
  or references, not inside another corpus, dump or model folder, and not a file that exists
  unless `--overwrite`.
- `exclusive` takes an advisory lock (`fcntl.flock`) on a lock file beside the output,
  `.NAME.lock`, removed again when the block ends; the kernel drops the lock when the process
  ends, even on kill -9, so a crashed run never leaves a lock that blocks the next one.
- `replacing` hands back OUT itself unless OUT holds a complete result and `overwrite` is set;
  then the new result is written into `.NAME.cpfd-new/` beside OUT and swapped in when the block
  ends without an error (one atomic `renameat2(RENAME_EXCHANGE)` on Linux, two renames
  elsewhere), and the old one is deleted. A failure leaves OUT untouched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

from cpfd.storage.atomic import fsync_dir
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import CONFIG, CORPUS_JSON, DUMP_MANIFEST, FOLDS, SPLITS, WEIGHTS

STAGING_SUFFIX = ".cpfd-new"


def _resolved(path: Path) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_paths(outputs: Mapping[str, Path | None], inputs: Mapping[str, Path | None]) -> None:
    """Refuse an output that is, or lies inside, an input, or that holds an input.

    `outputs` and `inputs` map the option or argument name a user typed (e.g. "--out", "CORPUS") to
    its path; None entries are skipped. Two outputs may not be the same path either.
    """
    ins = {name: _resolved(p) for name, p in inputs.items() if p is not None}
    outs = {name: _resolved(p) for name, p in outputs.items() if p is not None}
    for out_name, out in outs.items():
        for in_name, path in ins.items():
            if _inside(out, path):
                where = "is" if out == path else "lies inside"
                raise CpfdError(f"{out_name} {outputs[out_name]} {where} {in_name} {inputs[in_name]}: "
                                "an output must not overwrite an input; choose another path")
            if _inside(path, out):
                raise CpfdError(f"{in_name} {inputs[in_name]} lies inside {out_name} {outputs[out_name]}, "
                                "which this command writes (and --overwrite would replace); choose another path")
    names = list(outs)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if outs[a] == outs[b]:
                raise CpfdError(f"{a} and {b} are the same path ({outputs[a]})")


def cpfd_folder(folder: Path) -> str | None:
    """What cpfd folder `folder` is ("corpus", "teacher dump", "model", "cross-fitted teacher"), by the
    files that make it one; None for any other folder."""
    try:
        if (folder / CORPUS_JSON).is_file() and any((folder / split).is_dir() for split in SPLITS):
            return "corpus"
        if (folder / DUMP_MANIFEST).is_file() and any(folder.glob("part-*.parquet")):
            return "teacher dump"
        if (folder / CONFIG).is_file() and (folder / WEIGHTS).is_file():
            return "model"
        if (folder / FOLDS).is_file() and (folder / "fold-0").is_dir():
            return "cross-fitted teacher"
    except OSError:  # a folder we may not read: not one of ours to protect
        return None
    return None


def check_file_output(option: str, path: Path | None, *, overwrite: bool, inputs: Mapping[str, Path | None],
                      referenced: Mapping[str, Iterable[Path]] | None = None, own: Path | None = None) -> None:
    """Refuse a single-file output (a predictions file, an alpha log) that would replace what it must not.

    Never, even with `overwrite`: an input or a path inside one (`check_paths`); a file an input
    lists or references (`referenced`: what -> paths, e.g. the frames and videos a manifest lists,
    the teacher folder a dump was made from); a path inside a corpus, dump or model folder other
    than the command's own output folder `own` (the file would change that folder); a folder.
    Without `overwrite`: a file that exists. None (no such output) is fine.
    """
    if path is None:
        return
    check_paths({option: path}, inputs)
    out = _resolved(path)
    for what, paths in (referenced or {}).items():
        for ref in paths:
            if _inside(out, _resolved(ref)):
                raise CpfdError(f"{option} {path} {'is' if out == _resolved(ref) else 'lies inside'} {what} ({ref}): "
                                "an output must not overwrite an input; choose another path")
    mine = _resolved(own) if own is not None else None
    for folder in out.parents:
        if mine is not None and _inside(folder, mine):
            continue
        kind = cpfd_folder(folder)
        if kind:
            raise CpfdError(f"{option} {path} lies inside {folder}, a {kind} folder that a file written there "
                            "would change; choose a path outside it")
    if out.is_dir():
        raise CpfdError(f"{option} {path} is a folder; give a file name")
    if out.exists() and not overwrite:
        raise CpfdError(f"{option} {path} exists; pass --overwrite to replace it, or choose another path")


def lock_path(path: Path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextmanager
def exclusive(path: Path, what: str = "it", *, wait: bool = False) -> Iterator[None]:
    """Hold the advisory lock of `path` for the block: CpfdError at once if another process holds it,
    or (`wait`) block until it lets go.

    The lock file is removed when the block ends (a kill -9 leaves it, harmlessly: the next
    process takes the lock all the same). Because a lock file can be removed between another
    process's open and its lock, a process that got the lock checks that the file it locked is
    still the one at the path, and tries again if not.
    """
    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise CpfdError(f"{path}: another cpfd process (pid {holder}) is writing {what}; "
                            "wait for it to finish or stop it, then run again") from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder before us removed that file: lock the one at the path now
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        try:
            lock.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)  # closing the descriptor drops the lock


def staging_path(out: Path) -> Path:
    out = Path(out)
    return out.with_name(f".{out.name}{STAGING_SUFFIX}")


@contextmanager
def replacing(out: Path, overwrite: bool, complete: Callable[[Path], bool], *, keep_on_failure: bool = False,
              resume: bool = False) -> Iterator[Path]:
    """The folder to write into: `out` itself, or (`overwrite` and `out` complete) a staging folder
    swapped in at the end.

    `keep_on_failure` keeps a failed staging folder (a training run's checkpoint) so that the same
    command with `resume` continues it; otherwise a failed staging folder is deleted.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    if not (overwrite and complete(out)):
        yield out
        return
    staging = staging_path(out)
    if staging.exists() and not resume:
        shutil.rmtree(staging)  # the leftovers of an overwrite that never finished
    staging.mkdir(parents=True, exist_ok=True)
    try:
        yield staging
    except BaseException:
        if not keep_on_failure:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, out)


def swap_in(staging: Path, out: Path) -> None:
    """Put `staging` where `out` is, then delete the old `out`."""
    if _exchange(staging, out):
        shutil.rmtree(staging)  # now holds the old result
    else:
        old = out.with_name(f".{out.name}.cpfd-old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old)
    fsync_dir(out.parent)


_RENAME_EXCHANGE = 2
_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux's renameat2(RENAME_EXCHANGE); False where unsupported."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.renameat2  # noqa: B018 (raises AttributeError where glibc lacks it)
        except (OSError, AttributeError):
            _libc = False
    if not _libc:
        return False
    at_fdcwd = -100
    if _libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False  # a file system or kernel without it: two renames instead
    raise OSError(err, os.strerror(err), str(b))
