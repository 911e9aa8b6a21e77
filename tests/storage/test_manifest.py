"""storage/manifest.py: `cpfd import` (manifest -> corpus, read back value by value, and every refusal
of bad input), video files in a manifest (sampling, `--on-bad`, `--workers`, and the serve path of
`cpfd predict`), `cpfd export-manifest`, and property tests (hypothesis) of the line parser and of
what scan accepts and import writes."""

import hashlib
import io
import json
import math
import re
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from cpfd.cli import cpfd
from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.images import check_image, decode_frames
from cpfd.storage.manifest import (
    FIELDS, MAX_CLASSES, MAX_NAME_BYTES, MAX_TEXT_BYTES, SKIPPED_JSONL, hashed_split, import_manifest, iter_manifest,
    parse_line, scan_manifest, to_row,
)
from cpfd.storage.schema import CORPUS_COLUMNS, CORPUS_SCHEMA
from cpfd.storage.video import load_video_frames
from tests.invoke import ok, one_error_line, refused

# Distinct solid colours, far apart, so a decoded frame says which source file it came from
# even after JPEG compression.
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (0, 0, 0)]


def runner() -> CliRunner:
    try:  # click < 8.2 mixes stderr into output unless told not to
        return CliRunner(mix_stderr=False)
    except TypeError:
        return CliRunner()


def run(*args):
    return runner().invoke(cpfd, [str(a) for a in args])


def write_image(path: Path, color, size, fmt) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


def write_manifest(path: Path, lines) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


def video(folder: Path, name: str, colors, size, fmt) -> list[str]:
    """Frame files under folder/name/, returned relative to `folder` (the manifest's)."""
    ext = "png" if fmt == "PNG" else "jpg"
    rels = []
    for k, c in enumerate(colors):
        rel = f"{name}/{k}.{ext}"
        write_image(folder / rel, COLORS[c], size, fmt)
        rels.append(rel)
    return rels


def read_rows(corpus: Corpus) -> dict:
    rows = {}
    for split in ("train", "eval"):
        for table in corpus.iter_batches(split, CORPUS_COLUMNS):
            for row in table.to_pylist():
                rows[row["sample_id"]] = {**row, "split": split}
    return rows


def frame_colors(frames) -> list[int]:
    pixels = decode_frames(frames).astype(float)  # (F, H, W, 3)
    means = pixels.mean(axis=(1, 2))
    return [int(np.argmin([np.abs(m - np.array(c)).sum() for c in COLORS])) for m in means]


@pytest.fixture
def video_manifest(tmp_path):
    d = tmp_path / "data"
    v1 = video(d, "v1", [0, 1, 2, 3, 4, 5], (40, 30), "PNG")  # more frames than 4
    v2 = video(d, "v2", [6, 1], (100, 80), "JPEG")  # fewer
    v3 = video(d, "v3", [2, 3, 4, 5], (16, 16), "PNG")  # exactly 4, already the target size
    v4 = [str((d / "v4.jpg").resolve())]  # one frame, absolute path
    write_image(d / "v4.jpg", COLORS[3], (20, 50), "JPEG")
    lines = [
        {"id": "v1", "frames": v1, "title": "cat video", "ocr_text": "LOL",
         "privileged": {"reports": 3, "legacy_score": 0.75}, "features": {"duration": 12.5},
         "label": "violating", "split": "eval"},
        {"id": "v2", "frames": v2, "title": "", "ocr_text": "buy now",
         "privileged": {"reports": None}, "features": {"duration": 3, "likes": 7},
         "label": "ok", "split": "train"},
        "",  # blank: skipped, but counted in line numbers and lines read
        {"id": "v3", "frames": v3, "title": "news", "privileged": None, "features": {},
         "label": "ok", "split": "train"},
        {"id": "v4", "frames": v4, "ocr_text": "sticker", "privileged": {"legacy_score": -1e-3},
         "features": {"likes": 0}, "label": "violating"},
    ]
    return write_manifest(d / "videos.jsonl", lines)


def test_video_manifest_round_trip(tmp_path, video_manifest):
    out = tmp_path / "corpus"
    result = run("import", video_manifest, out, "--quiet", "--image-size", 16)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"read 5 lines, wrote 4 rows (train 3, eval 1) to {out}"

    corpus = Corpus(out)
    assert corpus.meta["task"] == "videos"
    assert corpus.classes == ["ok", "violating"]  # sorted names
    assert corpus.frames_per_video == 4 and corpus.image_size == 16 and corpus.has_text
    assert corpus.privileged_features == ["legacy_score", "reports"]  # sorted union
    assert corpus.features == ["duration", "likes"]
    assert corpus.meta["created_by"].startswith("cpfd import ")

    rows = read_rows(corpus)
    assert set(rows) == {"v1", "v2", "v3", "v4"}
    v1, v2, v3, v4 = (rows[k] for k in ("v1", "v2", "v3", "v4"))
    assert (v1["split"], v2["split"], v3["split"]) == ("eval", "train", "train")
    assert v4["split"] == hashed_split("v4", 0.2)
    assert [v1["label"], v2["label"], v3["label"], v4["label"]] == [1, 0, 0, 1]
    assert (v1["title"], v1["ocr_text"]) == ("cat video", "LOL")
    assert (v3["title"], v3["ocr_text"], v4["title"]) == ("news", "", "")

    assert v1["privileged"] == [0.75, 3.0]
    assert v1["features"][0] == 12.5 and math.isnan(v1["features"][1])  # `likes` absent on this line
    assert all(math.isnan(x) for x in v2["privileged"])  # one null, one absent
    assert v2["features"] == [3.0, 7.0]
    assert all(math.isnan(x) for x in v3["privileged"] + v3["features"])
    assert v4["privileged"][0] == pytest.approx(-1e-3) and math.isnan(v4["privileged"][1])

    for row in rows.values():
        assert len(row["frames"]) == 4
        assert all(f.startswith(b"\x89PNG") for f in row["frames"])  # JPEG sources re-encoded
        assert decode_frames(row["frames"]).shape == (4, 16, 16, 3)
    assert frame_colors(v1["frames"]) == [0, 2, 3, 5]  # evenly spaced, first and last kept
    assert frame_colors(v2["frames"]) == [6, 1, 1, 1]  # last repeated
    assert frame_colors(v3["frames"]) == [2, 3, 4, 5]
    assert frame_colors(v4["frames"]) == [3, 3, 3, 3]

    info = run("info", out)
    assert info.exit_code == 0, info.output
    assert "train: 3 rows" in info.stdout and "ok 2, violating 1" in info.stdout
    assert "eval: 1 rows" in info.stdout and "ok 0, violating 1" in info.stdout


def test_classes_option_sets_the_order(tmp_path, video_manifest):
    out = tmp_path / "corpus"
    result = run("import", video_manifest, out, "--quiet", "--image-size", 8, "--classes", "violating,ok,unsure")
    assert result.exit_code == 0, result.output
    corpus = Corpus(out)
    assert corpus.classes == ["violating", "ok", "unsure"]
    assert {k: r["label"] for k, r in read_rows(corpus).items()} == {"v1": 0, "v2": 1, "v3": 1, "v4": 0}


