"""The synthetic corpus generator (`cpfd synth`): determinism, validity, frames, privileged
features and their missingness, the presets' positive rates, and the command line."""

import hashlib
import io
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from cpfd.cli import cpfd
from cpfd.pipeline.synth import (
    FEATURES,
    MIN_VIEWS_FOR_RATES,
    PRESETS,
    PRIVILEGED_FEATURES,
    clean_positive_rate,
    iter_chunks,
    label_bias,
    write_synthetic_corpus,
)
from cpfd.storage.corpus import Corpus
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import CORPUS_COLUMNS

ALL = list(CORPUS_COLUMNS)


def rows_of(corpus: Corpus, split: str) -> list[dict]:
    return [r for t in corpus.iter_batches(split, ALL) for r in t.to_pylist()]


def write(out, **kw):
    kw = {"preset": "task1", "train_samples": 120, "eval_samples": 40, "progress": False, **kw}
    write_synthetic_corpus(out, **kw)
    return Corpus(out)


def file_digests(corpus: Corpus) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for s in ("train", "eval") for p in corpus.shard_paths(s)]


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Row equality where NaN == NaN (privileged features hold NaN for missing)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if {k: v for k, v in x.items() if k != "privileged"} != {k: v for k, v in y.items() if k != "privileged"}:
            return False
        if not np.array_equal(np.array(x["privileged"]), np.array(y["privileged"]), equal_nan=True):
            return False
    return True


# ---- determinism ---------------------------------------------------------------------------

# What `cpfd synth --seed 0 --train-samples 64 --eval-samples 32` writes for each preset, as a digest
# of the stored values (ids, labels, text, float32 features, decoded frame pixels), so that it does
# not depend on the Parquet or PNG encoder's version. A change of draw order, of a recipe, or of a
# default changes it: then bump GENERATOR_VERSION, say so in docs/synthetic.md, and update these.
GOLDEN = {
    "task1": "f662575592739c191d147dc99a3bd5a03bf296df3ae914524f3260358c35e9c7",
    "task2": "dafb81c78e292f91788215edc02d531d0ce0bf66e43088ebfef71356aa3e7a29",
    "task3": "ad2a6f24dc4eb413235ecc8d3b7a1858b777b1023b77c459fcc8c817f886d7c6",
    "task4": "8032ebdce3ee8601202070fe1804ca1c0f330f1f55c1265717fdb618e8ea735f",
    "task5": "224104ea032b99b3df61a3e8c2c061470a43df47d91b872843505b810a3aa775",
}


