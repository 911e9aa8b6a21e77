"""JSON Lines manifests (DESIGN.md 4.1): line-by-line validation, and `cpfd import` into a corpus.

A manifest holds one JSON object per video (or per sample, for a tabular manifest):

    {"id": "v1", "frames": ["v1/0.jpg", "v1/1.jpg"], "title": "...", "ocr_text": "...",
     "privileged": {"reports": 3, "legacy_score": 0.8}, "features": {"duration": 12.5},
     "label": "violating", "split": "train"}

The rules for one line live in `parse_line` and `frame_paths`, so that the serve path
(`cpfd predict MODEL MANIFEST`, which reads manifests without labels) applies the same ones
with `require_label=False`. `scan_manifest` is the whole-file pass (unique ids, the same kinds
of fields on every line, feature names, class names, frame files exist) and `import_manifest`
the two-pass import:

    pass 1  scan_manifest: stream the lines, validate them all; nothing is written
    pass 2  stream the lines again, load and resize frames, write rows with CorpusWriter

Every mistake in the input raises CpfdError(f"{manifest}:{line}: <problem>"): one line a user
can act on. Pass 1 refuses every value pass 2 could fail to store: strings UTF-8 cannot encode
(JSON lone surrogates such as "\ud83d"), numbers that do not fit their column, and anything over
the size limits below (docs/formats.md, "Limits"); it also opens the header of every frame pass 2
will decode. Because pass 2 runs inside `with CorpusWriter(...)`, an error there (an image whose
data is damaged past its header) leaves no corpus.json behind.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

from tqdm import tqdm

from cpfd.storage.corpus import CORPUS_JSON, Corpus, CorpusWriter
from cpfd.storage.errors import CpfdError, warn
from cpfd.storage.outputs import check_paths
from cpfd.storage.images import ImageError, check_image, load_frames, select_frames

FIELDS = ("id", "frames", "title", "ocr_text", "privileged", "features", "label", "split")

# The kinds of input a line can carry; every line of one manifest carries the same kinds.
KINDS = ("frames", "text", "features", "privileged")

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
        _check_string(f, f"frame path {_name(f)}", MAX_PATH_BYTES, err)
        if "\0" in f:
            raise err(f"frame path {_name(f)} holds a NUL character, which no file name can")
    return value


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
    `frames` is the list of paths as written (see `frame_paths`), `privileged` / `features`
    map name -> float or None (missing), `kinds` is the frozenset of KINDS the line carries.
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
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_reject_constant,
                         parse_int=_parse_int)
    except json.JSONDecodeError as e:
        raise err(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except _TooLarge as e:
        raise err(str(e)) from None
    except ValueError as e:
        raise err(f"not valid JSON ({e})") from None
    except RecursionError:  # Python's JSON reader stops at about 1000 levels
        raise err("lists or objects nested too deeply to read (a manifest line nests 2 levels)") from None
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

    frames = _frames(obj["frames"], err) if "frames" in obj else None

    kinds = {k for k in ("frames", "privileged", "features") if k in obj}
    if "title" in obj or "ocr_text" in obj:
        kinds.add("text")
    return {
        "line": line_no,
        "id": sample_id,
        "frames": frames,
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


def _is_file(p: Path, as_written: str, manifest_path, line_no: int) -> bool:
    try:
        return p.is_file()
    except OSError as e:  # not "no such file": a name too long, a folder we may not read
        raise line_error(manifest_path, line_no, f"frame file {as_written!r} cannot be read ({e.strerror})") from None


def frame_paths(record: dict, manifest_path: str | Path, *, check: bool = True) -> list[Path]:
    """The record's frame files, relative paths resolved against the manifest's folder.

    With `check`, a path that is not an existing file raises the line's error.
    """
    base = Path(manifest_path).parent
    paths = []
    for f in record["frames"] or []:
        p = Path(f)
        p = p if p.is_absolute() else base / p
        if check and not _is_file(p, f, manifest_path, record["line"]):
            what = "is not a file" if p.exists() else "does not exist"
            shown = str(p) if str(p).isprintable() else repr(str(p))  # a newline in a path: still one line
            raise line_error(manifest_path, record["line"], f"frame file {f!r} {what} ({shown})")
        paths.append(p)
    return paths


def feature_vector(values: dict[str, float | None] | None, names: Sequence[str]) -> list[float]:
    """Values in `names` order; a name the line leaves out or sets to null is NaN."""
    values = values or {}
    return [math.nan if values.get(n) is None else values[n] for n in names]


def hashed_split(sample_id: str, eval_fraction: float) -> str:
    """The split of a line without `split`: a hash of its id, the same on every machine."""
    u = int(hashlib.sha256(sample_id.encode()).hexdigest()[:16], 16) / 2**64  # uniform in [0, 1)
    return "eval" if u < eval_fraction else "train"


# --------------------------------------------------------------------------------------------
# The whole file (pass 1)
# --------------------------------------------------------------------------------------------


def _describe_kinds(kinds) -> str:
    return ", ".join(k for k in KINDS if k in kinds) or "no inputs"


@dataclass
class ManifestScan:
    """What pass 1 learned about a manifest."""

    lines_read: int = 0  # physical lines, blank ones included
    samples: int = 0
    first_line: int = 0
    kinds: frozenset = frozenset()
    label_kind: type | None = None  # int or str
    label_names: set = field(default_factory=set)
    max_label: int = -1
    privileged_features: list[str] = field(default_factory=list)  # sorted union of names
    features: list[str] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)

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
) -> ManifestScan:
    """Pass 1: validate every line and the file as a whole, streaming; writes nothing.

    Class names: `classes` if given (labels must be among them, or index them); else the
    sorted set of string labels (at most MAX_CLASSES); else, for int labels, "0".."max" (at
    least 2 classes). With `check_frames`, every listed frame file must exist; with
    `frames_per_video` too, the header of each frame `select_frames` keeps is read: it must be
    an image Pillow knows, of at most MAX_FRAME_PIXELS (what `to_row` will decode). A frame file
    inside `out` (the corpus folder an import writes, and --overwrite replaces) is refused.
    """
    manifest = Path(manifest)
    if classes is not None:
        classes = _check_classes(classes)
    class_set = set(classes or ())  # up to MAX_CLASSES names, looked up once per line
    scan = ManifestScan()
    seen_ids: dict[str, int] = {}
    priv_names: set[str] = set()
    feat_names: set[str] = set()
    first_label_line = 0
    out_dir = Path(os.path.realpath(out)) if out is not None else None
    records = iter_manifest(manifest, require_label=require_label)
    # leave=False: the bar is erased when done, so an error stays the only line on the terminal.
    for rec in tqdm(records, desc="check", unit=" lines", file=sys.stderr, disable=not progress, leave=False):
        line = rec["line"]

        def err(problem: str) -> CpfdError:
            return line_error(manifest, line, problem)

        if rec["id"] in seen_ids:
            raise err(f"duplicate id {_name(rec['id'])} (first on line {seen_ids[rec['id']]})")
        seen_ids[rec["id"]] = line

        if scan.samples == 0:
            scan.first_line, scan.kinds = line, rec["kinds"]
        elif rec["kinds"] != scan.kinds:
            raise err(
                f"has {_describe_kinds(rec['kinds'])} but line {scan.first_line} has "
                f"{_describe_kinds(scan.kinds)}; every line needs the same kinds of fields"
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
        if check_frames:
            paths = frame_paths(rec, manifest)
            for f, path in zip(rec["frames"] or [], paths if out_dir is not None else []):
                if out_dir in Path(os.path.realpath(path)).parents:
                    raise err(f"frame file {f!r} lies inside OUT {out}, which the import writes; move the "
                              "frames or choose another OUT")
            if frames_per_video and paths:
                for i in sorted(set(select_frames(len(paths), frames_per_video))):
                    try:
                        check_image(paths[i])
                    except ImageError as e:
                        raise err(f"frame file {rec['frames'][i]!r} {e.reason}") from None
        scan.samples += 1

    if scan.samples == 0:
        raise CpfdError(f"{manifest}: empty manifest (no lines with a sample)")
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
    """A corpus row (CORPUS_SCHEMA) for one record: frames loaded and resized, features in
    corpus order with NaN for missing ones. An image that does not decode raises the line's
    error naming the file."""
    frames: list[bytes] = []
    if frames_per_video > 0:
        paths = frame_paths(record, manifest_path, check=False)
        try:
            frames = load_frames(paths, frames_per_video, image_size)
        except ImageError as e:
            as_written = record["frames"][paths.index(e.path)] if e.path in paths else str(e.path)
            raise line_error(manifest_path, record["line"], f"frame file {as_written!r} {e.reason}") from None
    return {
        "sample_id": record["id"],
        "label": label,
        "title": record["title"] or "",
        "ocr_text": record["ocr_text"] or "",
        "frames": frames,
        "privileged": feature_vector(record["privileged"], privileged_features),
        "features": feature_vector(record["features"], features),
    }


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
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """`cpfd import`: manifest -> corpus directory. Returns lines_read (blank lines included),
    rows_written, train_rows, eval_rows, classes and the corpus fingerprint.

    Nothing is written until the whole manifest has been validated (pass 1 also reads the
    header of every frame pass 2 decodes); an existing corpus in `out` is refused before reading
    (unless `overwrite`) and survives a manifest that fails pass 1.
    """
    manifest, out = Path(manifest), Path(out)
    if not 0.0 <= eval_fraction <= 1.0:
        raise CpfdError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    if not 1 <= frames_per_video <= MAX_FRAMES_PER_VIDEO:
        raise CpfdError(f"frames_per_video must be in [1, {MAX_FRAMES_PER_VIDEO}], got {frames_per_video}")
    if not 1 <= image_size <= MAX_IMAGE_SIZE:
        raise CpfdError(f"image_size must be in [1, {MAX_IMAGE_SIZE}], got {image_size}")
    task = task or manifest.stem
    _check_string(task, f"task name {_name(task)}", MAX_NAME_BYTES,
                  lambda problem: CpfdError(f"{problem} (name the task with --task)"))
    # Refuse early, touching nothing; CorpusWriter checks again in pass 2.
    check_paths({"OUT": out}, {"MANIFEST": manifest})
    if out.exists() and not out.is_dir():
        raise CpfdError(f"{out} exists and is not a directory")
    if (out / CORPUS_JSON).exists() and not overwrite:
        raise CpfdError(f"{out} already holds a corpus ({CORPUS_JSON}); pass --overwrite to replace it")

    scan = scan_manifest(manifest, classes=classes, frames_per_video=frames_per_video, out=out, progress=progress)
    fpv = frames_per_video if scan.has_frames else 0
    command = ["cpfd", "import", str(manifest), str(out), "--eval-fraction", str(eval_fraction),
               "--frames-per-video", str(frames_per_video), "--image-size", str(image_size)]
    if classes is not None:
        command += ["--classes", ",".join(scan.classes)]

    meta, rows = _write_corpus(  # CorpusWriter removes an OUT it created if the write fails
        manifest, out, scan, frames_per_video=fpv, image_size=image_size, eval_fraction=eval_fraction,
        task=task, rows_per_shard=rows_per_shard, overwrite=overwrite,
        created_by=shlex.join(command), progress=progress,
    )
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
    }


def _write_corpus(
    manifest: Path, out: Path, scan: ManifestScan, *, frames_per_video: int, image_size: int,
    eval_fraction: float, task: str, rows_per_shard: int, overwrite: bool, created_by: str, progress: bool,
) -> tuple[dict, int]:
    """Pass 2 of `import_manifest`: stream the manifest again and write every row."""
    fpv = frames_per_video
    class_index = {c: i for i, c in enumerate(scan.classes)}
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
        overwrite=overwrite,
        created_by=created_by,
    ) as writer, tqdm(total=scan.samples, desc="import", unit=" videos" if fpv else " rows",
                      file=sys.stderr, disable=not progress) as bar:
        bar.leave = False  # kept on screen only once the corpus is written (below)
        for rec in iter_manifest(manifest):
            label = rec["label"]
            index = label if isinstance(label, int) else class_index.get(label)
            if index is None or index >= len(scan.classes):
                # Only if the file changed since pass 1.
                raise line_error(manifest, rec["line"], f"label {json.dumps(label)} not among the classes")
            row = to_row(
                rec, manifest, label=index, frames_per_video=fpv, image_size=image_size,
                privileged_features=scan.privileged_features, features=scan.features,
            )
            writer.add(rec["split"] or hashed_split(rec["id"], eval_fraction), row)
            rows += 1
            bar.update()
        if rows != scan.samples:
            raise CpfdError(f"{manifest}: changed while importing ({scan.samples} samples checked, {rows} read)")
        meta = writer.close()  # inside `with`: a failure here still removes the shards
        bar.leave = True
    return meta, rows


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
    with exclusive(out, "this export"), replacing(out, overwrite, lambda d: (d / MANIFEST_NAME).exists()) as target:
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
        atomic_write_bytes(target / MANIFEST_NAME, ("\n".join(lines) + "\n").encode())
    return {"manifest": str(out / MANIFEST_NAME), "rows": n, "frames": frames_written}