def test_int_labels_and_hashed_split_are_deterministic(tmp_path):
    ids = [f"sample-{i}" for i in range(60)]
    lines = [{"id": s, "title": f"t {s}", "label": i % 3} for i, s in enumerate(ids)]
    lines[5]["split"] = "eval"
    manifest = write_manifest(tmp_path / "m.jsonl", lines)

    fingerprints = []
    for name in ("a", "b"):
        result = run("import", manifest, tmp_path / name, "--quiet", "--eval-fraction", 0.3)
        assert result.exit_code == 0, result.output
        corpus = Corpus(tmp_path / name)
        fingerprints.append(corpus.fingerprint)
    assert fingerprints[0] == fingerprints[1]

    assert corpus.classes == ["0", "1", "2"]
    assert corpus.frames_per_video == 0 and corpus.has_text
    rows = read_rows(corpus)
    for i, s in enumerate(ids):
        u = int(hashlib.sha256(s.encode()).hexdigest()[:16], 16) / 2**64
        expected = "eval" if (i == 5 or u < 0.3) else "train"
        assert rows[s]["split"] == expected and rows[s]["label"] == i % 3
        assert rows[s]["frames"] == [] and rows[s]["ocr_text"] == ""
    n_eval = sum(r["split"] == "eval" for r in rows.values())
    assert 5 <= n_eval <= 30  # the hash spreads ids; not all in one split


def test_one_int_label_still_makes_two_classes(tmp_path):
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "features": {"x": 1}, "label": 0},
                                                      {"id": "b", "features": {"x": 2}, "label": 0}])
    assert run("import", manifest, tmp_path / "c", "--quiet").exit_code == 0
    assert Corpus(tmp_path / "c").classes == ["0", "1"]


def test_tabular_manifest(tmp_path):
    lines = [
        {"id": f"r{i}", "features": {"age": i, "score": None if i % 2 else 0.5},
         "privileged": {"reports": i * 2}, "label": i % 2, "split": "train" if i < 6 else "eval"}
        for i in range(8)
    ]
    manifest = write_manifest(tmp_path / "table.jsonl", lines)
    result = run("import", manifest, tmp_path / "c", "--quiet")
    assert result.exit_code == 0, result.output
    assert "read 8 lines, wrote 8 rows (train 6, eval 2)" in result.stdout
    corpus = Corpus(tmp_path / "c")
    assert corpus.frames_per_video == 0 and not corpus.has_frames and not corpus.has_text
    assert corpus.features == ["age", "score"] and corpus.privileged_features == ["reports"]
    rows = read_rows(corpus)
    for i in range(8):
        r = rows[f"r{i}"]
        assert r["frames"] == [] and r["title"] == "" and r["ocr_text"] == ""
        assert r["features"][0] == i and r["privileged"] == [2.0 * i]
        assert math.isnan(r["features"][1]) if i % 2 else r["features"][1] == 0.5


def test_existing_corpus_is_refused_then_replaced_with_overwrite(tmp_path, video_manifest):
    out = tmp_path / "corpus"
    assert run("import", video_manifest, out, "--quiet").exit_code == 0
    before = (out / CORPUS_JSON).read_bytes()

    result = run("import", video_manifest, out, "--quiet")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"error: {out} already holds a corpus ({CORPUS_JSON}); pass --overwrite to replace it"
    ]
    assert (out / CORPUS_JSON).read_bytes() == before

    # A manifest that fails pass 1 never touches the corpus, even with --overwrite.
    bad = write_manifest(tmp_path / "bad.jsonl", ['{"id": "x"'])
    assert run("import", bad, out, "--quiet", "--overwrite").exit_code == 1
    assert (out / CORPUS_JSON).read_bytes() == before

    result = run("import", video_manifest, out, "--quiet", "--overwrite", "--image-size", 8)
    assert result.exit_code == 0, result.output
    assert Corpus(out).image_size == 8


# --------------------------------------------------------------------------------------------
# Bad input: one `error:` line naming the line and the problem, exit 1, no corpus.json
# --------------------------------------------------------------------------------------------


def _frames(d: Path) -> list[str]:
    write_image(d / "f.png", COLORS[0], (10, 10), "PNG")
    return ["f.png"]