def content_digest(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for split in ("train", "eval"):
        for r in rows_of(corpus, split):
            h.update(f"{split}|{r['sample_id']}|{r['label']}|{r['title']}|{r['ocr_text']}|".encode())
            h.update(np.asarray(r["privileged"], dtype="<f4").tobytes())
            h.update(np.asarray(r["features"], dtype="<f4").tobytes())
            for frame in r["frames"]:
                h.update(np.asarray(Image.open(io.BytesIO(frame)).convert("RGB")).tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("preset", sorted(GOLDEN))
def test_seed_0_writes_the_golden_corpus(tmp_path, preset):
    corpus = write(tmp_path / preset, preset=preset, train_samples=64, eval_samples=32, seed=0)
    assert content_digest(corpus) == GOLDEN[preset]


def test_same_seed_writes_the_same_bytes(tmp_path):
    a = write(tmp_path / "a", seed=7)
    b = write(tmp_path / "b", seed=7)
    assert a.fingerprint == b.fingerprint
    assert same_rows(rows_of(a, "train"), rows_of(b, "train"))
    assert same_rows(rows_of(a, "eval"), rows_of(b, "eval"))
    assert file_digests(a) == file_digests(b)


def test_other_seed_writes_another_corpus(tmp_path):
    a = write(tmp_path / "a", seed=0)
    b = write(tmp_path / "b", seed=1)
    assert a.fingerprint != b.fingerprint
    ra, rb = rows_of(a, "train"), rows_of(b, "train")
    assert [r["title"] for r in ra] != [r["title"] for r in rb]
    assert [r["frames"] for r in ra] != [r["frames"] for r in rb]


def test_rows_do_not_depend_on_sharding_or_corpus_size(tmp_path):
    small = write(tmp_path / "small", train_samples=100, eval_samples=30)
    big = write(tmp_path / "big", train_samples=700, eval_samples=30, rows_per_shard=128)
    assert len(big.shard_paths("train")) == 6
    # a bigger corpus extends a smaller one; eval does not move when train grows
    assert same_rows(rows_of(big, "train")[:100], rows_of(small, "train"))
    assert same_rows(rows_of(big, "eval"), rows_of(small, "eval"))


def test_rendering_options_change_only_the_frames(tmp_path):
    a = write(tmp_path / "a")
    b = write(tmp_path / "b", frames_per_video=2, image_size=16)
    for x, y in zip(rows_of(a, "train"), rows_of(b, "train")):
        assert same_rows([{**x, "frames": None}], [{**y, "frames": None}])


# ---- the corpus ----------------------------------------------------------------------------


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_writes_a_valid_corpus(tmp_path, preset):
    meta = write_synthetic_corpus(tmp_path / "c", preset=preset, train_samples=37, eval_samples=11, seed=3, progress=False)
    corpus = Corpus(tmp_path / "c")
    assert meta["fingerprint"] == corpus.fingerprint
    assert (corpus.num_rows("train"), corpus.num_rows("eval")) == (37, 11)
    assert corpus.meta["task"] == f"synthetic-{preset}"
    assert corpus.classes == ["negative", "positive"]
    assert corpus.privileged_features == PRIVILEGED_FEATURES and 16 <= len(PRIVILEGED_FEATURES) <= 64
    assert corpus.features == FEATURES and 2 <= len(FEATURES) <= 4
    assert corpus.has_text and corpus.frames_per_video == 4 and corpus.image_size == 32
    assert corpus.meta["created_by"].startswith(f"cpfd synth --preset {preset} --seed 3")
    assert corpus.meta["synthetic"]["preset"]["name"] == preset
    ids = [r["sample_id"] for s in ("train", "eval") for r in rows_of(corpus, s)]
    assert len(set(ids)) == len(ids)
    assert ids[0] == f"syn-{preset}-s3-train-0000000"


def test_default_sizes_are_the_presets(tmp_path):
    write_synthetic_corpus(tmp_path / "c", preset="task3", progress=False)
    corpus = Corpus(tmp_path / "c")
    spec = PRESETS["task3"]
    assert (corpus.num_rows("train"), corpus.num_rows("eval")) == (spec.train_samples, spec.eval_samples)


def test_frames_decode_as_png_of_the_requested_size_and_count(tmp_path):
    corpus = write(tmp_path / "c", frames_per_video=3, image_size=24, train_samples=60, eval_samples=5)
    moving = 0
    for row in rows_of(corpus, "train"):
        assert len(row["frames"]) == 3
        images = []
        for data in row["frames"]:
            assert data[:8] == b"\x89PNG\r\n\x1a\n"
            image = Image.open(io.BytesIO(data))
            image.load()
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (24, 24)
            images.append(np.asarray(image))
        assert len(np.unique(images[0].reshape(-1, 3), axis=0)) >= 2  # an object on a background
        moving += not np.array_equal(images[0], images[-1])
    assert moving >= 50  # objects move between frames


def test_text_comes_from_the_vocabulary(tmp_path):
    from cpfd.pipeline.synth import VOCAB

    rows = rows_of(write(tmp_path / "c", train_samples=200), "train")
    assert all(3 <= len(r["title"].split()) <= 10 for r in rows)
    assert all(set(r["title"].split() + r["ocr_text"].split()) <= set(VOCAB) for r in rows)
    with_ocr = sum(bool(r["ocr_text"]) for r in rows)
    assert 0.4 * len(rows) < with_ocr < 0.8 * len(rows)  # OCR overlay on ~60% of videos


def test_privileged_features_have_missingness_and_no_inf(tmp_path):
    corpus = write(tmp_path / "c", preset="task5", train_samples=1500, eval_samples=10)
    table = pq.read_table(corpus.shard_paths("train")[0], columns=["privileged", "features"])
    privileged = np.array(table.column("privileged").to_pylist(), dtype=np.float32)
    features = np.array(table.column("features").to_pylist(), dtype=np.float32)
    assert privileged.shape == (1500, len(PRIVILEGED_FEATURES))
    assert features.shape == (1500, len(FEATURES)) and np.isfinite(features).all()
    assert not np.isinf(privileged).any()
    missing = np.isnan(privileged)
    assert 0.02 < missing.mean() < 0.5
    column = {name: privileged[:, i] for i, name in enumerate(PRIVILEGED_FEATURES)}
    # engagement rates are missing exactly for low-view videos (views_log10 = log10(1 + views))
    low_views = column["views_log10"] < math.log10(1 + MIN_VIEWS_FOR_RATES) - 1e-6
    assert 0.02 < low_views.mean() < 0.6
    for name in ("like_rate", "report_rate", "dislike_rate", "avg_watch_ratio"):
        assert np.array_equal(np.isnan(column[name]), low_views), name
    assert not np.isnan(column["views_log10"]).any()
    for name in ("legacy_content_score", "creator_strike_rate", "asr_keyword_hits"):
        assert 0.03 < np.isnan(column[name]).mean() < 0.6, name


# ---- labels --------------------------------------------------------------------------------


def drawn_labels(preset: str, n: int, seed: int = 0) -> np.ndarray:
    spec = PRESETS[preset]
    return np.concatenate([c["label"][:rows] for _, c, rows in iter_chunks(spec, "train", n, seed)])


def test_positive_rates_span_a_few_percent_to_a_majority():
    n = 20_000
    rates = {p: drawn_labels(p, n).mean() for p in PRESETS}
    for p, rate in rates.items():
        want = PRESETS[p].positive_rate
        assert abs(rate - want) < 5 * math.sqrt(want * (1 - want) / n) + 0.005, (p, rate, want)
    assert rates["task5"] < 0.05 and rates["task2"] > 0.5
    assert sorted(rates, key=rates.get) == ["task5", "task1", "task3", "task4", "task2"]


def test_written_labels_are_the_drawn_labels(tmp_path):
    corpus = write(tmp_path / "c", preset="task4", train_samples=2000, eval_samples=10)
    written = corpus.read_column("train", "label").to_numpy()
    assert np.array_equal(written, drawn_labels("task4", 2000))
    assert abs(written.mean() - PRESETS["task4"].positive_rate) < 0.05


def test_label_noise_flips_labels_and_the_bias_hits_the_clean_rate():
    spec = PRESETS["task5"]
    chunks = [c for _, c, _ in iter_chunks(spec, "train", 30_000, 0)]
    true = np.concatenate([c["true_label"] for c in chunks])
    label = np.concatenate([c["label"] for c in chunks])
    assert abs(true.mean() - clean_positive_rate(spec)) < 0.005
    missed = (true & ~label).sum() / true.sum()
    assert abs(missed - spec.flip_pos_to_neg) < 0.05
    assert np.isfinite(label_bias(spec))


# ---- errors and the command line -----------------------------------------------------------


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(CpfdError, match="unknown preset"):
        write_synthetic_corpus(tmp_path / "c", preset="task9", progress=False)
    with pytest.raises(CpfdError, match="train_samples"):
        write_synthetic_corpus(tmp_path / "c", train_samples=-1, progress=False)
    assert not (tmp_path / "c" / "corpus.json").exists()


def test_progress_bar_goes_to_stderr_and_can_be_turned_off(tmp_path, capsys):
    write_synthetic_corpus(tmp_path / "a", train_samples=5, eval_samples=5, progress=False)
    assert capsys.readouterr().err == ""
    write_synthetic_corpus(tmp_path / "b", train_samples=5, eval_samples=5, progress=True)
    captured = capsys.readouterr()
    assert "synth task1" in captured.err and captured.out == ""


def test_cli_writes_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "c"
    args = ["synth", str(out), "--preset", "task2", "--train-samples", "50", "--eval-samples", "20", "--quiet"]
    runner = CliRunner()
    first = runner.invoke(cpfd, args)
    assert first.exit_code == 0, first.output
    assert "train 50, eval 20 rows" in first.output
    corpus = Corpus(out)
    assert corpus.meta["task"] == "synthetic-task2"
    again = runner.invoke(cpfd, args)
    assert again.exit_code == 1
    assert again.output.startswith("error:") and "--overwrite" in again.output
    replaced = runner.invoke(cpfd, args + ["--overwrite", "--seed", "1"])
    assert replaced.exit_code == 0, replaced.output
    assert Corpus(out).fingerprint != corpus.fingerprint
