"""Property tests (hypothesis): the manifest parser refuses with one line or accepts what a corpus
can store; the alpha mappings and the CPFD loss stay finite and in range for any valid input.

Bounded example counts, no deadline: the whole file runs in a few seconds on two cores.
"""

import io
import json
import math
import re
import warnings

import numpy as np
import pyarrow as pa
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.images import MAX_FRAME_PIXELS, ImageError, check_image, load_image
from cpfd.storage.manifest import (
    FIELDS, MAX_CLASSES, MAX_NAME_BYTES, MAX_TEXT_BYTES, hashed_split, import_manifest, iter_manifest, parse_line,
    scan_manifest, to_row,
)
from cpfd.storage.schema import CORPUS_SCHEMA
from cpfd.student.cpfd import MAPPINGS, alpha_from_loss, cpfd_loss, validate_params

# database=None: no saved failing examples replayed across runs; every run draws fresh ones.
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

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


@FAST
@given(field=st.sampled_from(FIELDS), value=JSON_TEXT, require_label=st.booleans())
def test_any_json_value_in_any_field_is_accepted_storable_or_refused_on_one_line(field, value, require_label):
    parse_or_refuse(line_with(field, value), require_label)


@FAST
@given(kind=st.sampled_from(["privileged", "features"]),
       items=st.lists(st.tuples(STRINGS.map(json.dumps), LEAVES), max_size=5))
def test_any_feature_names_and_values(kind, items):
    obj = "{" + ", ".join(f"{k}: {v}" for k, v in items) + "}"
    parse_or_refuse(line_with(kind, obj))


@FAST
@given(paths=st.lists(STRINGS, max_size=3))
def test_any_strings_in_frames(paths):
    parse_or_refuse(line_with("frames", json.dumps(paths)))


@FAST
@given(data=st.one_of(
    st.binary(max_size=120),
    st.tuples(st.integers(0, 120), st.binary(min_size=1, max_size=4)).map(
        lambda t: (lambda b: b[: t[0]] + t[1] + b[t[0]:])(line_with("id", '"v1"').encode())),
))
def test_any_bytes_as_a_line(data):
    if data.strip():  # iter_manifest skips blank lines; parse_line is only given the others
        parse_or_refuse(data)


@SLOW
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
# Frame files: any damage gives ImageError (the line's error), never another exception or a warning
# --------------------------------------------------------------------------------------------


def _seed_images() -> dict[str, bytes]:
    seeds = {}
    for fmt, mode in [("PNG", "RGB"), ("PNG", "P"), ("JPEG", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("WEBP", "RGB")]:
        buf = io.BytesIO()
        img = Image.new(mode, (17, 9), 3 if mode == "P" else (10, 20, 30))
        if fmt == "JPEG":
            exif = Image.Exif()
            exif[0x0112] = 6  # orientation: rotate, so exif_transpose runs
            img.save(buf, format=fmt, exif=exif)
        else:
            img.save(buf, format=fmt)
        seeds[f"{fmt}-{mode}"] = buf.getvalue()
    return seeds


SEED_IMAGES = _seed_images()


@SLOW
@given(seed=st.sampled_from(sorted(SEED_IMAGES)), data=st.data())
def test_damaged_frame_files_give_image_errors_only(tmp_path_factory, seed, data):
    image = bytearray(SEED_IMAGES[seed])
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(image) - 1))
        image[at:at + data.draw(st.integers(0, 3))] = data.draw(st.binary(max_size=3))
    if data.draw(st.booleans()):
        image = image[: data.draw(st.integers(0, len(image)))]
    path = tmp_path_factory.mktemp("frames") / "f.img"
    path.write_bytes(bytes(image))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            width, height = check_image(path)
            assert width * height <= MAX_FRAME_PIXELS
            assert load_image(path, 8).size == (8, 8)
        except ImageError as e:
            assert str(e).startswith(f"frame file {str(path)!r} ") and "\n" not in str(e)
    assert [str(w.message) for w in caught] == []


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