BAD_MANIFESTS = {
    "not json": (lambda d: [{"id": "a", "label": 0}, '{"id": "b", "label": 1'],
                 [], ":2: not valid JSON"),
    "not an object": (lambda d: [{"id": "a", "label": 0}, '["b", 1]'], [], ":2: expected a JSON object, got list"),
    "a json array on one line": (lambda d: ['[{"id": "a", "title": "t", "label": 0}, {"id": "b", "title": "u", "label": 1}]'],
                                 [], ":1: the manifest is a JSON array, not JSON Lines (one object per line)"),
    "a json array over lines": (lambda d: ["[", '{"id": "a", "title": "t", "label": 0},', '{"id": "b", "label": 1}', "]"],
                                [], ":1: the manifest is a JSON array, not JSON Lines"),
    "nan is not json": (lambda d: ['{"id": "a", "label": 0, "features": {"x": NaN}}'], [],
                        ":1: not valid JSON (NaN is not JSON"),
    "missing id": (lambda d: [{"id": "a", "title": "t", "label": 0}, {"title": "t", "label": 1}], [],
                   ":2: missing id"),
    "empty id": (lambda d: [{"id": "", "title": "t", "label": 0}], [], ":1: id must be a non-empty string"),
    "duplicate id": (lambda d: [{"id": "a", "title": "t", "label": 0}, "", {"id": "a", "title": "u", "label": 1}],
                     [], ":3: duplicate id 'a' (first on line 1)"),
    "frame missing": (lambda d: [{"id": "a", "frames": _frames(d), "label": 0},
                                 {"id": "b", "frames": ["f.png", "nope.png"], "label": 1}],
                      [], ":2: frame file 'nope.png' does not exist"),
    "frame not an image": (lambda d: [{"id": "a", "frames": _frames(d), "label": 0},
                                      {"id": "b", "frames": ["junk.png"], "label": 1}],
                           [], ":2: frame file 'junk.png' is not a readable image"),
    "label out of range": (lambda d: [{"id": "a", "title": "t", "label": 0}, {"id": "b", "title": "t", "label": 2}],
                           ["--classes", "ok,bad"], ":2: label 2 out of range for 2 classes"),
    "negative label": (lambda d: [{"id": "a", "title": "t", "label": -1}], [], ":1: label -1 out of range"),
    "unknown label": (lambda d: [{"id": "a", "title": "t", "label": "ok"}, {"id": "b", "title": "t", "label": "meh"}],
                      ["--classes", "ok,bad"], ":2: unknown label 'meh'"),
    "missing label": (lambda d: [{"id": "a", "title": "t"}], [], ":1: missing label"),
    "float label": (lambda d: [{"id": "a", "title": "t", "label": 1.0}], [], ":1: label must be a class index"),
    "mixed label kinds": (lambda d: [{"id": "a", "title": "t", "label": "ok"}, {"id": "b", "title": "t", "label": 1}],
                          [], ":2: label 1 mixes class indices with the class names used since line 1"),
    "feature not a number": (lambda d: [{"id": "a", "features": {"x": 1}, "label": 0},
                                        {"id": "b", "features": {"x": "7"}, "label": 1}],
                             [], ":2: features 'x' is not a number: \"7\""),
    "feature is a bool": (lambda d: [{"id": "a", "features": {"x": True}, "label": 0}], [],
                          ":1: features 'x' is not a number: true"),
    "privileged not an object": (lambda d: [{"id": "a", "title": "t", "privileged": [1, 2], "label": 0}], [],
                                 ":1: privileged must be an object"),
    "unknown field": (lambda d: [{"id": "a", "title": "t", "lable": 0}], [],
                      ":1: unknown field 'lable' (did you mean 'label'?)"),
    "bad split": (lambda d: [{"id": "a", "title": "t", "label": 0, "split": "test"}], [],
                  ":1: split must be \"train\" or \"eval\""),
    "different kinds": (lambda d: [{"id": "a", "frames": _frames(d), "title": "t", "label": 0},
                                   {"id": "b", "title": "t", "label": 1}],
                        [], ":2: has text but line 1 has frames, text"),
    "empty manifest": (lambda d: ["", "   "], [], ": empty manifest"),
    "one class name": (lambda d: [{"id": "a", "title": "t", "label": "ok"}], [], "a corpus needs at least 2 classes"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_is_one_error_line(tmp_path, case):
    lines_of, options, expected = BAD_MANIFESTS[case]
    d = tmp_path / "data"
    d.mkdir()
    (d / "junk.png").write_bytes(b"this is not a png")
    manifest = write_manifest(d / "m.jsonl", lines_of(d))
    out = tmp_path / "out"
    result = run("import", manifest, out, "--quiet", *options)
    assert result.exit_code == 1, result.output
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {manifest}"), err
    assert expected in err[0], err[0]
    assert result.stdout == ""
    assert not out.exists()  # not even an empty folder where there was nothing before


def test_missing_manifest_file(tmp_path):
    result = run("import", tmp_path / "nope.jsonl", tmp_path / "out", "--quiet")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path / 'nope.jsonl'}: no such manifest file"]


# --------------------------------------------------------------------------------------------
# The pieces import is made of
# --------------------------------------------------------------------------------------------


def test_parse_line_without_label_for_the_serve_path():
    rec = parse_line('{"id": "x", "frames": ["a.png"], "title": "t"}', 7, "m.jsonl", require_label=False)
    assert rec["id"] == "x" and rec["label"] is None and rec["kinds"] == frozenset({"frames", "text"})
    with pytest.raises(CpfdError, match=r"^m\.jsonl:7: missing label$"):
        parse_line('{"id": "x", "title": "t"}', 7, "m.jsonl")


def test_rows_per_shard_splits_an_import_into_shards(tmp_path):
    lines = [json.dumps({"id": f"v{i}", "features": {"a": float(i)}, "privileged": {"p": 1.0}, "label": i % 2,
                         "split": "train"}) for i in range(7)]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(cpfd, ["import", str(manifest), str(tmp_path / "c"), "--rows-per-shard", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    assert Corpus(tmp_path / "c").shard_rows("train") == [3, 3, 1]


# --------------------------------------------------------------------------------------------
# Bad input that used to pass pass 1 and fail while writing (issue 12): every value either
# validates or gives one `error:` line; nothing is written, an existing corpus is untouched
# --------------------------------------------------------------------------------------------


def png_header(path: Path, width: int, height: int) -> str:
    """A PNG whose header says width x height, with no pixel data: the size check must come first."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path.name


def _raw(**fields) -> str:
    """A manifest line as JSON text; "\\ud83d" written as is (json.dumps would too, escaped)."""
    return json.dumps({"id": "a", "title": "t", "label": 0, **fields})


SURROGATE = "\ud83d"  # half of 😀: JSON can spell it ("\ud83d"), UTF-8 cannot encode it
SURROGATE_MESSAGE = "is not valid Unicode: lone surrogate \\ud83d at character 1"

# name: (lines of the manifest (given its folder), options, the line's problem)
NEW_BAD_INPUTS = {
    "surrogate id": (lambda d: [_raw(id=SURROGATE)], [], f":1: id {SURROGATE_MESSAGE}"),
    "surrogate title": (lambda d: [_raw(), _raw(id="b", title=SURROGATE)], [], f":2: title {SURROGATE_MESSAGE}"),
    "surrogate ocr_text": (lambda d: [_raw(ocr_text=SURROGATE)], [], f":1: ocr_text {SURROGATE_MESSAGE}"),
    "surrogate label": (lambda d: [_raw(label="ok"), _raw(id="b", label=SURROGATE)], [],
                        f":2: label '\\ud83d' {SURROGATE_MESSAGE}"),
    "surrogate feature name": (lambda d: [_raw(features={SURROGATE: 1})], [],
                               f":1: features name '\\ud83d' {SURROGATE_MESSAGE}"),
    "surrogate privileged name": (lambda d: [_raw(privileged={"ok": 1, "x" + SURROGATE: 2})], [],
                                  ":1: privileged name 'x\\ud83d' is not valid Unicode: lone surrogate \\ud83d "
                                  "at character 2"),
    "surrogate frame path": (lambda d: [_raw(frames=[SURROGATE + ".png"])], [],
                             f":1: frame path '\\ud83d.png' {SURROGATE_MESSAGE}"),
    "surrogate --classes name": (lambda d: [_raw()], ["--classes", f"ok,{SURROGATE}"],
                                 f"--classes: class name '\\ud83d' {SURROGATE_MESSAGE}"),
    "surrogate --task": (lambda d: [_raw()], ["--task", SURROGATE], f"task name '\\ud83d' {SURROGATE_MESSAGE}"),
    "deep nesting": (lambda d: [_raw(), "[" * 100_000], [], ":2: lists or objects nested too deeply to read"),
    "deep nesting in a field": (lambda d: ['{"id": "a", "title": ' + "[" * 100_000], [],
                                ":1: lists or objects nested too deeply to read"),
    "line too long": (lambda d: [_raw(title="x" * (16 * 2**20))], [], ":1: line is longer than 16,777,216 bytes"),
    "integer too long": (lambda d: ['{"id": "a", "title": "t", "label": 1' + "0" * 5000 + "}"], [],
                         ":1: integer 10000000000000000000... has 5,001 digits, too large for any field"),
    "label above the class cap": (lambda d: [_raw(), _raw(id="b", label=10**12)], [],
                                  ":2: label 1000000000000 out of range: a corpus holds at most 10,000 classes "
                                  "(0..9999)"),
    "label beyond int32": (lambda d: [_raw(label=2**31)], [], ":1: label 2147483648 out of range"),
    "too many class names": (lambda d: [_raw(id=f"v{i}", label=f"c{i}") for i in range(10_001)], [],
                             ":10001: label 'c10000' is a class name beyond the first 10,000"),
    "feature rounds to inf in float32": (
        lambda d: ['{"id": "a", "features": {"x": 3.4028235677973366e38}, "label": 0}'], [],
        ":1: features 'x' = 3.4028235677973366e+38 does not fit in float32"),
    "id too long": (lambda d: [_raw(id="é" * 513)], [], ":1: id is 1,026 bytes of UTF-8; the limit is 1,024"),
    "title too long": (lambda d: [_raw(title="x" * (2**20 + 1))], [],
                       ":1: title is 1,048,577 bytes of UTF-8; the limit is 1,048,576"),
    "ocr_text too long": (lambda d: [_raw(ocr_text="\U0001F600" * 2**18 + "x")], [], ":1: ocr_text is 1,048,577 bytes"),
    "label name too long": (lambda d: [_raw(label="c" * 1025)], [], ":1: label 'cccc"),
    "feature name too long": (lambda d: [_raw(features={"f" * 1025: 1.0})], [], ":1: features name 'ffff"),
    "too many feature names on a line": (lambda d: [_raw(features={f"f{i}": 0 for i in range(10_001)})], [],
                                         ":1: features has 10,001 names; the limit is 10,000"),
    "too many feature names in all": (
        lambda d: [_raw(id=f"v{i}", features={f"f{i}": 0, f"g{i}": 1}) for i in range(5_001)], [],
        ":5001: features brings the feature names of the manifest to 10,002"),
    "too many frames": (lambda d: [_raw(frames=["f.png"] * 10_001)], [],
                        ":1: frames lists 10,001 files; the limit is 10,000"),
    "frame path too long": (lambda d: [_raw(frames=["d/" * 2049 + "f.png"])], [],
                            ":1: frame path 'd/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/d/'... "
                            "(4,103 characters) is 4,103 bytes"),
    "frame path with NUL": (lambda d: [_raw(frames=["f\0.png"])], [],
                            ":1: frame path 'f\\x00.png' holds a NUL character"),
    "frame file name too long": (lambda d: [_raw(frames=["x" * 300 + ".png"])], [],
                                 "cannot be read (File name too long)"),
    # Pillow warns from 89 Mpx and refuses from 179 Mpx; the limit is 40 Mpx, checked from the header in pass 1.
    "frame over 40 Mpx": (lambda d: [_raw(frames=[png_header(d / "big.png", 8000, 5001)])], [],
                          ":1: frame file 'big.png' is 8000 x 5001 = 40,008,000 pixels; the limit for a frame is "
                          "40,000,000"),
    "frame in Pillow's warning range": (lambda d: [_raw(frames=[png_header(d / "big.png", 10_000, 10_000)])], [],
                                        ":1: frame file 'big.png' is 10000 x 10000 = 100,000,000 pixels"),
    "frame in Pillow's error range": (lambda d: [_raw(frames=[png_header(d / "big.png", 20_000, 10_000)])], [],
                                      ":1: frame file 'big.png' has more than 178,956,970 pixels; the limit for a "
                                      "frame is 40,000,000"),
    "frame not an image, in pass 1": (lambda d: [_raw(frames=["junk.png"])], ["--frames-per-video", 1],
                                      ":1: frame file 'junk.png' is not a readable image (not a format Pillow knows)"),
    "too many classes named": (lambda d: [_raw()], ["--classes", ",".join(f"c{i}" for i in range(10_001))],
                               "--classes: 10,001 classes; a corpus holds at most 10,000"),
    "class name too long": (lambda d: [_raw()], ["--classes", "ok," + "c" * 1025], "--classes: class name 'cccc"),
}


@pytest.fixture(scope="module")
def existing_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("existing")
    manifest = write_manifest(d / "m.jsonl", [{"id": f"r{i}", "features": {"x": i}, "label": i % 2} for i in range(4)])
    assert run("import", manifest, d / "corpus", "--quiet").exit_code == 0
    return d / "corpus"


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out_state", ["absent", "corpus"])
@pytest.mark.parametrize("case", sorted(NEW_BAD_INPUTS))
def test_values_pass_2_cannot_store_are_refused_in_pass_1(tmp_path, existing_corpus, case, out_state):
    lines_of, options, expected = NEW_BAD_INPUTS[case]
    d = tmp_path / "data"
    d.mkdir()
    (d / "junk.png").write_bytes(b"this is not a png")
    manifest = write_manifest(d / "m.jsonl", lines_of(d))
    out = tmp_path / "out"
    if out_state == "corpus":
        shutil.copytree(existing_corpus, out)
        options = [*options, "--overwrite"]
    before = _snapshot(out) if out.exists() else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("import", manifest, out, "--quiet", *options)
    assert result.exit_code == 1, result.output
    err = result.stderr.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err[:3]
    if expected.startswith(":"):
        assert err[0].startswith(f"error: {manifest}{expected.split(' ')[0]} "), err[0][:300]
    assert expected in err[0], err[0][:300]
    assert len(err[0]) < 1_000  # a value is not echoed whole
    assert "Traceback" not in result.output and result.stdout == ""
    assert [str(w.message) for w in caught] == []  # no Pillow DecompressionBombWarning, no other warning
    if before is None:
        assert not out.exists()
    else:
        assert _snapshot(out) == before


def test_serve_path_applies_the_same_checks(tmp_path):
    """`cpfd predict` reads with iter_manifest(require_label=False) and to_row: same line errors."""
    png_header(tmp_path / "big.png", 10_000, 10_000)
    manifest = write_manifest(tmp_path / "score.jsonl", [{"id": "a", "frames": ["big.png"]}, _raw(id=SURROGATE)])
    records = iter_manifest(manifest, require_label=False)
    rec = next(records)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CpfdError, match=rf"^{re.escape(str(manifest))}:1: frame file 'big.png' is 10000 x 10000 "):
            to_row(rec, manifest, label=-1, frames_per_video=4, image_size=8, privileged_features=[], features=[])
    assert caught == []
    with pytest.raises(CpfdError, match=rf"^{re.escape(str(manifest))}:2: id {re.escape(SURROGATE_MESSAGE)}"):
        next(records)


def test_a_frame_at_the_pixel_limit_is_kept(tmp_path):
    # 40,000,000 pixels exactly; a gray JPEG, because it encodes (and draft-decodes) in a blink
    Image.new("L", (8000, 5000), 120).save(tmp_path / "f.jpg", quality=50)
    assert check_image(tmp_path / "f.jpg") == (8000, 5000)
    manifest = write_manifest(tmp_path / "m.jsonl", [{"id": "a", "frames": ["f.jpg"], "label": 0}])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run("import", manifest, tmp_path / "c", "--quiet", "--image-size", 8, "--frames-per-video", 1)
    assert result.exit_code == 0, result.output
    assert caught == []
    assert (decode_frames(read_rows(Corpus(tmp_path / "c"))["a"]["frames"]) == 120).all()


@pytest.mark.parametrize("option, value", [("frames_per_video", 257), ("frames_per_video", 0),
                                           ("image_size", 1025), ("image_size", 10**6)])
def test_import_manifest_refuses_absurd_sizes(tmp_path, option, value):
    """The CLI's ranges refuse these first (exit 2); a Python caller gets the same limits."""
    manifest = write_manifest(tmp_path / "m.jsonl", [_raw()])
    with pytest.raises(CpfdError, match=rf"^{option} must be in \[1, \d+\], got {value}$"):
        import_manifest(manifest, tmp_path / "out", progress=False, **{option: value})
    assert not (tmp_path / "out").exists()


def test_float32_limit_is_the_rounding_boundary(tmp_path):
    """3.4028235e38 (numpy's repr of float32's max) rounds to it and is kept; the next float up that
    rounds to inf is refused."""
    rec = parse_line('{"id": "a", "features": {"x": 3.4028235e38, "y": -3.4028235677973362e38}, "label": 0}', 1, "m")
    assert np.isfinite(np.float32(rec["features"]["x"])) and np.isfinite(np.float32(rec["features"]["y"]))
    with pytest.raises(CpfdError, match=r"^m:1: features 'x' = -3.4028235677973366e\+38 does not fit in float32$"):
        parse_line('{"id": "a", "features": {"x": -3.4028235677973366e38}, "label": 0}', 1, "m")


# --------------------------------------------------------------------------------------------
# Video files in the manifest: sampling, bad files (`--on-bad`), `--workers` writing the same
# corpus as one process, and `cpfd predict` reading video lines with the same rules.
#
# Every video is made here with PyAV from numpy frames: 24x16 px, 12 frames at 12 fps. Frame k is
# a flat colour whose red channel is RED0 + RED_STEP * k, so the index of each stored frame can be
# read back from the JPEG's mean colour (codec and JPEG error is a few levels; steps are 20 apart).
# --------------------------------------------------------------------------------------------

RED0, RED_STEP = 10, 20
W, H, N = 24, 16, 12
SIZE, FPV = 8, 4
TSN_12_4 = [1, 4, 7, 10]  # the frames on screen at the centres of 4 equal segments of 12 frames


def flat(k: int) -> np.ndarray:
    a = np.empty((H, W, 3), np.uint8)
    a[:] = (RED0 + RED_STEP * k, 230 - RED_STEP * k, 128)
    return a


def write_video(path: Path, frames, codec: str = "libx264", options=None) -> Path:
    with av.open(str(path), "w", options=options or {}) as out:
        stream = out.add_stream(codec, rate=12)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for a in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        out.mux(stream.encode())
    return path


def frame_indices(frames: list[bytes]) -> list[int]:
    """The index k of each stored frame (a SIZE x SIZE JPEG), read from its red channel."""
    out = []
    for data in frames:
        assert data[:2] == b"\xff\xd8"  # JPEG
        with Image.open(io.BytesIO(data)) as img:
            a = np.asarray(img.convert("RGB"), dtype=np.float64)
        assert a.shape == (SIZE, SIZE, 3)
        k = round((a[..., 0].mean() - RED0) / RED_STEP)
        assert abs(a[..., 0].mean() - (RED0 + RED_STEP * k)) < 8
        out.append(k)
    return out


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    """Good and bad files, made once."""
    d = tmp_path_factory.mktemp("clips")
    twelve = [flat(k) for k in range(N)]
    clips = {
        "mp4": write_video(d / "twelve.mp4", twelve),
        "webm": write_video(d / "twelve.webm", twelve, "libvpx-vp9"),
        "one": write_video(d / "one.mp4", [flat(5)]),
    }
    # Cut in half, its index first: the header promises 4 s, the frames stop at 2 (found in pass 1).
    whole = write_video(d / "long.mp4", [flat(k % N) for k in range(48)], options={"movflags": "+faststart"})
    clips["truncated"] = d / "truncated.mp4"
    clips["truncated"].write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    # Text: not a video (pass 1).
    clips["text"] = d / "notes.mp4"
    clips["text"].write_text("Notes for the shoot.\nBring the second camera.\n" * 40)
    # Random bytes in the middle of the frames' data: the header and the first frame are fine, so
    # only decoding (pass 2) finds it. Noise frames, so that the middle is past the first frame.
    rng = np.random.default_rng(0)
    noise = write_video(d / "noise.mp4", [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(N)])
    data = bytearray(noise.read_bytes())
    box = data.index(b"mdat")
    mid = box + int.from_bytes(data[box - 4: box], "big") // 2
    data[mid: mid + 200] = np.random.default_rng(1).integers(0, 256, 200, dtype=np.uint8).tobytes()
    clips["damaged"] = d / "damaged.mp4"
    clips["damaged"].write_bytes(bytes(data))
    return clips


def line(i: int, video) -> dict:
    return {"id": f"v{i}", "video": str(video), "title": f"clip {i}", "label": ("ok", "bad")[i % 2]}


def import_(manifest, out, *args):
    return run("import", manifest, out, "--quiet", "--frames-per-video", FPV, "--image-size", SIZE, *args)


def rows_of(corpus_dir: Path) -> dict[str, dict]:
    corpus = Corpus(corpus_dir)
    return {r["sample_id"]: r for split in ("train", "eval")
            for t in corpus.iter_batches(split, ["sample_id", "label", "frames"]) for r in t.to_pylist()}


def test_video_lines_import_the_frames_at_segment_centres(tmp_path, clips):
    folder = tmp_path / "data"
    (folder / "clips").mkdir(parents=True)
    for name in ("mp4", "webm"):
        shutil.copy(clips[name], folder / "clips" / clips[name].name)
    manifest = write_manifest(folder / "videos.jsonl", [
        line(1, "clips/twelve.mp4"),  # relative to the manifest's folder
        line(2, "clips/twelve.webm"),
        line(3, clips["one"]),  # absolute; one frame: repeated
    ])
    out = tmp_path / "corpus"
    result = import_(manifest, out)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("read 3 lines, wrote 3 rows (train ")
    assert "skipped" not in result.stdout and not (out / SKIPPED_JSONL).exists()
    corpus = Corpus(out)
    assert (corpus.frames_per_video, corpus.image_size, corpus.has_text) == (FPV, SIZE, True)
    rows = rows_of(out)
    assert frame_indices(rows["v1"]["frames"]) == TSN_12_4  # H.264 in MP4
    assert frame_indices(rows["v2"]["frames"]) == TSN_12_4  # VP9 in WebM
    assert frame_indices(rows["v3"]["frames"]) == [5] * FPV
    assert rows["v1"]["frames"] == load_video_frames(clips["mp4"], FPV, SIZE)  # storage/video.py's bytes


def test_a_line_gives_frames_or_a_video_not_both(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [{**line(1, clips["mp4"]), "frames": ["a.png"]}])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:1: has both frames and video")
    assert not (tmp_path / "out").exists()
    for value, problem in (("", "video must be the path of one video file"), (["a.mp4"], "got a list of 1 item"),
                           (None, "got null"), ("a\0b.mp4", "holds a NUL character"),
                           ("\ud83d.mp4", "not valid Unicode"), ("x" * 5000, "4,096")):
        with pytest.raises(CpfdError, match=problem) as info:
            parse_line(json.dumps({"id": "v1", "video": value, "label": 0}), 7, "m.jsonl")
        assert str(info.value).startswith("m.jsonl:7: ") and "\n" not in str(info.value)


def test_video_lines_and_frame_lines_do_not_mix(tmp_path, clips):
    Image.fromarray(flat(0)).save(tmp_path / "f.png")
    lines = [line(1, clips["mp4"]), {"id": "v2", "frames": ["f.png"], "title": "t", "label": "ok"}]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    refused("import", manifest, tmp_path / "out", "--quiet",
            message=f"{manifest}:2: gives its frames as image files (frames) but line 1 as a video file (video); "
                    "every line gives its frames the same way")
    manifest = write_manifest(tmp_path / "m.jsonl", lines[::-1])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: gives its frames as a video file (video)")
    # A line without frames at all is the kinds rule, as before.
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), {"id": "v2", "title": "t", "label": "ok"}])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: has text but line 1 has frames, text")


