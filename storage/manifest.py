"""JSON Lines manifests (docs/formats.md): line-by-line validation, and `cpfd import` into a corpus.

A manifest holds one JSON object per video (or per sample, for a tabular manifest):

    {"id": "v1", "frames": ["v1/0.jpg", "v1/1.jpg"], "title": "...", "ocr_text": "...",
     "privileged": {"reports": 3, "legacy_score": 0.8}, "features": {"duration": 12.5},
     "label": "violating", "split": "train"}
    {"id": "v2", "video": "clips/v2.mp4", ...}      # or the frames as one video file

The rules for one line live in `parse_line`, `frame_paths` and `video_path`, so that the serve
path (`cpfd predict MODEL MANIFEST`, which reads manifests without labels) applies the same ones
with `require_label=False`, and `to_row` turns a line into a corpus row (image files through
`storage/images.py`, a video file through `storage/video.py`). `scan_manifest` is the
whole-file pass (unique ids, the same kinds of fields on every line, feature names, class names,
frame and video files exist and open) and `import_manifest` the two-pass import:

    pass 1  scan_manifest: stream the lines, validate them all; nothing is written
    pass 2  stream the lines again, load and resize frames, write rows with CorpusWriter

Every mistake in the input raises CpfdError(f"{manifest}:{line}: <problem>"): one line a user
can act on. Pass 1 refuses every value pass 2 could fail to store: strings UTF-8 cannot encode
(JSON lone surrogates such as "\ud83d"), numbers that do not fit their column, and anything over
the size limits below (docs/formats.md, "Limits"); it also opens the header of every frame pass 2
will decode, and probes every video file. Because pass 2 runs inside `with CorpusWriter(...)`, an
error there (an image whose data is damaged past its header, a video stream damaged past its
first frame) leaves no corpus.json behind.

Bad files (`on_bad`): a frame or video file that is missing or does not open or decode is the
line's error ("error"), or ("skip") the line is left out of the corpus and listed in
OUT/skipped.jsonl; the line itself is still validated in full, and still counts for the classes
and feature columns, so where a bad file is found (pass 1 or pass 2) never changes the corpus.

Workers (`workers` > 1): the files of each line are checked (pass 1) and decoded (pass 2) in a
pool of `spawn` processes, at most LINES_IN_FLIGHT_PER_WORKER x workers lines (never more than
MAX_LINES_IN_FLIGHT) in flight, while this process reads the manifest and commits rows in
manifest order: the corpus is the same, byte for byte, as with one worker. The functions the pool runs (`_check_files`, `_load_frames`) are top-level and take
plain values. A script that calls `import_manifest(workers=...)` needs the usual
`if __name__ == "__main__":` guard of multiprocessing's `spawn`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import multiprocessing
import os
import shlex
import signal
import sys
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from tqdm import tqdm

from cpfd.storage.atomic import atomic_write_bytes
from cpfd.storage.corpus import CORPUS_JSON, Corpus, CorpusWriter
from cpfd.storage.errors import CpfdError, warn
from cpfd.storage.outputs import check_paths
from cpfd.storage.images import ImageError, check_image, load_frames, select_frames
from cpfd.storage.video import VideoError, load_video_frames, probe_video

FIELDS = ("id", "frames", "video", "title", "ocr_text", "privileged", "features", "label", "split")

# The kinds of input a line can carry; every line of one manifest carries the same kinds.
# `video` is the `frames` kind too: the same frames, given as one video file.
KINDS = ("frames", "text", "features", "privileged")

# What `import_manifest` does with a line whose frame or video file is bad (missing, does not open
# or decode): the line's error, or the line left out and listed in OUT/skipped.jsonl.
ON_BAD = ("error", "skip")
SKIPPED_JSONL = "skipped.jsonl"
MAX_WORKERS = 256  # --workers (the CLI's range too)
# Lines in flight with workers: enough queued that no worker waits for the next line while one
# long video is decoded, few enough that memory does not grow with the manifest.
LINES_IN_FLIGHT_PER_WORKER = 8
MAX_LINES_IN_FLIGHT = 256

# A float64 rounds to a finite float32 below this (float32's max plus half a unit in the last
# place, 2**128 - 2**103); from here up Arrow silently stores inf.
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103

# Limits (docs/formats.md, "Limits"). Each stops one line or one option from making pass 2 or
# training allocate gigabytes; all are far above what a real manifest holds. Sizes are UTF-8 bytes.
MAX_LINE_BYTES = 16 * 2**20  # one manifest line, without its newline
MAX_NAME_BYTES = 1024  # id, a string label, a feature name, a class name, the task name
MAX_TEXT_BYTES = 2**20  # title, ocr_text
MAX_PATH_BYTES = 4096  # one frame path (Linux's PATH_MAX)
MAX_FRAMES = 10_000  # frame paths listed on one line (5.5 minutes of video at 30 fps)
MAX_CLASSES = 10_000  # classes of a corpus, so class indices 0..9999 (they are stored as int32)
MAX_FEATURES = 10_000  # distinct names in `privileged`, and separately in `features`
MAX_FRAMES_PER_VIDEO = 256  # --frames-per-video (the CLI's range too)
MAX_IMAGE_SIZE = 1024  # --image-size (the CLI's range too): a 1024 x 1024 RGB frame is 3 MB decoded
_MAX_INT_DIGITS = 40  # float32's largest value has 39 digits: no field takes a longer integer


def line_error(manifest: str | Path, line_no: int, problem: str) -> CpfdError:
    return CpfdError(f"{manifest}:{line_no}: {problem}")


# --------------------------------------------------------------------------------------------
# One line
# --------------------------------------------------------------------------------------------


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
    # json.loads keeps the last of two equal keys silently; a manifest with `"id"` twice is a bug.
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {_name(key)} appears twice in one object")
        obj[key] = value
    return obj


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON; write null for a missing value")


class _TooLarge(ValueError):
    """An integer no field can hold, refused while parsing (before Python spends time converting it)."""


def _parse_int(digits: str) -> int:
    n = len(digits.lstrip("-"))
    if n > _MAX_INT_DIGITS:
        raise _TooLarge(f"integer {digits[:20]}... has {n:,} digits, too large for any field")
    return int(digits)


def _show(value, limit: int = 60) -> str:
    """`value` for an error message: one line of ASCII, about `limit` characters at most.

    JSON-encoded (lone surrogates and newlines escaped); a long string is cut, and a list or
    object is not spelt out (it may be a megabyte, or nested 900 levels deep)."""
    if isinstance(value, list):
        return f"a list of {len(value):,} item(s)" if value else "[]"
    if isinstance(value, dict):
        return f"an object of {len(value):,} key(s)" if value else "{}"
    if isinstance(value, str) and len(value) > limit:
        return json.dumps(value[:limit])[:-1] + f'..." ({len(value):,} characters)'
    return json.dumps(value)


def _name(text: str, limit: int = 60) -> str:
    """A name (id, key, label) for an error message: repr, cut after `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text):,} characters)"


def _check_string(text: str, what: str, limit: int, err) -> None:
    """`text` must be storable: UTF-8 encodable (a JSON escape such as "\\ud83d" gives a lone
    surrogate, which Arrow and every file format refuse) and at most `limit` bytes of UTF-8."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as e:
        raise err(
            f"{what} is not valid Unicode: lone surrogate \\u{ord(text[e.start]):04x} at character {e.start + 1} "
            f"(a surrogate must be half of a pair)"
        ) from None
    if size > limit:
        raise err(f"{what} is {size:,} bytes of UTF-8; the limit is {limit:,}")


def _number_map(value, name: str, err) -> dict[str, float | None] | None:
    """`privileged` / `features`: an object of name -> finite number or null, or null."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise err(f"{name} must be an object of name -> number, got {type(value).__name__}")
    if len(value) > MAX_FEATURES:
        raise err(f"{name} has {len(value):,} names; the limit is {MAX_FEATURES:,}")
    out = {}
    for key, v in value.items():
        if key == "":
            raise err(f"{name} has an empty feature name")
        _check_string(key, f"{name} name {_name(key)}", MAX_NAME_BYTES, err)
        if v is None:
            out[key] = None
            continue
        # bool is an int subclass in Python, but `true` is not a number in a manifest.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise err(f"{name} {key!r} is not a number: {_show(v)}")
        try:
            x = float(v)
        except OverflowError:
            x = math.inf
        if not abs(x) < _FLOAT32_OVERFLOW:  # also catches inf and nan
            raise err(f"{name} {key!r} = {_show(v)} does not fit in float32")
        out[key] = x
    return out


def _text(value, name: str, err) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise err(f"{name} must be a string, got {type(value).__name__}")
    _check_string(value, name, MAX_TEXT_BYTES, err)
    return value


def _frames(value, err) -> list[str]:
    if not isinstance(value, list) or not value:
        raise err("frames must be a non-empty list of image paths (leave it out for no frames)")
    if len(value) > MAX_FRAMES:
        raise err(f"frames lists {len(value):,} files; the limit is {MAX_FRAMES:,} per video")
    for f in value:
        if not isinstance(f, str) or not f:
            raise err(f"frames must hold paths (non-empty strings), got {_show(f)}")
        _check_path(f, "frame", err)
    return value


def _video(value, err) -> str:
    if not isinstance(value, str) or not value:
        raise err(f"video must be the path of one video file (a non-empty string), got {_show(value)}")
    return _check_path(value, "video", err)


def _check_path(path: str, kind: str, err) -> str:
    """A file path of a manifest line: a bounded, valid string no file name could refuse."""
    _check_string(path, f"{kind} path {_name(path)}", MAX_PATH_BYTES, err)
    if "\0" in path:
        raise err(f"{kind} path {_name(path)} holds a NUL character, which no file name can")
    return path


def _label(value, require_label: bool, err) -> int | str | None:
    if value is None:
        if require_label:
            raise err("missing label")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise err(f"label must be a class index or a class name, got {_show(value)}")
    if isinstance(value, int):
        if value < 0:
            raise err(f"label {value} out of range (class indices start at 0)")
        if value >= MAX_CLASSES:
            raise err(f"label {value} out of range: a corpus holds at most {MAX_CLASSES:,} classes "
                      f"(0..{MAX_CLASSES - 1})")
        return value
    if not value:
        raise err("label is an empty string")
    _check_string(value, f"label {_name(value)}", MAX_NAME_BYTES, err)
    return value


def parse_line(text: str | bytes, line_no: int, manifest_path: str | Path, *, require_label: bool = True) -> dict:
    """Validate one non-blank manifest line; return it as a record.

    `text` is the line as str, or as bytes read from the file (UTF-8; a BOM is allowed on line 1).
    The record has every key of FIELDS plus `line` and `kinds`; absent fields are None.
    `frames` is the list of paths as written (see `frame_paths`), `video` the video path as
    written (see `video_path`; a line has one or the other, and either is the `frames` kind),
    `privileged` / `features` map name -> float or None (missing), `kinds` is the frozenset of
    KINDS the line carries.
    Every value of an accepted record can be stored in a corpus (see `to_row`).
    Raises CpfdError(f"{manifest_path}:{line_no}: ...") on the first problem found.
    """

    def err(problem: str) -> CpfdError:
        return line_error(manifest_path, line_no, problem)

    if len(text) > MAX_LINE_BYTES:  # characters <= bytes: a str this long is too long in UTF-8 too
        raise err(f"line is longer than {MAX_LINE_BYTES:,} bytes (the limit for one line)")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as e:
            raise err(f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    def array() -> CpfdError:  # a JSON array of objects (on one line or several): the usual mistake
        name = Path(manifest_path)
        return err(f"the manifest is a JSON array, not JSON Lines (one object per line); write one object per "
                   f"line, e.g. jq -c '.[]' {name.name} > {name.stem}.jsonl")

    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant,
                         parse_int=_parse_int)
    except json.JSONDecodeError as e:
        if line_no == 1 and text.lstrip().startswith("["):
            raise array() from None
        raise err(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except _TooLarge as e:
        raise err(str(e)) from None
    except ValueError as e:
        raise err(f"not valid JSON ({e})") from None
    except RecursionError:  # Python's JSON reader stops at about 1000 levels
        raise err("lists or objects nested too deeply to read (a manifest line nests 2 levels)") from None
    if isinstance(obj, list) and line_no == 1 and all(isinstance(o, dict) for o in obj):
        raise array()
    if not isinstance(obj, dict):
        raise err(f"expected a JSON object, got {type(obj).__name__}")

    for key in obj:
        if key not in FIELDS:
            close = difflib.get_close_matches(key, FIELDS, n=1) if len(key) < 100 else []
            hint = f" (did you mean {close[0]!r}?)" if close else f"; expected some of {', '.join(FIELDS)}"
            raise err(f"unknown field {_name(key)}{hint}")

    sample_id = obj.get("id")
    if sample_id is None:
        raise err("missing id")
    if not isinstance(sample_id, str) or not sample_id:
        raise err(f"id must be a non-empty string, got {_show(sample_id)}")
    _check_string(sample_id, "id", MAX_NAME_BYTES, err)

    label = _label(obj.get("label"), require_label, err)

    split = obj.get("split")
    if split is not None and split not in ("train", "eval"):
        raise err(f"split must be \"train\" or \"eval\", got {_show(split)}")

    if "frames" in obj and "video" in obj:
        raise err("has both frames and video; give the frames as image files (frames) or as one video "
                  "file (video), not both")
    frames = _frames(obj["frames"], err) if "frames" in obj else None
    video = _video(obj["video"], err) if "video" in obj else None

    kinds = {k for k in ("frames", "privileged", "features") if k in obj}
    if video is not None:
        kinds.add("frames")
    if "title" in obj or "ocr_text" in obj:
        kinds.add("text")
    return {
        "line": line_no,
        "id": sample_id,
        "frames": frames,
        "video": video,
        "title": _text(obj.get("title"), "title", err),
        "ocr_text": _text(obj.get("ocr_text"), "ocr_text", err),
        "privileged": _number_map(obj.get("privileged"), "privileged", err),
        "features": _number_map(obj.get("features"), "features", err),
        "label": label,
        "split": split,
        "kinds": frozenset(kinds),
    }


def iter_manifest(manifest: str | Path, *, require_label: bool = True) -> Iterator[dict]:
    """Stream the records of a manifest, one line at a time; blank lines are skipped
    (they still count in line numbers). A line longer than MAX_LINE_BYTES is refused
    without reading the rest of it."""
    manifest = Path(manifest)
    if not manifest.exists():
        raise CpfdError(f"{manifest}: no such manifest file")
    if manifest.is_dir():
        raise CpfdError(f"{manifest}: is a directory, not a manifest file")
    with open(manifest, "rb") as f:
        line_no = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise line_error(manifest, line_no,
                                 f"line is longer than {MAX_LINE_BYTES:,} bytes (the limit for one line)")
            if not raw.strip():
                continue
            yield parse_line(raw.rstrip(b"\r\n"), line_no, manifest, require_label=require_label)


def count_lines(manifest: str | Path) -> int:
    with open(manifest, "rb") as f:
        return sum(1 for _ in f)


@dataclass(frozen=True)
class BadFile:
    """A frame or video file of one line that cannot be used: missing, not a file, or it does not
    open or decode. What `on_bad` decides about; plain values, so a worker process can return it."""

    kind: str  # "frame" or "video"
    file: str  # the path as the manifest wrote it
    reason: str  # e.g. "does not exist (/data/v9/3.jpg)", "is truncated or damaged: ..."

    def message(self) -> str:
        return f"{self.kind} file {self.file!r} {self.reason}"


def _resolve(as_written: str, base: Path) -> Path:
    """A path as the manifest wrote it: relative to the manifest's folder `base`, or absolute."""
    p = Path(as_written)
    return p if p.is_absolute() else base / p


def _not_a_file(p: Path, kind: str, as_written: str) -> BadFile | None:
    """None when `p` is an existing file; else what is wrong with it."""
    try:
        if p.is_file():
            return None
        what = "is not a file" if p.exists() else "does not exist"
    except OSError as e:  # not "no such file": a name too long, a folder we may not read
        return BadFile(kind, as_written, f"cannot be read ({e.strerror})")
    shown = str(p) if str(p).isprintable() else repr(str(p))  # a newline in a path: still one line
    return BadFile(kind, as_written, f"{what} ({shown})")


def frame_paths(record: dict, manifest_path: str | Path, *, check: bool = True) -> list[Path]:
    """The record's frame files, relative paths resolved against the manifest's folder.

    With `check`, a path that is not an existing file raises the line's error.
    """
    base = Path(manifest_path).parent
    paths = []
    for f in record["frames"] or []:
        p = _resolve(f, base)
        if check and (bad := _not_a_file(p, "frame", f)):
            raise line_error(manifest_path, record["line"], bad.message())
        paths.append(p)
    return paths


def video_path(record: dict, manifest_path: str | Path, *, check: bool = True) -> Path | None:
    """The record's video file (None for a line without `video`), a relative path resolved
    against the manifest's folder. With `check`, a path that is not an existing file raises the
    line's error."""
    if record.get("video") is None:
        return None
    p = _resolve(record["video"], Path(manifest_path).parent)
    if check and (bad := _not_a_file(p, "video", record["video"])):
        raise line_error(manifest_path, record["line"], bad.message())
    return p


def listed_files(manifest: str | Path) -> list[Path]:
    """Every frame and video file the manifest's lines name, resolved (existing or not): what an
    output must never replace. Reads the lines only, no image."""
    files: list[Path] = []
    for record in iter_manifest(manifest, require_label=False):
        files += frame_paths(record, manifest, check=False)
        video = video_path(record, manifest, check=False)
        if video is not None:
            files.append(video)
    return files


def feature_vector(values: dict[str, float | None] | None, names: Sequence[str]) -> list[float]:
    """Values in `names` order; a name the line leaves out or sets to null is NaN."""
    values = values or {}
    return [math.nan if values.get(n) is None else values[n] for n in names]


def hashed_split(sample_id: str, eval_fraction: float) -> str:
    """The split of a line without `split`: a hash of its id, the same on every machine."""
    u = int(hashlib.sha256(sample_id.encode()).hexdigest()[:16], 16) / 2**64  # uniform in [0, 1)
    return "eval" if u < eval_fraction else "train"


# --------------------------------------------------------------------------------------------
# A line's files: checked in pass 1, decoded in pass 2 (in worker processes with `workers` > 1)
# --------------------------------------------------------------------------------------------


def _check_files(frames: list[str] | None, video: str | None, base: str, frames_per_video: int | None) -> BadFile | None:
    """Pass 1's look at one line's files: each exists; with `frames_per_video`, the header of each
    image file `select_frames` keeps is read (`check_image`), and a video file is probed
    (`probe_video`: every packet read, the first frame decoded). None when all is well."""
    if video is not None:
        path = _resolve(video, Path(base))
        if (bad := _not_a_file(path, "video", video)) or not frames_per_video:
            return bad
        try:
            probe_video(path)
        except VideoError as e:
            return BadFile("video", video, e.reason)
        return None
    paths = [_resolve(f, Path(base)) for f in frames or []]
    for f, path in zip(frames or [], paths):
        if bad := _not_a_file(path, "frame", f):
            return bad
    for i in sorted(set(select_frames(len(paths), frames_per_video))) if frames_per_video and paths else []:
        try:
            check_image(paths[i])
        except ImageError as e:
            return BadFile("frame", frames[i], e.reason)
    return None


def _load_frames(frames: list[str] | None, video: str | None, base: str, frames_per_video: int,
                 image_size: int) -> list[bytes] | BadFile:
    """The `frames_per_video` encoded frames a corpus stores for one line (image files through
    `load_frames`, a video file through `load_video_frames`), or the file that failed."""
    if video is not None:
        try:
            return load_video_frames(_resolve(video, Path(base)), frames_per_video, image_size)
        except VideoError as e:
            return BadFile("video", video, e.reason)
    paths = [_resolve(f, Path(base)) for f in frames or []]
    try:
        return load_frames(paths, frames_per_video, image_size)
    except ImageError as e:
        as_written = frames[paths.index(e.path)] if e.path in paths else str(e.path)
        return BadFile("frame", as_written, e.reason)


def _ignore_interrupt() -> None:
    # Ctrl-C reaches the whole process group: a worker leaves it to the parent, which stops the
    # import (CorpusWriter removes what it wrote) instead of each worker printing a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _Pool:
    """`workers` processes for the line jobs above, and how many lines may be in flight."""

    def __init__(self, workers: int):
        # spawn, not fork: this process may already run threads (tqdm's monitor, Arrow's pools).
        self.executor = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_ignore_interrupt)
        self.window = min(MAX_LINES_IN_FLIGHT, LINES_IN_FLIGHT_PER_WORKER * workers)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _in_order(pool: _Pool | None, fn: Callable, jobs: Iterable[tuple[tuple, tuple | None]],
              manifest: Path) -> Iterator[tuple]:
    """(key, fn(*args)) for each (key, args) of `jobs`, in the order of `jobs`: here, or on the
    pool with at most `pool.window` jobs in flight (args None: result None, nothing to run).
    A key is a tuple that starts with the manifest line number.

    An exception raised while reading `jobs` (a line's own error) comes after the results of
    the jobs read before it, so that with or without a pool problems are met in line order.
    """
    if pool is None:
        for key, args in jobs:
            yield key, None if args is None else fn(*args)
        return
    jobs = iter(jobs)
    pending: deque[tuple[object, Future | None]] = deque()
    reading, error = True, None
    while True:
        if reading and len(pending) < pool.window:
            try:
                key, args = next(jobs)
            except StopIteration:
                reading = False
            except Exception as e:  # the lines before it go first
                reading, error = False, e
            else:
                pending.append((key, None if args is None else pool.executor.submit(fn, *args)))
            continue
        if not pending:
            break
        key, future = pending.popleft()
        try:
            result = None if future is None else future.result()
        except BrokenProcessPool:
            # A worker was killed (out of memory, a signal) or crashed inside a decoder: which of the
            # lines in flight it held is not known.
            last = pending[-1][0][0] if pending else key[0]
            raise CpfdError(f"{manifest}: a worker process died (killed, out of memory, or crashed in a decoder) "
                            f"while lines {key[0]} to {last} were in flight; rerun with --workers 1 to find "
                            "the file") from None
        yield key, result
    if error is not None:
        raise error


def _skip_entry(line: int, sample_id: str, bad: BadFile) -> dict:
    """One line of OUT/skipped.jsonl."""
    return {"line": line, "id": sample_id, "file": bad.file, "reason": bad.reason}


def _nothing_left(manifest: Path, skipped: list[dict]) -> CpfdError:
    first = skipped[0]
    return CpfdError(f"{manifest}: every line has a bad file ({len(skipped):,} skipped), so nothing is left to "
                     f"import; the first, line {first['line']}: {first['file']!r} {first['reason']}")


# --------------------------------------------------------------------------------------------
# The whole file (pass 1)
# --------------------------------------------------------------------------------------------


def _describe_kinds(kinds) -> str:
    return ", ".join(k for k in KINDS if k in kinds) or "no inputs"


def _describe_frames(video: bool) -> str:
    return "a video file (video)" if video else "image files (frames)"


@dataclass
class ManifestScan:
    """What pass 1 learned about a manifest."""

    lines_read: int = 0  # physical lines, blank ones included
    samples: int = 0  # lines with a sample, skipped ones included
    first_line: int = 0
    kinds: frozenset = frozenset()
    video: bool = False  # the frames come as video files (`video`), not image files (`frames`)
    label_kind: type | None = None  # int or str
    label_names: set = field(default_factory=set)
    max_label: int = -1
    privileged_features: list[str] = field(default_factory=list)  # sorted union of names
    features: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # on_bad="skip": OUT/skipped.jsonl lines, in line order

    @property
    def has_frames(self) -> bool:
        return "frames" in self.kinds

    @property
    def has_text(self) -> bool:
        return "text" in self.kinds


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = [str(c) for c in classes]
    if len(classes) > MAX_CLASSES:
        raise CpfdError(f"--classes: {len(classes):,} classes; a corpus holds at most {MAX_CLASSES:,}")

    def err(problem: str) -> CpfdError:
        return CpfdError(f"--classes: {problem}")

    seen = set()
    for c in classes:
        if not c:
            raise err(f"empty class name in {_name(','.join(classes))}")
        _check_string(c, f"class name {_name(c)}", MAX_NAME_BYTES, err)
        if c in seen:
            raise err(f"class {_name(c)} is named twice")
        seen.add(c)
    if len(classes) < 2:
        raise err(f"a corpus needs at least 2 classes, got {classes}")
    return classes


def with_positive_class(classes: list[str], positive: str, *, given: bool, names: bool) -> list[str]:
    """The classes with `positive` second (class 1, the one a binary model's threshold is on).

    Refused: more than two classes; a name that is not one of them; --classes that put it first
    (say the order once); class indices (0, 1) as labels, whose order the labels themselves fix."""
    if len(classes) != 2:
        raise CpfdError(f"--positive-class applies to two classes; the manifest has {len(classes)} "
                        f"({_some_names(classes)})")
    if positive not in classes:
        raise CpfdError(f"--positive-class {_name(positive)} is not one of the classes ({_some_names(classes)})")
    if classes[1] == positive:
        return list(classes)
    if given:
        raise CpfdError(f"--positive-class {_name(positive)} is the first of --classes {','.join(classes)}; "
                        "list it second, or leave --classes out")
    if not names:
        raise CpfdError(f"--positive-class {positive}: the labels are class indices, so class 1 is the positive "
                        "one; write the labels as class names to choose another")
    return [classes[1], classes[0]]


def _some_names(names: Sequence[str], n: int = 10) -> str:
    shown = ", ".join(c if c.isprintable() and len(c) <= 30 else _name(c, 30) for c in names[:n])
    return shown if len(names) <= n else f"{shown}, ... ({len(names):,} in all)"


def scan_manifest(
    manifest: str | Path,
    *,
    classes: Sequence[str] | None = None,
    require_label: bool = True,
    check_frames: bool = True,
    frames_per_video: int | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    on_bad: str = "error",
    pool: _Pool | None = None,
) -> ManifestScan:
    """Pass 1: validate every line and the file as a whole, streaming; writes nothing.

    Class names: `classes` if given (labels must be among them, or index them); else the
    sorted set of string labels (at most MAX_CLASSES); else, for int labels, "0".."max" (at
    least 2 classes). Every line gives its frames the same way: all image files (`frames`) or
    all video files (`video`). With `check_frames`, every listed frame or video file must exist;
    with `frames_per_video` too, the header of each frame `select_frames` keeps is read (it must
    be an image Pillow knows, of at most MAX_FRAME_PIXELS: what `to_row` will decode), and each
    video file is probed (`probe_video`). A frame or video file inside `out` (the corpus folder an
    import writes, and --overwrite replaces) is refused.

    A bad file is the line's error, or with `on_bad="skip"` the line goes into `scan.skipped`
    (the line's own fields are still checked, and still count for classes and feature names).
    `pool` (import_manifest's worker processes) checks the files of several lines at once; the
    first problem is still the first in line order.
    """
    manifest = Path(manifest)
    if on_bad not in ON_BAD:
        raise CpfdError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    if classes is not None:
        classes = _check_classes(classes)
    class_set = set(classes or ())  # up to MAX_CLASSES names, looked up once per line
    scan = ManifestScan()
    seen_ids: dict[str, int] = {}
    priv_names: set[str] = set()
    feat_names: set[str] = set()
    first_label_line = 0
    out_dir = Path(os.path.realpath(out)) if out is not None else None
    base = manifest.parent

    def lines() -> Iterator[tuple[tuple[int, str], tuple | None]]:
        """Each line checked on its own and against the lines before it, with its file job."""
        nonlocal first_label_line
        records = iter_manifest(manifest, require_label=require_label)
        # leave=False: the bar is erased when done, so an error stays the only line on the terminal.
        for rec in tqdm(records, desc="check", unit=" lines", file=sys.stderr, disable=not progress, leave=False):
            line = rec["line"]

            def err(problem: str) -> CpfdError:
                return line_error(manifest, line, problem)

            if rec["id"] in seen_ids:
                raise err(f"duplicate id {_name(rec['id'])} (first on line {seen_ids[rec['id']]})")
            seen_ids[rec["id"]] = line

            video = rec.get("video") is not None
            if scan.samples == 0:
                scan.first_line, scan.kinds, scan.video = line, rec["kinds"], video
            elif rec["kinds"] != scan.kinds:
                raise err(
                    f"has {_describe_kinds(rec['kinds'])} but line {scan.first_line} has "
                    f"{_describe_kinds(scan.kinds)}; every line needs the same kinds of fields"
                )
            elif video != scan.video and "frames" in rec["kinds"]:
                raise err(
                    f"gives its frames as {_describe_frames(video)} but line {scan.first_line} as "
                    f"{_describe_frames(scan.video)}; every line gives its frames the same way"
                )

            label = rec["label"]
            if label is not None:
                if scan.label_kind is None:
                    scan.label_kind, first_label_line = type(label), line
                elif type(label) is not scan.label_kind:
                    kind = {int: "class indices", str: "class names"}
                    raise err(
                        f"label {json.dumps(label)} mixes {kind[type(label)]} with the "
                        f"{kind[scan.label_kind]} used since line {first_label_line}"
                    )
                if isinstance(label, int):
                    if classes is not None and label >= len(classes):
                        raise err(f"label {label} out of range for {len(classes)} classes (0..{len(classes) - 1})")
                    scan.max_label = max(scan.max_label, label)
                else:
                    if classes is not None and label not in class_set:
                        raise err(f"unknown label {_name(label)}; --classes names {_some_names(classes)}")
                    if label not in scan.label_names and len(scan.label_names) >= MAX_CLASSES:
                        raise err(f"label {_name(label)} is a class name beyond the first {MAX_CLASSES:,}; "
                                  f"a corpus holds at most {MAX_CLASSES:,} classes")
                    scan.label_names.add(label)

            for kind, names in (("privileged", priv_names), ("features", feat_names)):
                names.update(rec[kind] or ())
                if len(names) > MAX_FEATURES:
                    raise err(f"{kind} brings the feature names of the manifest to {len(names):,}; "
                              f"the limit is {MAX_FEATURES:,}")
            job = None
            if check_frames and "frames" in rec["kinds"]:
                files = [rec["video"]] if video else rec["frames"]
                for f in files if out_dir is not None else []:
                    if out_dir in Path(os.path.realpath(_resolve(f, base))).parents:
                        what = "video" if video else "frame"
                        raise err(f"{what} file {f!r} lies inside OUT {out}, which the import writes; move the "
                                  f"{what}s or choose another OUT")
                job = (rec["frames"], rec.get("video"), str(base), frames_per_video)
            scan.samples += 1
            yield (line, rec["id"]), job

    for (line, sample_id), bad in _in_order(pool, _check_files, lines(), manifest):
        if bad is None:
            continue
        if on_bad == "error":
            raise line_error(manifest, line, bad.message())
        scan.skipped.append(_skip_entry(line, sample_id, bad))

    if scan.samples == 0:
        raise CpfdError(f"{manifest}: empty manifest (no lines with a sample)")
    if len(scan.skipped) == scan.samples:
        raise _nothing_left(manifest, scan.skipped)
    scan.lines_read = count_lines(manifest)
    scan.privileged_features = sorted(priv_names)
    scan.features = sorted(feat_names)
    if not (scan.has_frames or scan.has_text or scan.features):
        raise CpfdError(
            f"{manifest}: no frames, text or features on any line (line {scan.first_line} has "
            f"{_describe_kinds(scan.kinds)}); privileged features alone give the student nothing to learn from"
        )

    if classes is not None:
        scan.classes = list(classes)
    elif scan.label_kind is str:
        scan.classes = sorted(scan.label_names)
        if len(scan.classes) < 2:
            raise CpfdError(
                f"{manifest}: every label is {_name(scan.classes[0])}; a corpus needs at least 2 classes "
                f"(name them with --classes)"
            )
    elif scan.label_kind is int:
        scan.classes = [str(i) for i in range(max(scan.max_label + 1, 2))]
    return scan


# --------------------------------------------------------------------------------------------
# Import (pass 2)
# --------------------------------------------------------------------------------------------


def _row(record: dict, label: int, frames: list[bytes], privileged_features: Sequence[str],
         features: Sequence[str]) -> dict:
    return {
        "sample_id": record["id"],
        "label": label,
        "title": record["title"] or "",
        "ocr_text": record["ocr_text"] or "",
        "frames": frames,
        "privileged": feature_vector(record["privileged"], privileged_features),
        "features": feature_vector(record["features"], features),
    }


def to_row(
    record: dict,
    manifest_path: str | Path,
    *,
    label: int,
    frames_per_video: int,
    image_size: int,
    privileged_features: Sequence[str],
    features: Sequence[str],
) -> dict:
    """A corpus row (CORPUS_SCHEMA) for one record: frames loaded and resized (from image files,
    or sampled from the video file), features in corpus order with NaN for missing ones. A file
    that does not decode raises the line's error naming the file."""
    frames: list[bytes] = []
    if frames_per_video > 0:
        loaded = _load_frames(record["frames"], record.get("video"), str(Path(manifest_path).parent),
                              frames_per_video, image_size)
        if isinstance(loaded, BadFile):
            raise line_error(manifest_path, record["line"], loaded.message())
        frames = loaded
    return _row(record, label, frames, privileged_features, features)


def import_manifest(
    manifest: str | Path,
    out: str | Path,
    *,
    eval_fraction: float = 0.2,
    classes: Sequence[str] | None = None,
    frames_per_video: int = 4,
    image_size: int = 64,
    task: str | None = None,
    rows_per_shard: int = 262_144,
    row_group_rows: int = 8_192,
    overwrite: bool = False,
    progress: bool = True,
    on_bad: str = "error",
    workers: int = 1,
    positive_class: str | None = None,
) -> dict:
    """`cpfd import`: manifest -> corpus directory. Returns lines_read (blank lines included),
    rows_written, train_rows, eval_rows, classes, the corpus fingerprint, skipped (lines left
    out for a bad file) and skipped_report (the path of OUT/skipped.jsonl, or None).

    Nothing is written until the whole manifest has been validated (pass 1 also reads the
    header of every frame pass 2 decodes, and probes every video); an existing corpus in `out`
    is refused before reading (unless `overwrite`) and survives a manifest that fails pass 1.
    `on_bad`: "error" (a bad frame or video file is the line's error) or "skip" (the line is
    left out and listed in OUT/skipped.jsonl; a manifest with nothing left is an error).
    `workers` > 1 checks and decodes the files in that many processes; the corpus is the same.
    `positive_class` names the class a binary model predicts at its threshold: it becomes class 1
    (the second), whatever the order of the names.
    """
    manifest, out = Path(manifest), Path(out)
    if not 0.0 <= eval_fraction <= 1.0:
        raise CpfdError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    if not 1 <= frames_per_video <= MAX_FRAMES_PER_VIDEO:
        raise CpfdError(f"frames_per_video must be in [1, {MAX_FRAMES_PER_VIDEO}], got {frames_per_video}")
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise CpfdError(f"image_size must be in [1, {MAX_IMAGE_SIZE}], got {image_size}")
    if on_bad not in ON_BAD:
        raise CpfdError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise CpfdError(f"workers must be in [1, {MAX_WORKERS}], got {workers!r}")
    task = task or manifest.stem
    _check_string(task, f"task name {_name(task)}", MAX_NAME_BYTES,
                  lambda problem: CpfdError(f"{problem} (name the task with --task)"))
    # Refuse early, touching nothing; CorpusWriter checks again in pass 2.
    check_paths({"OUT": out}, {"MANIFEST": manifest})
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    if (out / CORPUS_JSON).exists() and not overwrite:
        raise CpfdError(f"{out} already holds a corpus ({CORPUS_JSON}); pass --overwrite to replace it")

    pool = _Pool(workers) if workers > 1 else None
    try:
        scan = scan_manifest(manifest, classes=classes, frames_per_video=frames_per_video, out=out,
                             progress=progress, on_bad=on_bad, pool=pool)
        if positive_class is not None:
            scan.classes = with_positive_class(scan.classes, positive_class, given=classes is not None,
                                               names=scan.label_kind is not int)
        fpv = frames_per_video if scan.has_frames else 0
        # --workers is left out: it does not change what is written.
        command = ["cpfd", "import", str(manifest), str(out), "--eval-fraction", str(eval_fraction),
                   "--frames-per-video", str(frames_per_video), "--image-size", str(image_size)]
        if classes is not None:
            command += ["--classes", ",".join(scan.classes)]
        if positive_class is not None:
            command += ["--positive-class", positive_class]
        if on_bad != "error":
            command += ["--on-bad", on_bad]

        meta, rows, skipped = _write_corpus(  # CorpusWriter removes an OUT it created if the write fails
            manifest, out, scan, frames_per_video=fpv, image_size=image_size, eval_fraction=eval_fraction,
            task=task, rows_per_shard=rows_per_shard, row_group_rows=row_group_rows, overwrite=overwrite,
            created_by=shlex.join(command), progress=progress, on_bad=on_bad, pool=pool,
        )
    finally:
        if pool is not None:
            pool.close()
    for problem in Corpus(out, verify="fast").split_problems():
        warn(problem)
    splits = meta["splits"]
    return {
        "lines_read": scan.lines_read,
        "rows_written": rows,
        "train_rows": splits["train"]["rows"],
        "eval_rows": splits["eval"]["rows"],
        "classes": scan.classes,
        "fingerprint": meta["fingerprint"],
        "skipped": len(skipped),
        "skipped_report": str(out / SKIPPED_JSONL) if on_bad == "skip" else None,
    }


def _lines_to_decode(manifest: Path, scan: ManifestScan, frames_per_video: int,
                     image_size: int) -> Iterator[tuple[tuple[int, dict, int], tuple | None]]:
    """Pass 2's lines, those pass 1 did not skip: ((line number, record, class index), the arguments of
    `_load_frames` for its files, or None without frames)."""
    class_index = {c: i for i, c in enumerate(scan.classes)}
    skipped_before = {entry["line"] for entry in scan.skipped}
    base = str(manifest.parent)
    for rec in iter_manifest(manifest):
        if rec["line"] in skipped_before:
            continue
        label = rec["label"]
        index = label if isinstance(label, int) else class_index.get(label)
        if index is None or index >= len(scan.classes):  # only if the file changed since pass 1
            raise line_error(manifest, rec["line"], f"label {json.dumps(label)} not among the classes")
        yield (rec["line"], rec, index), ((rec["frames"], rec.get("video"), base, frames_per_video, image_size)
                                          if frames_per_video else None)


def _decoded_lines(manifest: Path, scan: ManifestScan, frames_per_video: int, image_size: int, pool: _Pool | None,
                   on_bad: str, found_now: list[dict], bar) -> Iterator[tuple[dict, int, list[bytes] | None]]:
    """Pass 2's decoding, in manifest order: (record, class index, encoded frames) of each good line.
    A bad file is the line's error (on_bad "error"), or the line is left out and its entry appended
    to `found_now`; `bar` counts every line."""
    for (_, rec, index), frames in _in_order(pool, _load_frames,
                                             _lines_to_decode(manifest, scan, frames_per_video, image_size), manifest):
        bar.update()
        if isinstance(frames, BadFile):
            if on_bad == "error":
                raise line_error(manifest, rec["line"], frames.message())
            found_now.append(_skip_entry(rec["line"], rec["id"], frames))
            continue
        yield rec, index, frames


def check_manifest(manifest: str | Path, *, eval_fraction: float = 0.2, classes: Sequence[str] | None = None,
                   frames_per_video: int = 4, image_size: int = 64, on_bad: str = "error", workers: int = 1,
                   positive_class: str | None = None, progress: bool = True) -> dict:
    """`cpfd import --check`: everything `import_manifest` checks, every frame and video decoded as
    pass 2 decodes them, and nothing written. Returns lines_read, rows (that an import would write),
    train_rows, eval_rows, classes, features, privileged_features and skipped (the lines `on_bad="skip"`
    would leave out, each with its file and reason); with on_bad "error" the first bad file is the
    line's error, as in an import."""
    manifest = Path(manifest)
    if on_bad not in ON_BAD:
        raise CpfdError(f"on_bad must be one of {', '.join(ON_BAD)}, got {on_bad!r}")
    if not 0.0 <= eval_fraction <= 1.0:
        raise CpfdError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    if not 1 <= frames_per_video <= MAX_FRAMES_PER_VIDEO:
        raise CpfdError(f"frames_per_video must be in [1, {MAX_FRAMES_PER_VIDEO}], got {frames_per_video}")
    pool = _Pool(workers) if workers > 1 else None
    try:
        scan = scan_manifest(manifest, classes=classes, frames_per_video=frames_per_video, progress=progress,
                             on_bad=on_bad, pool=pool)
        if positive_class is not None:
            scan.classes = with_positive_class(scan.classes, positive_class, given=classes is not None,
                                               names=scan.label_kind is not int)
        fpv = frames_per_video if scan.has_frames else 0
        found_now, splits = [], {"train": 0, "eval": 0}
        with tqdm(total=scan.samples - len(scan.skipped), desc="decode", unit=" videos" if fpv else " rows",
                  file=sys.stderr, disable=not progress) as bar:
            for rec, _, _ in _decoded_lines(manifest, scan, fpv, image_size, pool, on_bad, found_now, bar):
                splits[rec["split"] or hashed_split(rec["id"], eval_fraction)] += 1
    finally:
        if pool is not None:
            pool.close()
    skipped = sorted(scan.skipped + found_now, key=lambda entry: entry["line"])
    if not splits["train"] + splits["eval"]:
        raise _nothing_left(manifest, skipped)
    return {"lines_read": scan.lines_read, "rows": splits["train"] + splits["eval"], "train_rows": splits["train"],
            "eval_rows": splits["eval"], "classes": scan.classes, "features": scan.features,
            "privileged_features": scan.privileged_features, "frames_per_video": fpv, "skipped": skipped}


def _write_corpus(
    manifest: Path, out: Path, scan: ManifestScan, *, frames_per_video: int, image_size: int,
    eval_fraction: float, task: str, rows_per_shard: int, row_group_rows: int, overwrite: bool, created_by: str,
    progress: bool,
    on_bad: str, pool: _Pool | None,
) -> tuple[dict, int, list[dict]]:
    """Pass 2 of `import_manifest`: stream the manifest again and write every row, in manifest
    order (the files of the lines in flight are decoded on `pool`). Returns the corpus.json
    content, the rows written and the skipped lines (pass 1's and pass 2's, in line order)."""
    fpv = frames_per_video
    found_now: list[dict] = []  # lines whose file only fails to decode here

    rows = 0
    with CorpusWriter(
        out,
        task=task,
        classes=scan.classes,
        frames_per_video=fpv,
        image_size=image_size,
        has_text=scan.has_text,
        privileged_features=scan.privileged_features,
        features=scan.features,
        rows_per_shard=rows_per_shard,
        row_group_rows=row_group_rows,
        overwrite=overwrite,
        created_by=created_by,
    ) as writer, tqdm(total=scan.samples - len(scan.skipped), desc="import", unit=" videos" if fpv else " rows",
                      file=sys.stderr, disable=not progress) as bar:
        bar.leave = False  # kept on screen only once the corpus is written (below)
        report = writer.out / SKIPPED_JSONL
        report.unlink(missing_ok=True)  # left by an import that never finished
        try:
            for rec, index, frames in _decoded_lines(manifest, scan, fpv, image_size, pool, on_bad, found_now, bar):
                row = _row(rec, index, frames or [], scan.privileged_features, scan.features)
                writer.add(rec["split"] or hashed_split(rec["id"], eval_fraction), row)
                rows += 1
            skipped = sorted(scan.skipped + found_now, key=lambda entry: entry["line"])
            if rows + len(skipped) != scan.samples:
                raise CpfdError(f"{manifest}: changed while importing ({scan.samples} samples checked, "
                                f"{rows + len(skipped)} read)")
            if rows == 0:
                raise _nothing_left(manifest, skipped)
            if on_bad == "skip":
                atomic_write_bytes(report, "".join(json.dumps(entry) + "\n" for entry in skipped).encode())
            meta = writer.close()  # inside `with`: a failure here still removes the shards
        except BaseException:
            report.unlink(missing_ok=True)  # before the writer's cleanup, which removes an OUT left empty
            raise
        bar.leave = True
    return meta, rows, skipped


# --------------------------------------------------------------------------------------------
# Export: a corpus split back to a manifest (examples, serving tests, moving data between tools)
# --------------------------------------------------------------------------------------------

MANIFEST_NAME = "manifest.jsonl"


def export_manifest(
    corpus_dir: str | Path,
    out: str | Path,
    *,
    split: str = "eval",
    limit: int | None = None,
    labels: bool = True,
    privileged: bool = True,
    keep_split: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """`cpfd export-manifest`: write a corpus split as a manifest `OUT/manifest.jsonl` with its frames
    as PNG files (`OUT/frames/<n>-<k>.png`), the format `cpfd import` and `cpfd predict` read.

    Lines keep the rows' order, ids, text, features (and privileged features and the label as a
    class name, unless told not to; a serving manifest has neither) and, with `keep_split`, the
    split (else an import hashes each id into a split again); a NaN feature is written as null. PNG is lossless, so importing the manifest again at the corpus's frame size
    and frame count gives back the same pixels. `limit` keeps the first rows. The manifest is
    written last and atomically; OUT is locked while it is written, and an existing export is
    replaced (with `overwrite`) only once the new one is complete.
    Returns {"manifest": path, "rows": n, "frames": n}.
    """
    import io
    import math as _math

    from PIL import Image

    from cpfd.storage.atomic import atomic_write_bytes
    from cpfd.storage.outputs import exclusive, replacing

    corpus = Corpus(corpus_dir)
    out = Path(out)
    check_paths({"OUT": out}, {"CORPUS": corpus.path})
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise CpfdError(f"{out} already holds a manifest ({MANIFEST_NAME}); pass --overwrite to replace it")
    if corpus.num_rows(split) == 0:
        raise CpfdError(f"{corpus.path}: the {split} split is empty")
    columns = ["sample_id", "label", "title", "ocr_text", "frames", "features", "privileged"]
    lines, frames_written, n = [], 0, 0
    total = min(corpus.num_rows(split), limit or corpus.num_rows(split))
    with exclusive(out, "this export"), replacing(out, overwrite, lambda d: (d / MANIFEST_NAME).exists()) as target, \
            tqdm(total=total, desc="export-manifest", unit=" rows", file=sys.stderr, disable=not progress) as bar:
        (target / "frames").mkdir(parents=True, exist_ok=True)
        for table in corpus.iter_batches(split, columns):
            for row in table.to_pylist():
                if limit is not None and n >= limit:
                    break
                line: dict = {"id": row["sample_id"]}
                if corpus.has_frames:
                    names = []
                    for k, data in enumerate(row["frames"]):
                        name = f"frames/{n:07d}-{k}.png"  # ids may hold any character: names do not
                        with Image.open(io.BytesIO(data)) as image:
                            image.convert("RGB").save(target / name, format="PNG")
                        names.append(name)
                    line["frames"] = names
                    frames_written += len(names)
                if corpus.has_text:
                    line["title"], line["ocr_text"] = row["title"], row["ocr_text"]
                for key, names in (("features", corpus.features), ("privileged", corpus.privileged_features if privileged else [])):
                    if names:
                        line[key] = {name: (None if _math.isnan(v) else v) for name, v in zip(names, row[key])}
                if labels:
                    line["label"] = corpus.classes[row["label"]]
                if keep_split:
                    line["split"] = split
                lines.append(json.dumps(line, ensure_ascii=False))
                n += 1
                bar.update(1)
        atomic_write_bytes(target / MANIFEST_NAME, ("\n".join(lines) + "\n").encode())
    return {"manifest": str(out / MANIFEST_NAME), "rows": n, "frames": frames_written}
