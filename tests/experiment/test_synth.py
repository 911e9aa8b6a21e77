"""experiment/synth.py, the synthetic corpus generator (`cpfd synth`): determinism, validity, frames, privileged
features and their missingness, the presets' positive rates, the stories and the privileged
strength, the ground-truth file, and the command line."""

import hashlib
import io
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

from cpfd.cli import cpfd
from cpfd.experiment.synth import (
    CONSEQUENCE_LATENTS,
    FEATURES,
    MIN_VIEWS_FOR_RATES,
    PRESETS,
    PRIVILEGED_FEATURES,
    PRIVILEGED_LATENTS,
    STORIES,
    TRUTH_FILE,
    VISIBLE_LATENTS,
    W_VISIBLE,
    _dense_matrix,
    clean_positive_rate,
    hidden_weight,
    iter_chunks,
    label_bias,
    oracle_aucs,
    read_truth,
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
    from cpfd.experiment.synth import VOCAB

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


# ---- privileged strength and story ---------------------------------------------------------


def drawn(preset: str, n: int, **kw) -> dict:
    """The train split's chunk arrays (first n rows) for a story / strength."""
    chunks = [(c, rows) for _, c, rows in iter_chunks(PRESETS[preset], "train", n, 0, **kw)]
    keys = [k for k, v in chunks[0][0].items() if isinstance(v, np.ndarray)]
    return {k: np.concatenate([c[k][:rows] for c, rows in chunks]) for k in keys}


def p_label_given_visible(preset: str, visible: np.ndarray, strength: float, story: str) -> np.ndarray:
    """P(stored label = 1 | visible latents), exactly: the non-visible part of the logit is
    hidden_weight * N(0, 1), integrated out by Gauss-Hermite quadrature, then the flips."""
    spec = PRESETS[preset]
    nodes, weights = np.polynomial.hermite_e.hermegauss(64)
    visible_logit = label_bias(spec, strength, story) + spec.visible_weight * (visible @ W_VISIBLE)
    logit = visible_logit[:, None] + hidden_weight(spec, strength, story) * nodes[None, :]
    p_true = (1.0 / (1.0 + np.exp(-logit))) @ (weights / weights.sum())
    return spec.flip_neg_to_pos + (1.0 - spec.flip_pos_to_neg - spec.flip_neg_to_pos) * p_true


def stories_and_strengths():
    return [("latent", 1.0), ("latent", 0.0), ("latent", 4.0), ("consequence", 0.0), ("consequence", 2.0)]


def test_stories_are_exported_for_the_cli():
    assert STORIES == ("latent", "consequence")


@pytest.mark.parametrize("story", STORIES)
def test_strength_0_leaves_the_privileged_features_no_label_information_beyond_visible(story):
    # The residual r = label - P(label | visible latents) has mean 0 given the visible latents; if
    # the privileged features carry nothing more, r is uncorrelated with every function of them.
    # z = corr(r, column) sqrt(n) is then ~N(0, 1) for each of the ~45 columns (values, signed
    # log1p, and missing indicators): |z| < 4.5 for all of them. At strength 1 some |z| > 10.
    n = 10_240
    for strength, low in ((0.0, True), (1.0, False)):
        d = drawn("task1", n, privileged_strength=strength, story=story)
        r = d["label"] - p_label_given_visible("task1", d["visible"], strength, story)
        x = _dense_matrix(d["privileged"], np.zeros((n, 0)))
        x = x[:, x.std(axis=0) > 0]  # indicators of columns that never go missing are constant
        x = (x - x.mean(axis=0)) / x.std(axis=0)
        z = np.abs(x.T @ (r - r.mean())) / (r.std() * math.sqrt(n))
        assert (z.max() < 4.5) if low else (z.max() > 10), (story, strength, z.max())


@pytest.mark.parametrize("story", STORIES)
def test_the_teacher_oracle_gains_with_strength(story):
    # Logistic regressions on 4096 rows (oracle_aucs): the teacher's ceiling (visible latents +
    # dense features) over the student's (visible latents). At strength 0 the gain is 0 within
    # 0.01 (what fitting ~50 useless columns on 4096 rows costs or wins); it grows with strength.
    views = ["visible_latents", "visible_latents+dense"]
    rocs = {
        s: oracle_aucs("task1", 4096, 4096, 0, privileged_strength=s, story=story, views=views)
        for s in (0.0, 1.0, 4.0)
    }
    student = {s: r["visible_latents"]["roc_auc"] for s, r in rocs.items()}
    teacher = {s: r["visible_latents+dense"]["roc_auc"] for s, r in rocs.items()}
    gain = {s: teacher[s] - student[s] for s in rocs}
    assert abs(gain[0.0]) < 0.01, gain
    assert gain[1.0] > gain[0.0] + 0.03 and gain[4.0] > gain[1.0] + 0.02, gain
    assert teacher[4.0] > teacher[0.0], teacher
    if story == "consequence":  # the label does not move with the strength, so neither does the student
        assert teacher[4.0] > teacher[1.0] > teacher[0.0] + 0.05, teacher
        assert student[0.0] == student[1.0] == student[4.0]


@pytest.mark.parametrize("preset", ["task1", "task2"])
def test_every_story_and_strength_keeps_the_positive_rate(preset):
    n, want = 10_240, PRESETS[preset].positive_rate
    for story, strength in stories_and_strengths():
        d = drawn(preset, n, privileged_strength=strength, story=story)
        rate = d["label"].mean()
        assert abs(rate - want) < 5 * math.sqrt(want * (1 - want) / n) + 0.005, (story, strength, rate)
        assert abs(d["true_label"].mean() - clean_positive_rate(PRESETS[preset])) < 0.015, (story, strength)


def test_story_and_strength_change_only_what_they_describe():
    runs = {key: drawn("task1", 512, privileged_strength=key[1], story=key[0]) for key in stories_and_strengths()}
    base = runs[("latent", 1.0)]
    for key, d in runs.items():  # the same videos everywhere: what the student sees does not move
        for name in ("visible", "features", "key_shape", "key_color", "key_velocity", "title_ids", "ocr_ids"):
            assert np.array_equal(d[name], base[name]), (key, name)
    # latent story: the strength moves the labels only
    assert np.array_equal(runs[("latent", 0.0)]["privileged"], base["privileged"], equal_nan=True)
    assert not np.array_equal(runs[("latent", 0.0)]["label"], base["label"])
    # consequence story: the labels are the latent story's at strength 1; the strength moves the
    # privileged features only
    for s in (0.0, 2.0):
        assert np.array_equal(runs[("consequence", s)]["label"], base["label"])
        assert np.array_equal(runs[("consequence", s)]["true_label"], base["true_label"])
    privileged = [runs[("consequence", s)]["privileged"] for s in (0.0, 2.0)]
    assert not np.array_equal(*privileged, equal_nan=True)


def test_consequence_reports_react_to_the_true_label_not_the_stored_one():
    # Same videos at strength 0 and 1 (the reaction is the only difference): a true positive's
    # report rate grows by ~exp(0.62 * 1.5) = 2.5x, a rater's flip notwithstanding; a true
    # negative's stays (only the binomial count is redrawn).
    column = PRIVILEGED_FEATURES.index("report_rate")
    d0, d1 = (drawn("task5", 10_240, privileged_strength=s, story="consequence") for s in (0.0, 1.0))
    r0, r1 = d0["privileged"][:, column].astype(np.float64), d1["privileged"][:, column].astype(np.float64)
    seen = ~np.isnan(r1)
    true, label = d1["true_label"], d1["label"]
    missed = true & ~label & seen  # true positives stored as negatives
    negative = ~true & ~label & seen
    assert missed.sum() > 30
    assert r1[missed].mean() / r0[missed].mean() > 1.8
    assert 0.95 < r1[negative].mean() / r0[negative].mean() < 1.05
    # and the missingness pattern is today's: engagement NaN exactly for low-view videos
    views_log10 = d1["privileged"][:, PRIVILEGED_FEATURES.index("views_log10")]
    low_views = views_log10 < math.log10(1 + MIN_VIEWS_FOR_RATES) - 1e-6
    assert np.array_equal(~seen, low_views) and 0.02 < low_views.mean() < 0.6


# ---- the truth file ------------------------------------------------------------------------


@pytest.mark.parametrize("story", STORIES)
def test_the_truth_file_matches_the_corpus_rows(tmp_path, story, monkeypatch):
    import cpfd.experiment.synth as synth

    monkeypatch.setattr(synth, "TRUTH_ROW_GROUP_ROWS", 300)  # several row groups: written incrementally
    corpus = write(tmp_path / "c", preset="task5", train_samples=1500, eval_samples=300, story=story,
                   privileged_strength=2.0)
    synthetic = corpus.meta["synthetic"]
    assert (synthetic["story"], synthetic["privileged_strength"]) == (story, 2.0)
    assert synthetic["truth"]["file"] == TRUTH_FILE and synthetic["truth"]["rows"] == 1800
    assert "--story" in corpus.meta["created_by"]

    truth = read_truth(tmp_path / "c")
    latents = VISIBLE_LATENTS + (PRIVILEGED_LATENTS if story == "latent" else CONSEQUENCE_LATENTS)
    assert truth.column_names == ["sample_id", "split", "true_label", "flipped"] + [f"latent_{k}" for k in latents]
    assert [str(t) for t in truth.schema.types[:4]] == ["string", "string", "int32", "bool"]
    assert all(str(t) == "float" for t in truth.schema.types[4:])
    metadata = pq.ParquetFile(tmp_path / "c" / TRUTH_FILE).metadata
    group_rows = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert len(group_rows) >= 3 and max(group_rows) < 300 + 512

    ids = [r for s in ("train", "eval") for r in corpus.read_column(s, "sample_id").to_pylist()]
    labels = np.concatenate([corpus.read_column(s, "label").to_numpy() for s in ("train", "eval")])
    assert truth.column("sample_id").to_pylist() == ids
    assert truth.column("split").to_pylist() == ["train"] * 1500 + ["eval"] * 300
    true_label, flipped = truth.column("true_label").to_numpy(), truth.column("flipped").to_numpy()
    assert np.array_equal(flipped, true_label != labels)
    assert 0 < flipped.sum() < 0.1 * len(flipped)
    d = drawn("task5", 1500, privileged_strength=2.0, story=story)
    assert np.array_equal(true_label[:1500], d["true_label"])
    assert np.array_equal(truth.column("latent_object").to_numpy()[:1500], d["visible"][:, 0].astype(np.float32))


def test_the_truth_file_is_committed_before_corpus_json_and_never_left_half_written(tmp_path, monkeypatch):
    import cpfd.experiment.synth as synth

    seen = []
    close = synth.CorpusWriter.close

    def close_and_look(self):
        seen.append((self.out / TRUTH_FILE).exists())
        return close(self)

    monkeypatch.setattr(synth.CorpusWriter, "close", close_and_look)
    write(tmp_path / "ok")
    assert seen == [True]
    assert sorted(p.name for p in (tmp_path / "ok").iterdir() if p.is_file()) == ["corpus.json", TRUTH_FILE]

    def fail(*args):
        raise RuntimeError("disk full")

    before = {p: p.read_bytes() for p in (tmp_path / "ok").rglob("*") if p.is_file()}
    monkeypatch.setattr(synth, "render_row", fail)
    with pytest.raises(RuntimeError):
        write_synthetic_corpus(tmp_path / "ok", train_samples=10, eval_samples=5, progress=False, overwrite=True)
    # --overwrite writes beside the old corpus: a failure leaves it as it was, and nothing else
    assert {p: p.read_bytes() for p in (tmp_path / "ok").rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok"]
    with pytest.raises(RuntimeError):
        write_synthetic_corpus(tmp_path / "new", train_samples=10, eval_samples=5, progress=False)
    assert not (tmp_path / "new").exists()  # a failed write into a new folder leaves no folder


def test_read_truth_refuses_a_stale_file_and_is_none_without_one(tmp_path):
    import json

    write(tmp_path / "c")
    truth_path, meta_path = tmp_path / "c" / TRUTH_FILE, tmp_path / "c" / "corpus.json"
    table = read_truth(tmp_path / "c")
    pq.write_table(table.slice(1), truth_path)  # another write's file
    with pytest.raises(CpfdError, match="sha256"):
        read_truth(tmp_path / "c")
    truth_path.unlink()
    with pytest.raises(CpfdError, match="missing"):
        read_truth(tmp_path / "c")
    meta = json.loads(meta_path.read_text())
    del meta["synthetic"]  # as an imported corpus's corpus.json
    meta_path.write_text(json.dumps(meta))
    assert read_truth(tmp_path / "c") is None


def test_other_stories_and_strengths_have_their_own_ids_and_fingerprint(tmp_path):
    variants = {("latent", 1.0): "syn-task1-s0", ("latent", 0.0): "syn-task1-latent-S0.0-s0",
                ("consequence", 1.0): "syn-task1-consequence-S1.0-s0"}
    corpora = {
        v: write(tmp_path / f"{v[0]}{v[1]}", train_samples=20, eval_samples=5, story=v[0], privileged_strength=v[1])
        for v in variants
    }
    assert len({c.fingerprint for c in corpora.values()}) == 3  # a teacher dump of one is refused on another
    for v, corpus in corpora.items():
        assert corpus.read_column("train", "sample_id").to_pylist()[3] == f"{variants[v]}-train-0000003"
    minus_0 = write(tmp_path / "minus0", train_samples=20, eval_samples=5, privileged_strength=-0.0)
    assert minus_0.fingerprint == corpora[("latent", 0.0)].fingerprint


def test_defaults_record_the_latent_story_at_strength_1(tmp_path):
    synthetic = write(tmp_path / "c").meta["synthetic"]
    assert (synthetic["story"], synthetic["privileged_strength"]) == ("latent", 1.0)
    assert synthetic["label_bias"] == label_bias(PRESETS["task1"])


# ---- errors and the command line -----------------------------------------------------------


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(CpfdError, match="unknown preset"):
        write_synthetic_corpus(tmp_path / "c", preset="task9", progress=False)
    with pytest.raises(CpfdError, match="train_samples"):
        write_synthetic_corpus(tmp_path / "c", train_samples=-1, progress=False)
    for bad in (-0.5, float("nan"), float("inf"), "strong", None):
        with pytest.raises(CpfdError, match="^--privileged-strength must be"):
            write_synthetic_corpus(tmp_path / "c", privileged_strength=bad, progress=False)
    with pytest.raises(CpfdError, match="^--story must be one of latent, consequence, got 'causal'$"):
        write_synthetic_corpus(tmp_path / "c", story="causal", progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(CpfdError, match="--story"):
        next(iter_chunks(PRESETS["task1"], "train", 10, 0, story="Latent"))
    with pytest.raises(CpfdError, match="--privileged-strength"):
        oracle_aucs("task1", 100, 100, privileged_strength=-1)


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


def test_label_noise_flips_at_the_rate_given_and_keeps_the_true_labels(tmp_path):
    """--label-noise R: both ways at rate R (the truth file's `flipped`), the same true labels and
    videos as the preset's corpus (only the stored labels move), other ids."""
    base, noisy = tmp_path / "base", tmp_path / "noisy"
    write_synthetic_corpus(base, preset="task1", train_samples=3000, eval_samples=10, progress=False)
    write_synthetic_corpus(noisy, preset="task1", train_samples=3000, eval_samples=10, progress=False, label_noise=0.2)
    a, b = (read_truth(d).to_pandas() for d in (base, noisy))
    assert (a["true_label"].to_numpy() == b["true_label"].to_numpy()).all()
    for rows in (b, b[b["true_label"] == 0], b[b["true_label"] == 1]):  # all, and each way
        rate, se = rows["flipped"].mean(), math.sqrt(0.2 * 0.8 / len(rows))
        assert abs(rate - 0.2) < 4 * se, (rate, len(rows))  # within 4 binomial standard errors
    assert Corpus(noisy).fingerprint != Corpus(base).fingerprint
    assert Corpus(noisy).meta["synthetic"]["label_noise"] == 0.2 and "--label-noise 0.2" in Corpus(noisy).meta["created_by"]
    with pytest.raises(CpfdError, match="--label-noise must be a rate in"):
        write_synthetic_corpus(tmp_path / "x", preset="task1", train_samples=10, eval_samples=10, label_noise=0.6,
                               progress=False)


def test_privileged_missing_blanks_that_share_of_videos_and_nothing_else(tmp_path):
    base, fresh = tmp_path / "base", tmp_path / "fresh"
    write_synthetic_corpus(base, preset="task2", train_samples=1200, eval_samples=400, progress=False)
    write_synthetic_corpus(fresh, preset="task2", train_samples=1200, eval_samples=400, progress=False,
                           privileged_missing=0.3)
    truth = read_truth(fresh).to_pandas()
    for split in ("train", "eval"):
        priv_a = np.array(Corpus(base).read_column(split, "privileged").to_pylist(), dtype=float)
        priv_b = np.array(Corpus(fresh).read_column(split, "privileged").to_pylist(), dtype=float)
        blank = np.isnan(priv_b).all(axis=1)
        assert abs(blank.mean() - 0.3) < 0.05
        assert (blank == truth.loc[truth["split"] == split, "privileged_missing"].to_numpy()).all()
        assert np.array_equal(priv_a[~blank], priv_b[~blank], equal_nan=True)  # the rest untouched
        labels = [Corpus(d).read_column(split, "label").to_pylist() for d in (base, fresh)]
        assert labels[0] == labels[1]  # the same labels and videos: only the features are blanked
    assert "privileged_missing" not in read_truth(base).column_names  # the default corpus is as before