def test_missing_video_and_video_inside_out(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), line(2, "nope.mp4")])
    refused("import", manifest, tmp_path / "out", "--quiet",
            message=f"{manifest}:2: video file 'nope.mp4' does not exist ({tmp_path / 'nope.mp4'})")
    (tmp_path / "out").mkdir()
    shutil.copy(clips["mp4"], tmp_path / "out" / "in.mp4")
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), line(2, "out/in.mp4")])
    refused("import", manifest, tmp_path / "out", "--quiet", message=f"{manifest}:2: video file 'out/in.mp4' lies inside OUT")


@pytest.mark.parametrize("bad,line_no,reason", [
    ("truncated", 2, "is truncated or damaged: its video frames end at"),  # pass 1: probe
    ("text", 3, "is not a video"),  # pass 1: probe
    ("damaged", 4, "is damaged: decoding failed"),  # pass 2: only decoding finds it
])
def test_a_bad_video_is_one_error_naming_line_and_file(tmp_path, clips, bad, line_no, reason):
    lines = [line(1, clips["mp4"])] + [line(i, clips["webm"]) for i in range(2, 6)]
    lines[line_no - 1] = line(line_no, clips[bad])
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "out")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert one_error_line(result.stderr).startswith(f"error: {manifest}:{line_no}: video file {str(clips[bad])!r} {reason}")
    assert not (tmp_path / "out").exists()  # nothing written, not even an empty OUT


