"""experiment/stats.py, paired statistics for the report: hand-computed intervals, parity with sklearn,
verdicts, JSON."""

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from cpfd.experiment.stats import (
    StatsError,
    average_precision_rows,
    bootstrap_counts,
    bootstrap_interval,
    compare,
    f1_rows,
    format_comparison,
    roc_auc_rows,
    seed_interval,
    verdict,
)
from cpfd.storage.errors import CpfdError


def tied_data(rows: int, seed: int, positive_rate: float = 0.3, decimals: int = 1):
    """Labels and a score that depends on them, rounded so that many rows tie."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(rows) < positive_rate).astype(int)
    scores = np.round(0.3 * labels + rng.random(rows), decimals)
    return labels, scores


def resampled(counts_row: np.ndarray) -> np.ndarray:
    """Row indices of one replicate: row i repeated counts_row[i] times."""
    return np.repeat(np.arange(len(counts_row)), counts_row)


def reference_metric(metric: str, labels, scores, threshold=None) -> float:
    """Each metric straight from its definition (sklearn for average precision); NaN on one class."""
    positive, negative = scores[labels == 1], scores[labels == 0]
    if not len(positive) or not len(negative):
        return math.nan
    if metric == "roc_auc":  # P(positive scores above negative), ties one half, over all pairs
        return float(np.mean((positive[:, None] > negative) + 0.5 * (positive[:, None] == negative)))
    if metric == "pr_auc":
        return average_precision_score(labels, scores)
    true_pos, false_pos = (positive >= threshold).sum(), (negative >= threshold).sum()
    return 2 * true_pos / (2 * true_pos + false_pos + (positive < threshold).sum())


# ----------------------------------------------------------------------------------------------
# Seed interval


def test_seed_interval_hand_computed():
    # d = 1, 2, 3: mean 2, sample std 1, t_{2, 0.975} = 4.302653 (any t table), half width t / sqrt(3).
    out = seed_interval([1.0, 2.0, 3.0])
    assert out["n"] == 3 and out["dropped"] == 0
    assert out["mean"] == pytest.approx(2.0) and out["std"] == pytest.approx(1.0)
    half = 4.302653 / math.sqrt(3)
    assert out["interval"] == pytest.approx([2 - half, 2 + half], abs=1e-6)
    assert out["interval"] == pytest.approx(list(scipy_stats.t.interval(0.95, 2, loc=2.0, scale=1 / math.sqrt(3))), abs=1e-12)


def test_seed_interval_confidence_and_nan_dropped():
    d = [0.012, np.nan, 0.004, 0.02, -0.001]
    out = seed_interval(d, confidence=0.9)
    clean = np.array([0.012, 0.004, 0.02, -0.001])
    sem = clean.std(ddof=1) / 2
    assert out["n"] == 4 and out["dropped"] == 1
    assert out["interval"] == pytest.approx(list(scipy_stats.t.interval(0.9, 3, loc=clean.mean(), scale=sem)), abs=1e-12)
    assert seed_interval(clean, 0.95)["interval"][1] > out["interval"][1]  # wider at 95%


def test_seed_interval_one_seed_and_none():
    one = seed_interval([0.01, np.nan])
    assert one == {"n": 1, "dropped": 1, "mean": 0.01, "std": None, "interval": None, "confidence": 0.95}
    assert seed_interval([np.nan])["mean"] is None
    with pytest.raises(StatsError, match="confidence"):
        seed_interval([1.0, 2.0], confidence=95)


# ----------------------------------------------------------------------------------------------
# The vectorized metrics equal sklearn's on the resampled rows


@pytest.mark.parametrize("decimals", [1, 2, None])
def test_replicate_metrics_equal_sklearn_on_resampled_rows(decimals):
    rng = np.random.default_rng(7)
    labels = (rng.random(300) < 0.35).astype(int)
    scores = 0.3 * labels + rng.random(300)
    if decimals is not None:  # ties within and across classes
        scores = np.round(scores, decimals)
    counts = rng.poisson(1.0, size=(25, 300))                     # zeros and repeats, like a bootstrap
    counts[0] = 1                                                   # the eval set itself
    roc, ap = roc_auc_rows(labels, scores, counts), average_precision_rows(labels, scores, counts)
    f1 = f1_rows(labels, scores, 0.6, counts)
    for r in range(len(counts)):
        rows = resampled(counts[r])
        assert roc[r] == pytest.approx(roc_auc_score(labels[rows], scores[rows]), abs=1e-12)
        assert ap[r] == pytest.approx(average_precision_score(labels[rows], scores[rows]), abs=1e-12)
        assert f1[r] == pytest.approx(f1_score(labels[rows], scores[rows] >= 0.6), abs=1e-12)


def test_replicate_metrics_tied_across_classes_and_all_tied():
    labels = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    scores = np.array([0.5, 0.5, 0.2, 0.9, 0.2, 0.9, 0.5, 0.1])
    ones = np.ones((1, 8), dtype=int)
    assert roc_auc_rows(labels, scores, ones)[0] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert average_precision_rows(labels, scores, ones)[0] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    flat = np.full(8, 0.3)  # one score for everything: AUC one half, AP the positive rate
    assert roc_auc_rows(labels, flat, ones)[0] == 0.5
    assert average_precision_rows(labels, flat, ones)[0] == pytest.approx(0.5)


def test_replicate_metrics_undefined_on_one_class():
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    counts = np.array([[2, 2, 0, 0], [0, 0, 1, 3], [1, 1, 1, 1]])  # negatives only, positives only, all
    for values in (roc_auc_rows(labels, scores, counts), average_precision_rows(labels, scores, counts),
                   f1_rows(labels, scores, 0.5, counts)):
        assert np.isnan(values[:2]).all() and not np.isnan(values[2])
    assert roc_auc_rows(labels, scores, counts)[2] == 0.75


def test_replicate_metrics_refuse_bad_counts():
    labels, scores = np.array([0, 1, 1]), np.array([0.2, 0.3, 0.9])
    with pytest.raises(StatsError, match="counts"):
        roc_auc_rows(labels, scores, np.ones((2, 4)))
    with pytest.raises(StatsError, match="whole numbers"):
        roc_auc_rows(labels, scores, np.full((1, 3), 0.5))
    with pytest.raises(StatsError, match="non-negative"):
        average_precision_rows(labels, scores, np.array([[1, -1, 1]]))
    with pytest.raises(StatsError, match="0/1"):
        f1_rows(np.array([0, 2, 1]), scores, 0.5, np.ones((1, 3)))


# ----------------------------------------------------------------------------------------------
# The bootstrap


def test_bootstrap_counts_are_resampled_rows():
    blocks = list(bootstrap_counts(7, 10, seed=3))
    counts = np.concatenate(blocks)
    assert counts.shape == (10, 7) and (counts.sum(axis=1) == 7).all() and (counts >= 0).all()
    assert np.array_equal(counts, np.concatenate(list(bootstrap_counts(7, 10, seed=3))))
    assert not np.array_equal(counts, np.concatenate(list(bootstrap_counts(7, 10, seed=4))))
    # Each row is drawn with probability 1/7 per draw: on average once per replicate.
    many = np.concatenate(list(bootstrap_counts(50, 4000, seed=0)))
    assert many.mean() == pytest.approx(1.0) and many.var() == pytest.approx(1 - 1 / 50, rel=0.05)


def test_bootstrap_equals_a_plain_loop_over_replicates_with_dropped_ones():
    # Few positives, so that some replicates draw none and must be dropped; three seeds; ties.
    rng = np.random.default_rng(11)
    labels = np.zeros(30, dtype=int)
    labels[[3, 17]] = 1
    a = np.round(0.2 * labels + rng.random((3, 30)), 1)
    b = np.round(0.1 * labels + rng.random((3, 30)), 1)
    thr_a, thr_b = [0.5, 0.6, 0.55], [0.5, 0.5, 0.45]
    counts = np.concatenate(list(bootstrap_counts(30, 80, seed=5)))
    for metric in ("roc_auc", "pr_auc", "f1"):
        reference = []
        for c in counts:
            rows = resampled(c)
            reference.append(np.mean([reference_metric(metric, labels[rows], a[s][rows], thr_a[s])
                                      - reference_metric(metric, labels[rows], b[s][rows], thr_b[s]) for s in range(3)]))
        reference = np.array(reference)
        kept = reference[~np.isnan(reference)]
        out = bootstrap_interval(labels, a, b, metric, thresholds_a=thr_a, thresholds_b=thr_b, replicates=80, seed=5)
        assert out["dropped"] == int(np.isnan(reference).sum()) > 0
        assert out["replicates"] == len(kept) == 80 - out["dropped"]
        assert out["interval"] == pytest.approx(list(np.percentile(kept, [2.5, 97.5])), abs=1e-12)
        observed = np.mean([reference_metric(metric, labels, a[s], thr_a[s]) - reference_metric(metric, labels, b[s], thr_b[s])
                            for s in range(3)])
        assert out["observed"] == pytest.approx(observed, abs=1e-12)


def test_bootstrap_of_a_model_against_itself_is_zero():
    labels, scores = tied_data(400, seed=1)
    seeds = np.stack([scores, np.roll(scores, 1), np.roll(scores, 2)])
    for metric in ("roc_auc", "pr_auc", "f1"):
        out = bootstrap_interval(labels, seeds, seeds, metric, thresholds_a=0.6, thresholds_b=0.6, replicates=200)
        assert out["observed"] == 0.0 and out["interval"] == [0.0, 0.0] and out["replicates"] == 200
    result = compare(labels, seeds, seeds, thresholds_a=0.6, thresholds_b=0.6, replicates=100)
    assert all(r["verdict"] == "inconclusive" for r in result["metrics"].values())
    assert result["metrics"]["roc_auc"]["seeds"]["interval"] == [0.0, 0.0]


def test_bootstrap_is_deterministic_for_a_seed():
    labels, a = tied_data(300, seed=2)
    _, b = tied_data(300, seed=3)
    kwargs = dict(thresholds_a=0.5, thresholds_b=0.5, replicates=150)
    first = bootstrap_interval(labels, a, b, "pr_auc", seed=9, **kwargs)
    assert bootstrap_interval(labels, a, b, "pr_auc", seed=9, **kwargs) == first
    assert bootstrap_interval(labels, a, b, "pr_auc", seed=10, **kwargs)["interval"] != first["interval"]
    assert compare(labels, a, b, **kwargs, seed=9) == compare(labels, a, b, **kwargs, seed=9)


def test_one_seed_1d_equals_2d_and_repeated_seeds_change_nothing():
    labels, a = tied_data(250, seed=4)
    _, b = tied_data(250, seed=5)
    one = bootstrap_interval(labels, a, b, "roc_auc", replicates=100)
    assert bootstrap_interval(labels, a[None], b[None], "roc_auc", replicates=100) == one
    # Three identical seeds, resampled with the same rows: the mean difference is the one-seed one.
    tripled = bootstrap_interval(labels, np.stack([a] * 3), np.stack([b] * 3), "roc_auc", replicates=100)
    assert tripled["observed"] == pytest.approx(one["observed"], abs=1e-12)
    assert tripled["interval"] == pytest.approx(one["interval"], abs=1e-12)


def test_seeds_are_resampled_with_the_same_rows():
    # Seed 1 of A is seed 0 of B and the other way round: per replicate the two differences cancel
    # exactly when (and only when) both seeds see the same rows.
    labels, s0 = tied_data(200, seed=6)
    _, s1 = tied_data(200, seed=7)
    out = bootstrap_interval(labels, np.stack([s0, s1]), np.stack([s1, s0]), "roc_auc", replicates=100)
    assert out["observed"] == pytest.approx(0.0, abs=1e-15)
    assert out["interval"] == pytest.approx([0.0, 0.0], abs=1e-15)


# ----------------------------------------------------------------------------------------------
# Verdicts


def test_verdict_rule():
    def seeds(low, high):
        return {"interval": [low, high]}

    def rows(low, high):
        return {"interval": [low, high]}

    assert verdict(seeds(0.001, 0.02), rows(0.003, 0.01)) == "better"
    assert verdict(seeds(-0.02, -0.001), rows(-0.01, -0.003)) == "worse"
    assert verdict(seeds(-0.004, 0.028), rows(0.003, 0.021)) == "inconclusive"   # seeds straddle 0
    assert verdict(seeds(0.001, 0.02), rows(-0.001, 0.01)) == "inconclusive"     # rows straddle 0
    assert verdict(seeds(0.001, 0.02), rows(-0.03, -0.01)) == "inconclusive"     # they disagree
    assert verdict(seeds(0.0, 0.02), rows(0.003, 0.01)) == "inconclusive"        # touching 0 is not excluding it
    assert verdict({"interval": None}, rows(0.003, 0.01)) == "inconclusive (rows favour A, one seed)"
    assert verdict({"interval": None}, rows(-0.01, -0.003)) == "inconclusive (rows favour B, one seed)"
    assert verdict({"interval": None}, rows(-0.01, 0.003)) == "inconclusive"
    assert verdict(seeds(0.001, 0.02), {"interval": None}) == "inconclusive"


def test_clearly_better_model_is_better_and_swapped_is_worse():
    rng = np.random.default_rng(8)
    labels = (rng.random(500) < 0.3).astype(int)
    good = labels + 0.3 * rng.standard_normal((3, 500))            # scores = labels + small noise
    noise = rng.random((3, 500))                                    # pure noise
    result = compare(labels, good, noise, thresholds_a=0.5, thresholds_b=0.5, replicates=200)
    assert {m: r["verdict"] for m, r in result["metrics"].items()} == {"roc_auc": "better", "pr_auc": "better", "f1": "better"}
    swapped = compare(labels, noise, good, thresholds_a=0.5, thresholds_b=0.5, replicates=200)
    assert all(r["verdict"] == "worse" for r in swapped["metrics"].values())
    single = compare(labels, good[0], noise[0], thresholds_a=0.5, thresholds_b=0.5, replicates=200)
    assert all(r["verdict"] == "inconclusive (rows favour A, one seed)" for r in single["metrics"].values())


def test_equal_models_are_mostly_inconclusive():
    verdicts = []
    for trial in range(15):
        rng = np.random.default_rng(100 + trial)
        labels = (rng.random(300) < 0.3).astype(int)
        a = labels + rng.standard_normal((3, 300))                  # the same quality, independent noise
        b = labels + rng.standard_normal((3, 300))
        result = compare(labels, a, b, thresholds_a=0.5, thresholds_b=0.5, replicates=200, seed=trial)
        verdicts += [r["verdict"] for r in result["metrics"].values()]
    assert verdicts.count("inconclusive") >= 0.85 * len(verdicts)


# ----------------------------------------------------------------------------------------------
# compare, JSON and the report line


def test_compare_values_and_json():
    labels, a0 = tied_data(300, seed=9, decimals=2)
    rng = np.random.default_rng(9)
    a = np.stack([a0, np.clip(a0 + 0.05 * rng.standard_normal(300), 0, 1)])
    b = np.stack([rng.random(300), rng.random(300)])
    result = compare(labels, a, b, thresholds_a=[0.55, 0.6], thresholds_b=0.5, replicates=100)
    text = json.dumps(result, allow_nan=False)                      # plain floats, lists, None
    assert json.loads(text) == result
    assert result["seeds"] == 2 and result["rows"] == 300
    roc = result["metrics"]["roc_auc"]
    assert roc["a"] == pytest.approx([roc_auc_score(labels, a[s]) for s in range(2)], abs=1e-12)
    assert roc["differences"] == pytest.approx([x - y for x, y in zip(roc["a"], roc["b"])])
    assert roc["seeds"]["mean"] == pytest.approx(roc["rows"]["observed"], abs=1e-12)
    assert roc["rows"] == bootstrap_interval(labels, a, b, "roc_auc", replicates=100)
    f1 = result["metrics"]["f1"]
    assert f1["a"] == pytest.approx([f1_score(labels, a[0] >= 0.55), f1_score(labels, a[1] >= 0.6)], abs=1e-12)
    assert f1["rows"] == bootstrap_interval(labels, a, b, "f1", thresholds_a=[0.55, 0.6], thresholds_b=[0.5, 0.5],
                                            replicates=100)


def test_compare_on_one_class_is_none_not_nan():
    labels = np.zeros(20, dtype=int)
    rng = np.random.default_rng(0)
    result = compare(labels, rng.random((3, 20)), rng.random((3, 20)), thresholds_a=0.5, thresholds_b=0.5, replicates=20)
    json.dumps(result, allow_nan=False)
    roc = result["metrics"]["roc_auc"]
    assert roc["a"] == [None] * 3 and roc["seeds"]["mean"] is None and roc["seeds"]["dropped"] == 3
    assert roc["rows"]["observed"] is None and roc["rows"]["interval"] is None and roc["rows"]["dropped"] == 20
    assert roc["verdict"] == "inconclusive"
    assert "ROC AUC n/a" in format_comparison("A vs B", result)


def test_format_comparison_reads_as_one_line():
    rng = np.random.default_rng(8)
    labels = (rng.random(400) < 0.3).astype(int)
    good, noise = labels + 0.3 * rng.standard_normal((3, 400)), rng.random((3, 400))
    line = format_comparison("CPFD vs PFD", compare(labels, good, noise, thresholds_a=0.5, thresholds_b=0.5, replicates=100))
    assert "\n" not in line
    assert line.startswith("CPFD vs PFD (A - B, 3 seeds, 400 rows, 95% intervals): ROC AUC +0.")
    assert "; PR AUC +0." in line and "; F1 +0." in line and line.count("] better") == 3
    assert line.count("[seeds +0.") == 3 and line.count("; rows +0.") == 3
    single = format_comparison("CPFD vs PFD", compare(labels, good[0], noise[0], thresholds_a=0.5, thresholds_b=0.5,
                                                      metrics=("roc_auc",), replicates=100))
    assert "1 seed," in single and "[seeds n/a; rows +0." in single and single.endswith("inconclusive (rows favour A, one seed)")


def test_refusals_name_the_input():
    labels, scores = tied_data(50, seed=0)
    with pytest.raises(StatsError, match="metric"):
        bootstrap_interval(labels, scores, scores, "accuracy")
    with pytest.raises(StatsError, match="thresholds_a"):
        bootstrap_interval(labels, scores, scores, "f1")
    with pytest.raises(StatsError, match="thresholds_b"):
        compare(labels, np.stack([scores] * 3), np.stack([scores] * 3), thresholds_a=0.5, thresholds_b=[0.5, 0.5])
    with pytest.raises(StatsError, match="same shape"):
        compare(labels, np.stack([scores] * 3), np.stack([scores] * 2), thresholds_a=0.5, thresholds_b=0.5)
    with pytest.raises(StatsError, match="scores"):
        compare(labels, scores[:-1], scores[:-1], thresholds_a=0.5, thresholds_b=0.5)
    with pytest.raises(StatsError, match="finite"):
        compare(labels, np.full(50, np.nan), scores, thresholds_a=0.5, thresholds_b=0.5)
    with pytest.raises(StatsError, match="0/1"):
        compare(labels * 2, scores, scores, thresholds_a=0.5, thresholds_b=0.5)
    with pytest.raises(CpfdError, match="replicates"):
        compare(labels, scores, scores, thresholds_a=0.5, thresholds_b=0.5, replicates=0)
    # Without F1 no threshold is needed.
    assert set(compare(labels, scores, scores, thresholds_a=None, thresholds_b=None, metrics=("roc_auc",),
                       replicates=10)["metrics"]) == {"roc_auc"}
