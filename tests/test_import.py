"""`cpfd import`: manifest -> corpus, read back value by value, and every refusal of bad input."""

import hashlib
import json
import math
import re
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cpfd.cli import cpfd
from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.images import check_image, decode_frames, load_frames, select_frames
from cpfd.storage.manifest import hashed_split, import_manifest, iter_manifest, parse_line, to_row
from cpfd.storage.schema import CORPUS_COLUMNS

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
# The reusable pieces
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, f, expected",
    [(10, 4, [0, 3, 6, 9]), (6, 4, [0, 2, 3, 5]), (4, 4, [0, 1, 2, 3]), (2, 4, [0, 1, 1, 1]),
     (1, 3, [0, 0, 0]), (7, 1, [0]), (5, 2, [0, 4])],
)
def test_select_frames(n, f, expected):
    assert select_frames(n, f) == expected


def test_select_frames_refuses_no_frames():
    with pytest.raises(ValueError):
        select_frames(0, 4)


def test_load_and_decode_frames(tmp_path):
    a = tmp_path / "a.jpg"
    Image.new("RGB", (33, 21), COLORS[1]).save(a, format="JPEG")
    gray = tmp_path / "b.png"
    Image.new("L", (5, 9), 200).save(gray, format="PNG")  # not RGB: converted
    frames = load_frames([a, gray], frames_per_video=3, image_size=12)
    pixels = decode_frames(frames)
    assert pixels.dtype == np.uint8 and pixels.shape == (3, 12, 12, 3)
    assert (pixels[2] == 200).all() and frames[1] == frames[2]
    assert decode_frames([]).shape[0] == 0
    with pytest.raises(CpfdError, match="is not a readable image"):
        load_frames([tmp_path / "a.jpg", _junk(tmp_path)], frames_per_video=2, image_size=8)


def _junk(d: Path) -> Path:
    p = d / "junk.jpg"
    p.write_bytes(b"\xff\xd8 truncated")
    return p


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