def test_skip_leaves_out_bad_videos_and_lists_them(tmp_path, clips):
    lines = [line(1, clips["mp4"]), line(2, clips["truncated"]), line(3, clips["text"]), line(4, clips["webm"]),
             line(5, clips["damaged"]), line(6, tmp_path / "gone.mp4"), line(7, clips["one"])]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    out = tmp_path / "out"
    result = import_(manifest, out, "--on-bad", "skip")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().startswith("read 7 lines, wrote 3 rows (train ")
    assert result.stdout.strip().endswith(f") to {out}, skipped 4 (see {out / SKIPPED_JSONL})")
    report = [json.loads(x) for x in (out / SKIPPED_JSONL).read_text().splitlines()]
    assert [(e["line"], e["id"], e["file"]) for e in report] == [
        (2, "v2", str(clips["truncated"])), (3, "v3", str(clips["text"])), (5, "v5", str(clips["damaged"])),
        (6, "v6", str(tmp_path / "gone.mp4"))]
    assert report[0]["reason"].startswith("is truncated or damaged")
    assert report[1]["reason"].startswith("is not a video")
    assert report[2]["reason"].startswith("is damaged: decoding failed")  # found in pass 2
    assert report[3]["reason"].startswith("does not exist")
    rows = rows_of(out)
    assert sorted(rows) == ["v1", "v4", "v7"]
    assert frame_indices(rows["v4"]["frames"]) == TSN_12_4
    assert Corpus(out).classes == ["bad", "ok"]  # skipped lines still name classes
    assert Corpus(out).meta["created_by"].endswith("--on-bad skip")

    again = tmp_path / "again"  # same manifest, same corpus
    assert import_(manifest, again, "--on-bad", "skip").exit_code == 0
    assert (again / SKIPPED_JSONL).read_bytes() == (out / SKIPPED_JSONL).read_bytes()
    assert Corpus(again).fingerprint == Corpus(out).fingerprint