@SLOW
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


# --------------------------------------------------------------------------------------------
# alpha_from_loss and cpfd_loss
# --------------------------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
UNIT = st.floats(0.0, 1.0)


@st.composite
def mapping_and_params(draw):
    mapping = draw(st.sampled_from(MAPPINGS))
    if mapping == "constant":
        params = {"alpha": draw(UNIT)}
    elif mapping == "threshold":
        high = draw(UNIT)
        params = {"tau": draw(FINITE), "alpha_high": high, "alpha_low": draw(st.floats(0.0, high))}
    elif mapping in ("neg-sigmoid", "tanh"):
        params = {"beta": draw(st.floats(0.0, 1.7976931348623157e308)), "center": draw(FINITE)}
    else:
        alpha_max = draw(st.floats(0.0, 1.0, exclude_min=True))
        lo, hi = sorted(draw(st.lists(FINITE, min_size=2, max_size=2, unique=True)))
        params = {"alpha_min": draw(st.floats(0.0, alpha_max, exclude_min=True)), "alpha_max": alpha_max,
                  "loss_min": lo, "loss_max": hi}
    validate_params(mapping, params)  # the strategy follows its rules
    return mapping, params


@st.composite
def finite_losses(draw):
    dtype = draw(st.sampled_from([np.float64, np.float32, np.float16]))
    array = draw(hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=2, max_side=6),
                            elements=st.floats(allow_nan=False, allow_infinity=False, width=np.finfo(dtype).bits)))
    as_tensor = draw(st.booleans())
    return torch.from_numpy(array) if as_tensor else array


@FAST
@given(mp=mapping_and_params(), losses=finite_losses())
def test_alpha_is_finite_in_unit_range_and_non_increasing(mp, losses):
    mapping, params = mp
    alpha = alpha_from_loss(losses, mapping, **params)
    a = np.asarray(alpha.float() if isinstance(alpha, torch.Tensor) else alpha, dtype=np.float64)
    assert a.shape == tuple(losses.shape)
    assert np.isfinite(a).all() and (a >= 0).all() and (a <= 1).all(), (a, losses)
    ordered = np.sort(np.asarray(losses).reshape(-1))
    a_sorted = np.asarray(alpha_from_loss(ordered, mapping, **params))
    assert (np.diff(a_sorted) <= 0).all(), (ordered, a_sorted)


@st.composite
def loss_inputs(draw):
    b, c = draw(st.integers(0, 4)), draw(st.integers(2, 5))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    logits = hnp.arrays(dtype, (b, c), elements=st.floats(-1e4, 1e4, width=np.finfo(dtype).bits))
    s, t = torch.from_numpy(draw(logits)), torch.from_numpy(draw(logits))
    labels = torch.tensor(draw(st.lists(st.integers(0, c - 1), min_size=b, max_size=b)), dtype=torch.int64)
    per_sample = hnp.arrays(np.float32, (b,), elements=st.floats(0, 1, width=32)).map(torch.from_numpy)
    alpha = draw(st.one_of(UNIT, per_sample))
    return s, t, labels, alpha, draw(st.floats(0.05, 20.0))


@FAST
@given(inputs=loss_inputs())
def test_cpfd_loss_is_finite_non_negative_with_finite_gradients(inputs):
    s, t, labels, alpha, temperature = inputs
    s = s.clone().requires_grad_(True)
    loss = cpfd_loss(s, t, labels, alpha, temperature)
    assert torch.isfinite(loss)
    # KL and CE are >= 0; float rounding of terms as large as |logit| / T may dip a hair below
    scale = 1.0 + (s.detach().abs().max().item() + t.abs().max().item() if s.numel() else 0.0) * temperature
    eps = 1e-5 if s.dtype == torch.float32 else 1e-12
    assert loss.item() >= -eps * scale, (loss.item(), scale)
    loss.backward()
    assert torch.isfinite(s.grad).all()