def snapshot_of(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_check_decodes_everything_says_what_an_import_would_write_and_writes_nothing(tmp_path, clips):
    """import --check: pass 1 and pass 2's decoding, no corpus. A file only decoding finds (a damaged
    middle) is the line's error, as in an import; with --on-bad skip, the lines an import would leave
    out, and the rows it would write, which an import then writes."""
    lines = [line(1, clips["mp4"]), line(2, clips["truncated"]), line(3, clips["webm"]), line(4, clips["damaged"]),
             line(5, clips["one"])]
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    refused("import", manifest, "--check", "--quiet", "--frames-per-video", FPV,
            message=f"{manifest}:2: video file {str(clips['truncated'])!r} is truncated or damaged")
    only_decoding = write_manifest(tmp_path / "d.jsonl", [line(1, clips["mp4"]), line(4, clips["damaged"])])
    refused("import", only_decoding, "--check", "--quiet", "--frames-per-video", FPV,
            message="is damaged: decoding failed")
    before = snapshot_of(tmp_path)
    checked = ok("import", manifest, "--check", "--quiet", "--on-bad", "skip", "--frames-per-video", FPV,
                 "--image-size", SIZE, "--workers", "2")
    assert snapshot_of(tmp_path) == before  # nothing written, anywhere
    assert f"{manifest}: valid; an import would write 3 rows (train " in checked.stdout
    assert "2 line(s) would be skipped (--on-bad skip):" in checked.stdout
    assert f"line 2 (id v2): {clips['truncated']}: is truncated or damaged" in checked.stdout
    assert f"line 4 (id v4): {clips['damaged']}: is damaged: decoding failed" in checked.stdout
    imported = import_(manifest, tmp_path / "out", "--on-bad", "skip")
    assert imported.exit_code == 0 and "wrote 3 rows" in imported.stdout
    train = checked.stdout.split("(train ")[1].split(",")[0]
    assert f"(train {train}," in imported.stdout  # the split counts the check announced


def test_out_is_an_option_like_every_command_and_the_old_form_works(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["mp4"]), line(2, clips["one"])])
    ok("import", manifest, "--out", tmp_path / "a", "--quiet", "--frames-per-video", FPV, "--image-size", SIZE)
    ok("import", manifest, tmp_path / "b", "--quiet", "--frames-per-video", FPV, "--image-size", SIZE)
    assert Corpus(tmp_path / "a").fingerprint == Corpus(tmp_path / "b").fingerprint
    refused("import", manifest, "--quiet", message="give the corpus folder to write, --out DIR")
    refused("import", manifest, tmp_path / "c", "--out", tmp_path / "d", "--quiet",
            message="the corpus folder is given twice")
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_skip_covers_bad_frame_images_too(tmp_path):
    for k in range(3):
        Image.fromarray(flat(k)).save(tmp_path / f"{k}.png")
    (tmp_path / "text.png").write_text("not an image")
    damaged = (tmp_path / "0.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(damaged[: len(damaged) // 2])  # header fine, data cut: pass 2
    manifest = write_manifest(tmp_path / "m.jsonl", [
        {"id": "a", "frames": ["0.png", "1.png"], "label": 0},
        {"id": "b", "frames": ["0.png", "text.png"], "label": 1},
        {"id": "c", "frames": ["cut.png"], "label": 1},
        {"id": "d", "frames": ["2.png"], "label": 0},
    ])
    refused("import", manifest, tmp_path / "e", "--quiet", message=f"{manifest}:2: frame file 'text.png' is not a readable image")
    result = ok("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip", "--image-size", SIZE)
    assert "wrote 2 rows" in result.stdout and "skipped 2" in result.stdout
    report = [json.loads(x) for x in (tmp_path / "out" / SKIPPED_JSONL).read_text().splitlines()]
    assert [(e["line"], e["id"], e["file"]) for e in report] == [(2, "b", "text.png"), (3, "c", "cut.png")]
    assert sorted(rows_of(tmp_path / "out")) == ["a", "d"]


def test_every_line_skipped_is_an_error(tmp_path, clips):
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["text"]), line(2, clips["truncated"])])
    refused("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip",
            message=f"{manifest}: every line has a bad file (2 skipped), so nothing is left to import")
    assert not (tmp_path / "out").exists()
    manifest = write_manifest(tmp_path / "m.jsonl", [line(1, clips["damaged"]), line(2, clips["text"])])  # pass 2, 1
    refused("import", manifest, tmp_path / "out", "--quiet", "--on-bad", "skip",
            message=f"every line has a bad file (2 skipped), so nothing is left to import; the first, line 1: "
                    f"{str(clips['damaged'])!r} is damaged: decoding failed")
    assert not (tmp_path / "out").exists()


def test_workers_write_the_same_bytes_and_meet_errors_in_line_order(tmp_path, clips):
    good = [clips["mp4"], clips["webm"], clips["one"]]
    lines = [line(i, good[i % 3]) for i in range(1, 21)]
    lines[4] = line(5, clips["text"])  # pass 1 skip
    lines[12] = line(13, clips["damaged"])  # pass 2 skip
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    for workers in (1, 2):
        result = import_(manifest, tmp_path / f"w{workers}", "--on-bad", "skip", "--rows-per-shard", 5,
                         "--workers", workers)
        assert result.exit_code == 0, result.output
        assert "skipped 2" in result.stdout
    one, two = tmp_path / "w1", tmp_path / "w2"
    shards = sorted(p.relative_to(one) for p in one.rglob("*.parquet"))
    assert len(shards) >= 3 and shards == sorted(p.relative_to(two) for p in two.rglob("*.parquet"))
    for shard in shards:
        assert (one / shard).read_bytes() == (two / shard).read_bytes(), shard
    assert (one / SKIPPED_JSONL).read_bytes() == (two / SKIPPED_JSONL).read_bytes()
    meta1, meta2 = (json.loads((d / CORPUS_JSON).read_text()) for d in (one, two))
    assert meta1["fingerprint"] == meta2["fingerprint"]
    meta2["created_by"] = meta2["created_by"].replace(str(two), str(one))
    assert meta1 == meta2  # --workers is not recorded

    # With workers, the first problem in line order is still the one reported: a bad file on line
    # 5 before a duplicate id on line 9, and a duplicate id on line 3 before a bad file on line 13.
    lines[8] = line(9, good[0]) | {"id": "v1"}
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "e", "--workers", 2)
    assert one_error_line(result.stderr).startswith(f"error: {manifest}:5: video file {str(clips['text'])!r} is not a video")
    lines[4], lines[8], lines[2] = line(5, good[1]), line(9, good[0]), line(3, good[2]) | {"id": "v2"}
    manifest = write_manifest(tmp_path / "m.jsonl", lines)
    result = import_(manifest, tmp_path / "e", "--workers", 2)
    assert one_error_line(result.stderr) == f"error: {manifest}:3: duplicate id 'v2' (first on line 2)"
    assert not (tmp_path / "e").exists()


def test_predict_reads_video_lines(tmp_path, clips, student):
    """A student trained on 2 frames of 16 px (tests/conftest.py) scores a manifest of videos; the
    scores are those of the same frames given as image files (JPEG decoded at the model's size: the
    same pixels)."""
    videos = [clips["mp4"], clips["webm"], clips["one"]]
    as_videos, as_images = [], []
    for i, path in enumerate(videos):
        common = {"id": f"v{i}", "title": f"clip {i}", "ocr_text": "", "features": {"duration": 1.0}}
        as_videos.append({**common, "video": str(path)})
        names = []
        for k, data in enumerate(load_video_frames(path, 2, 16)):
            (tmp_path / f"{i}-{k}.jpg").write_bytes(data)
            names.append(f"{i}-{k}.jpg")
        as_images.append({**common, "frames": names})
    scores = []
    for name, lines in (("videos", as_videos), ("images", as_images)):
        result = ok("predict", student, write_manifest(tmp_path / f"{name}.jsonl", lines), "--quiet")
        scores.append([json.loads(x) for x in result.stdout.splitlines()])
    assert [s["id"] for s in scores[0]] == ["v0", "v1", "v2"]
    assert scores[0] == scores[1]

    bad = write_manifest(tmp_path / "bad.jsonl", [as_videos[0], {**as_videos[1], "video": str(clips["damaged"])}])
    refused("predict", student, bad, "--quiet",
            message=f"{bad}:2: video file {str(clips['damaged'])!r} is damaged: decoding failed")


def test_a_worker_that_dies_is_one_error_naming_the_lines_in_flight(tmp_path):
    import os

    from cpfd.storage.manifest import _in_order, _Pool

    pool = _Pool(1)
    try:
        jobs = [((7, "v7"), (3,)), ((8, "v8"), None)]  # os._exit(3) in the worker: as if killed
        with pytest.raises(CpfdError, match=r"^m.jsonl: a worker process died .* while lines 7 to 8 were in flight"):
            list(_in_order(pool, os._exit, jobs, Path("m.jsonl")))
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------
# Warnings on small data, and cpfd export-manifest (issue 17: a newcomer's first hour)
# --------------------------------------------------------------------------------------------


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_import_warns_about_a_split_of_one_class(tmp_path):
    lines = [json.dumps({"id": f"v{i}", "features": {"x": float(i)}, "label": "pos" if i < 3 else "neg",
                         "split": "eval" if i >= 8 else "train"}) for i in range(12)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    result = ok("import", tmp_path / "m.jsonl", tmp_path / "c", "--quiet")
    assert any("the eval split holds one class (neg, 4 rows)" in w for w in warnings_of(result)), result.stderr


def test_an_exported_manifest_imports_back_to_the_same_rows(corpus, tmp_path):
    # the shared corpus (tests/conftest.py): 16 px frames, 2 a video, both kinds of features
    ok("export-manifest", corpus.path, tmp_path / "m", "--split", "eval", "--keep-split")
    ok("import", tmp_path / "m" / "manifest.jsonl", tmp_path / "back", "--image-size", "16", "--frames-per-video", "2",
       "--classes", "neg,pos", "--quiet")
    again = Corpus(tmp_path / "back")
    columns = ["sample_id", "label", "title", "ocr_text", "frames", "features", "privileged"]
    want = [r for t in corpus.iter_batches("eval", columns) for r in t.to_pylist()]
    have = [r for t in again.iter_batches("eval", columns) for r in t.to_pylist()]
    assert [r["sample_id"] for r in have] == [r["sample_id"] for r in want]
    for a, b in zip(have, want):
        assert (a["label"], a["title"], a["ocr_text"]) == (b["label"], b["title"], b["ocr_text"])
        for key, names, names_back in (("features", corpus.features, again.features),
                                       ("privileged", corpus.privileged_features, again.privileged_features)):
            back = dict(zip(names_back, a[key]))  # import orders feature names alphabetically
            assert np.allclose([back[n] for n in names], b[key], equal_nan=True), key
        for x, y in zip(a["frames"], b["frames"]):  # lossless PNG both ways: the same pixels
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(x))), np.asarray(Image.open(io.BytesIO(y))))


def test_a_serving_export_has_no_labels_and_predict_reads_it(corpus, student, tmp_path):
    ok("export-manifest", corpus.path, tmp_path / "new", "--limit", "3", "--no-labels", "--no-privileged")
    lines = [json.loads(line) for line in (tmp_path / "new" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and not any("label" in line or "privileged" in line for line in lines)
    result = ok("predict", student, tmp_path / "new" / "manifest.jsonl", "--quiet")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [line["id"] for line in lines]


# --------------------------------------------------------------------------------------------
# Properties (hypothesis): the line parser refuses with one line or accepts what a corpus can
# store, and what scan accepts import writes. Bounded example counts, no deadline: they run in a
# few seconds on two cores. database=None: no saved failing examples replayed across runs.
# --------------------------------------------------------------------------------------------

MANY_EXAMPLES = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW_EXAMPLES = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

MANIFEST = "m.jsonl"
LINE = 7

# --------------------------------------------------------------------------------------------
# JSON values, as text, including what json.dumps never writes (NaN, 1e400, lone surrogates)
# --------------------------------------------------------------------------------------------

CHARS = st.one_of(
    st.characters(),
    st.characters(codec=None, categories=["Cs"]),  # lone surrogates, written as JSON escapes below
    st.sampled_from(["\x00", "\n", "\u2028", "é", "\U0001F600", "\ud83d", "\ude00"]),
)
STRINGS = st.text(CHARS, max_size=12)
NUMBER_TEXT = st.one_of(
    st.integers().map(str),
    st.integers(min_value=-(10**60), max_value=10**60).map(str),
    st.floats().map(json.dumps),  # NaN, Infinity, -Infinity included (not JSON)
    st.sampled_from([
        "1e400", "-1e400", "1e-400", "-0.0", "3.4028235e38", "3.4028235677973366e38", "-3.4028235677973362e38",
        str(MAX_CLASSES - 1), str(MAX_CLASSES), str(2**31), str(10**12), "9" * 41, "9" * 5000, "0.5",
    ]),
)
LEAVES = st.one_of(st.sampled_from(["null", "true", "false"]), NUMBER_TEXT, STRINGS.map(json.dumps))
JSON_TEXT = st.recursive(
    LEAVES,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4).map(lambda xs: "[" + ", ".join(xs) + "]"),
        st.lists(st.tuples(STRINGS.map(json.dumps), kids), max_size=4).map(
            lambda kv: "{" + ", ".join(f"{k}: {v}" for k, v in kv) + "}"
        ),
    ),
    max_leaves=12,
)

VALID = {
    "id": '"v1"', "frames": '["a.png", "b/c.jpg"]', "title": '"a title"', "ocr_text": '"LOL"',
    "privileged": '{"reports": 3}', "features": '{"duration": 12.5}', "label": "1", "split": '"train"',
}


def line_with(field: str, value_text: str) -> str:
    parts = {**VALID, field: value_text}
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in parts.items()) + "}"


def refused_with_one_line(e: CpfdError, manifest=MANIFEST, line=LINE) -> None:
    message = str(e)
    pattern = rf"{re.escape(str(manifest))}:{line}: " if line is not None else rf"{re.escape(str(manifest))}:\d+: "
    assert re.match(pattern, message), message
    assert "\n" not in message and "\r" not in message, message
    assert len(message) < 2_000, message[:300]  # a value is not echoed whole


def assert_storable(rec: dict) -> None:
    """An accepted record is one Arrow row of the corpus schema, every value intact."""
    for key in ("id", "title", "ocr_text"):
        if rec[key] is not None:
            rec[key].encode("utf-8")
    assert len(rec["id"].encode()) <= MAX_NAME_BYTES
    for text in (rec["title"], rec["ocr_text"]):
        assert text is None or len(text.encode()) <= MAX_TEXT_BYTES
    for f in rec["frames"] or []:
        f.encode("utf-8")
        assert "\0" not in f
    label = rec["label"]
    if isinstance(label, str):
        assert label and len(label.encode("utf-8")) <= MAX_NAME_BYTES
    else:
        assert label is None or 0 <= label < MAX_CLASSES
    names = {k: sorted(rec[k] or ()) for k in ("privileged", "features")}
    row = to_row(rec, MANIFEST, label=label if isinstance(label, int) else 0, frames_per_video=0, image_size=8,
                 privileged_features=names["privileged"], features=names["features"])
    table = pa.Table.from_pylist([row], schema=CORPUS_SCHEMA)
    for k in ("privileged", "features"):
        stored = np.asarray(table.column(k)[0].as_py(), dtype=np.float32)
        given_ = np.array([np.nan if rec[k][n] is None else rec[k][n] for n in names[k]], dtype=np.float64)
        assert np.array_equal(np.isnan(stored), np.isnan(given_))
        assert np.isfinite(stored[~np.isnan(stored)]).all()  # nothing became inf on the way to float32
    hashed_split(rec["id"], 0.2)


def parse_or_refuse(text, require_label=True):
    try:
        rec = parse_line(text, LINE, MANIFEST, require_label=require_label)
    except CpfdError as e:
        refused_with_one_line(e)
        return None
    assert_storable(rec)
    return rec


# --------------------------------------------------------------------------------------------
# parse_line / iter_manifest
# --------------------------------------------------------------------------------------------


def test_the_valid_line_is_valid():
    assert parse_or_refuse(line_with("id", '"v1"')) is not None


@MANY_EXAMPLES
@given(field=st.sampled_from(FIELDS), value=JSON_TEXT, require_label=st.booleans())
def test_any_json_value_in_any_field_is_accepted_storable_or_refused_on_one_line(field, value, require_label):
    parse_or_refuse(line_with(field, value), require_label)


@MANY_EXAMPLES
@given(kind=st.sampled_from(["privileged", "features"]),
       items=st.lists(st.tuples(STRINGS.map(json.dumps), LEAVES), max_size=5))
def test_any_feature_names_and_values(kind, items):
    obj = "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    parse_or_refuse(line_with(kind, obj))


@MANY_EXAMPLES
@given(paths=st.lists(STRINGS, max_size=3))
def test_any_strings_in_frames(paths):
    parse_or_refuse(line_with("frames", json.dumps(paths)))


@MANY_EXAMPLES
@given(data=st.one_of(
    st.binary(max_size=120),
    st.tuples(st.integers(0, 120), st.binary(min_size=1, max_size=4)).map(
        lambda t: (lambda b: b[: t[0]] + t[1] + b[t[0]:])(line_with("id", '"v1"').encode())),
))
def test_any_bytes_as_a_line(data):
    if data.strip():  # iter_manifest skips blank lines; parse_line is only given the others
        parse_or_refuse(data)


@FEW_EXAMPLES
@given(data=st.binary(max_size=300))
def test_iter_manifest_on_any_file(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("bytes") / "m.jsonl"
    path.write_bytes(data)
    lines = data.count(b"\n") + 1
    try:
        for rec in iter_manifest(path, require_label=False):
            assert_storable(rec)
    except CpfdError as e:
        refused_with_one_line(e, manifest=path, line=None)
        assert 1 <= int(str(e)[len(str(path)) + 1:].split(":")[0]) <= lines


def test_deeply_nested_json_is_one_line():
    for text in ("[" * 100_000, '{"id": "a", "label": 0, "title": ' + "[" * 100_000, '{"id": ' + '{"a": ' * 50_000):
        with pytest.raises(CpfdError, match=rf"^{MANIFEST}:{LINE}: lists or objects nested too deeply"):
            parse_line(text, LINE, MANIFEST)


# --------------------------------------------------------------------------------------------
# What scan_manifest accepts, import_manifest writes
# --------------------------------------------------------------------------------------------

GOOD_VALUES = st.one_of(
    st.none(), st.floats(width=32, allow_nan=False, allow_infinity=False), st.integers(-(10**6), 10**6),
    st.sampled_from([3.4028235e38, -3.4028235e38, 1e-50, 5e-324, -0.0]),  # round to float32's max, to 0
)
BAD_VALUES = st.one_of(
    st.floats(), st.integers(-(10**40), 10**40),
    st.sampled_from([3.4028235677973366e38, -3.4028235677973366e38, 10**39, True, "7"]),
)
GOOD_TEXT = st.text(st.characters(), max_size=12)  # no surrogates
GOOD_NAMES = st.sampled_from(["x", "y", "z", "ünï", "\U0001F600"])


@st.composite
def tabular_manifest(draw):
    """1-6 lines of id, features, label (and maybe privileged, title, split). Half the manifests are
    hostile: any value may then be one pass 1 must refuse."""
    hostile = draw(st.booleans())

    def pick(good, bad):
        return st.one_of(good, good, bad) if hostile else good

    n = draw(st.integers(1, 6))
    ids = draw(st.lists(pick(st.from_regex(r"[a-z0-9é\U0001F600]{1,6}", fullmatch=True), STRINGS),
                        min_size=n, max_size=n, unique=not hostile))
    values = pick(GOOD_VALUES, BAD_VALUES)
    fields = {"features": st.dictionaries(pick(GOOD_NAMES, STRINGS), values, min_size=int(not hostile), max_size=3),
              "label": pick(st.integers(0, 3), st.sampled_from([MAX_CLASSES - 1, MAX_CLASSES, 2**31, 10**12, -1]))}
    if draw(st.booleans()):  # the same kinds on every line, or pass 1 refuses the manifest for that
        fields["privileged"] = st.dictionaries(pick(st.sampled_from(["p", "q"]), STRINGS), values, max_size=2)
    if draw(st.booleans()):
        fields["title"] = pick(GOOD_TEXT, STRINGS)
    line = st.fixed_dictionaries(fields, optional={"split": st.sampled_from(["train", "eval"])})
    return [{"id": i, **draw(line)} for i in ids]


@FEW_EXAMPLES
@given(lines=tabular_manifest())
def test_what_scan_accepts_import_writes(tmp_path_factory, lines):
    d = tmp_path_factory.mktemp("roundtrip")
    manifest = d / "m.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))  # ensure_ascii: surrogates as \ud83d
    try:
        scan = scan_manifest(manifest)
    except CpfdError as e:
        if not str(e).startswith(f"{manifest}: "):  # whole-file refusals (2 classes, ...) name no line
            refused_with_one_line(e, manifest=manifest, line=None)
        with pytest.raises(CpfdError) as again:
            import_manifest(manifest, d / "out", progress=False)
        assert str(again.value) == str(e)
        assert not (d / "out").exists()
        return
    report = import_manifest(manifest, d / "out", progress=False)
    corpus = Corpus(d / "out")
    assert report["rows_written"] == len(lines) and corpus.classes == scan.classes
    stored = {}
    for split in ("train", "eval"):
        for table in corpus.iter_batches(split, ["sample_id", "label", "features"]):
            for row in table.to_pylist():
                stored[row["sample_id"]] = row
    for line in lines:
        row = stored[line["id"]]
        assert row["label"] == line["label"]
        for name, x in zip(corpus.features, row["features"]):
            v = line["features"].get(name)
            assert math.isnan(x) if v is None else x == float(np.float32(v))
