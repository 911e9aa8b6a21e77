"""Paired statistics for the experiment report: is model A better than model B, or did it just look so?

Every model (X-VLM baseline, PFD, CPFD, ...) is trained once per seed and scored on the same eval
rows, so a comparison of A with B is paired twice: by seed (A and B trained with seed s) and by row
(both scored the same videos). Two things could make a difference appear by chance, and each gets
its own 95% interval:

- training randomness: `seed_interval` takes the per-seed differences d_s = metric(A_s) - metric(B_s)
  and gives a Student-t interval for their mean. It says nothing with one seed.
- which eval rows happened to be drawn: `bootstrap_interval` resamples the eval rows with
  replacement (the same rows for A and B and for every seed of a replicate) and gives the
  percentile interval of mean_s d_s over the replicates. The trained models are held fixed.

`verdict` calls a difference only when it survives both: "better" when both intervals lie above 0,
"worse" when both lie below 0, "inconclusive" otherwise (an interval touching 0 does not exclude it).
With one seed there is no seed interval, so nothing is called: a rows interval that excludes 0 is
"inconclusive (rows favour A, one seed)" / "inconclusive (rows favour B, one seed)".

`compare` runs all of this for each metric (ROC AUC, PR AUC = average precision, F1 of the positive
class at a threshold per model and seed) and returns a JSON-able dict; `format_comparison` turns it
into one line of the report:

    result = compare(labels, cpfd_probs, pfd_probs, thresholds_a=[0.41, 0.44, 0.39], thresholds_b=[0.5, 0.47, 0.52])
    print(format_comparison("CPFD vs PFD", result))
    # CPFD vs PFD (A - B, 3 seeds, 2000 rows, 95% intervals): ROC AUC +0.0120 [seeds -0.0040, +0.0280; ...

Shapes: `labels` (N,) of 0/1; scores (N,) for one seed or (S, N) for S seeds, row i of every seed
being the same eval row. The bootstrap does not loop over replicates: a replicate is a row of a
count matrix (R, N) (how often each eval row was drawn), and ROC AUC, average precision and F1 are
computed for all replicates at once from those counts (`roc_auc_rows`, `average_precision_rows`,
`f1_rows`). Every metric is undefined on a sample holding one class only; such replicates are
dropped and counted, and per-seed values that are undefined are NaN in arrays and None in JSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from scipy import stats as scipy_stats

from cpfd.storage.errors import CpfdError

METRICS = ("roc_auc", "pr_auc", "f1")
METRIC_NAMES = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "f1": "F1"}

# Numbers in one (replicates, rows) block of counts: 1M int32 = 4 MB, and a few such temporaries live
# at once. Larger blocks are no faster (memory bound) and would cost hundreds of MB at 20k rows.
BLOCK_ELEMENTS = 1_000_000


class StatsError(CpfdError, ValueError):
    """Bad input to a comparison (shapes, labels, thresholds, metric name); the message names it."""


# ----------------------------------------------------------------------------------------------
# Metrics of many bootstrap replicates at once, from row counts


def _check_counts(labels: np.ndarray, counts) -> np.ndarray:
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] != len(labels):
        raise StatsError(f"counts: expected shape (replicates, {len(labels)}), got {counts.shape}")
    if counts.dtype.kind not in "iu":
        if not np.array_equal(counts, np.round(counts)):
            raise StatsError("counts: expected whole numbers (how often each row was drawn)")
        counts = counts.astype(np.int64)
    if (counts < 0).any():
        raise StatsError("counts: expected non-negative numbers, got a negative one")
    return counts


def _as_rows(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.shape != labels.shape:
        raise StatsError(f"labels and scores: expected two 1-D arrays of one length, "
                         f"got {labels.shape} and {scores.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise StatsError("labels: expected binary 0/1 labels")
    return labels, scores


def _rank_positions(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, ...]:
    """Where each positive row stands among the scores, ties included; computed once per model and seed.

    pos_rows (P,), neg_rows (M,): row indices of each class, ascending score. For the k-th positive
    in that order: neg_below[k] / neg_upto[k] = number of negatives scoring < / <= it, and
    pos_below[k] = number of positives scoring < it (ties with it do not count).
    """
    pos_rows, neg_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    pos_rows = pos_rows[np.argsort(scores[pos_rows], kind="stable")]
    neg_rows = neg_rows[np.argsort(scores[neg_rows], kind="stable")]
    pos_scores, neg_scores = scores[pos_rows], scores[neg_rows]
    neg_below = np.searchsorted(neg_scores, pos_scores, side="left")
    neg_upto = np.searchsorted(neg_scores, pos_scores, side="right")
    pos_below = np.searchsorted(pos_scores, pos_scores, side="left")
    return pos_rows, neg_rows, neg_below, neg_upto, pos_below


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """(R, K) -> (R, K + 1): column k is the sum of the first k columns (column 0 is 0)."""
    out = np.zeros((weights.shape[0], weights.shape[1] + 1), dtype=weights.dtype)
    np.cumsum(weights, axis=1, out=out[:, 1:])  # integer cumsum: several times faster than float
    return out


def _ranked_metrics(ranks: tuple[np.ndarray, ...], counts: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """ROC AUC and/or average precision of each replicate, (R,) each, from `_rank_positions`.

    Both need, for every positive row, the count-weighted negatives scoring below it: one cumulative
    sum over the negatives, read at the positives' positions. Only positive rows carry terms of
    either sum, so nothing of size (R, N) is built beyond the gathers of the counts. Counts stay
    integers up to the last step, so the sums are exact. Formulas: `roc_auc_rows`,
    `average_precision_rows`.
    """
    pos_rows, neg_rows, neg_below, neg_upto, pos_below = ranks
    w_pos = np.take(counts, pos_rows, axis=1)                     # (R, P) positives, ascending score
    cum_neg = _cumulative(np.take(counts, neg_rows, axis=1))      # (R, M + 1)
    total_pos, total_neg = w_pos.sum(axis=1, dtype=np.int64), cum_neg[:, -1].astype(np.int64)  # (R,)
    defined = (total_pos > 0) & (total_neg > 0)
    neg_lower = cum_neg[:, neg_below]                             # (R, P) negatives scoring below each positive
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if "roc_auc" in metrics:
            # 2 * sum_i w_i * (negatives below i + ties / 2), in integers.
            twice = 2 * np.einsum("rp,rp->r", w_pos, neg_lower, dtype=np.int64)
            if (neg_upto != neg_below).any():
                twice += np.einsum("rp,rp->r", w_pos, cum_neg[:, neg_upto] - neg_lower, dtype=np.int64)
            out["roc_auc"] = np.where(defined, twice / (2.0 * total_pos * total_neg), np.nan)
        if "pr_auc" in metrics:
            cum_pos = _cumulative(w_pos)                          # (R, P + 1)
            no_ties = np.array_equal(pos_below, np.arange(len(pos_rows)))
            pos_lower = cum_pos[:, :-1] if no_ties else cum_pos[:, pos_below]
            # Called positive at a positive's score: every row scoring >= it (its ties included).
            true_pos = total_pos[:, None] - pos_lower             # (R, P)
            called = true_pos + (total_neg[:, None] - neg_lower)  # TP + FP, (R, P)
            precision = np.divide(true_pos, called, out=np.zeros(called.shape), where=called > 0)
            out["pr_auc"] = np.where(defined, np.einsum("rp,rp->r", w_pos, precision) / total_pos, np.nan)
    return out


def _f1_masks(labels: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, ...]:
    """Rows that are true positives, false positives, positives at `score >= threshold`: 3 x (N,) int32."""
    called, positive = scores >= threshold, labels == 1
    return tuple(m.astype(np.int32) for m in (positive & called, ~positive & called, positive))


def _f1(masks: tuple[np.ndarray, ...], counts: np.ndarray) -> np.ndarray:
    # einsum, not `counts @ mask`: a multithreaded BLAS matvec is many times slower on a busy machine.
    # In the counts' own integer type: each sum is at most a replicate's row total.
    true_pos, false_pos, total_pos = (np.einsum("rn,n->r", counts, m.astype(counts.dtype)).astype(np.int64)
                                      for m in masks)  # (R,) each
    total_neg = counts.sum(axis=1, dtype=np.int64) - total_pos
    defined = (total_pos > 0) & (total_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined, 2 * true_pos / (true_pos + false_pos + total_pos), np.nan)  # 2TP + FP + FN


def roc_auc_rows(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """ROC AUC of each replicate, (R,), by the Mann-Whitney formula with ties counted as one half.

    AUC_r = sum_g pos[r, g] * (negatives below g + neg[r, g] / 2) / (P_r * N_r), where g runs over
    the distinct scores, pos/neg are the weights of positive/negative rows with that score (row i
    weighted by counts[r, i], how often the replicate drew it), and P_r, N_r the class totals.
    This equals sklearn's `roc_auc_score` on the resampled rows; NaN where P_r or N_r is 0.
    labels (N,) of 0/1, scores (N,), counts (R, N) whole numbers >= 0; a row of ones is the eval set itself.
    """
    labels, scores = _as_rows(labels, scores)
    return _ranked_metrics(_rank_positions(labels, scores), _check_counts(labels, counts), ("roc_auc",))["roc_auc"]


def average_precision_rows(labels: np.ndarray, scores: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Average precision (PR AUC) of each replicate, (R,), as sklearn's `average_precision_score`.

    AP = sum_k (recall_k - recall_{k-1}) * precision_k over the distinct scores t_k, descending, with
    precision_k = TP_k / (TP_k + FP_k) and recall_k = TP_k / P for the rows scoring >= t_k (ties
    enter together); i.e. AP_r = sum_g pos[r, g] * precision[r, g] / P_r. Row i is weighted by
    counts[r, i]. NaN where a replicate has one class only (sklearn's value there is 1 with no
    negatives and undefined with no positives; the report calls both undefined, as metrics.py does).
    labels (N,) of 0/1, scores (N,), counts (R, N) whole numbers >= 0; a row of ones is the eval set itself.
    """
    labels, scores = _as_rows(labels, scores)
    return _ranked_metrics(_rank_positions(labels, scores), _check_counts(labels, counts), ("pr_auc",))["pr_auc"]


def f1_rows(labels: np.ndarray, scores: np.ndarray, threshold: float, counts: np.ndarray) -> np.ndarray:
    """Positive-class F1 of `score >= threshold` on each replicate, (R,).

    F1_r = 2 TP_r / (2 TP_r + FP_r + FN_r), each count weighted by counts[r, i]; equals sklearn's
    `f1_score(..., zero_division=0)` on the resampled rows. NaN where a replicate has one class only.
    labels (N,) of 0/1, scores (N,), counts (R, N) whole numbers >= 0; a row of ones is the eval set itself.
    """
    labels, scores = _as_rows(labels, scores)
    return _f1(_f1_masks(labels, scores, float(threshold)), _check_counts(labels, counts))


def _prepare(labels: np.ndarray, scores: np.ndarray, threshold: float, metrics) -> dict:
    """What the metrics of one model and seed need from its scores, computed once for all replicates."""
    ranked = "roc_auc" in metrics or "pr_auc" in metrics
    return {"ranks": _rank_positions(labels, scores) if ranked else None,
            "f1": _f1_masks(labels, scores, threshold) if "f1" in metrics else None}


def _metric_values(prepared: dict, counts: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """The asked-for metrics of one prepared model and seed on each replicate: {metric: (R,)}."""
    out = _ranked_metrics(prepared["ranks"], counts, metrics) if prepared["ranks"] is not None else {}
    if "f1" in metrics:
        out["f1"] = _f1(prepared["f1"], counts)
    return out


# ----------------------------------------------------------------------------------------------
# Inputs


def _as_inputs(labels, scores_a, scores_b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels (N,) as float 0/1; scores as (S, N) float64 (one seed becomes S = 1)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) == 0:
        raise StatsError(f"labels: expected a non-empty 1-D array, got shape {labels.shape}")
    if not np.isin(labels, (0, 1)).all():
        raise StatsError(f"labels: expected binary 0/1 labels, got values {np.unique(labels)[:5].tolist()}")
    a, b = np.asarray(scores_a, dtype=np.float64), np.asarray(scores_b, dtype=np.float64)
    if a.shape != b.shape:
        raise StatsError(f"scores_a and scores_b: expected the same shape (paired seeds and rows), "
                         f"got {a.shape} and {b.shape}")
    if a.ndim == 1:
        a, b = a[None], b[None]
    if a.ndim != 2 or a.shape[1] != len(labels) or a.shape[0] == 0:
        raise StatsError(f"scores: expected shape ({len(labels)},) or (seeds, {len(labels)}), got {np.shape(scores_a)}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise StatsError("scores: expected finite values, got NaN or infinity")
    return labels.astype(np.float64), a, b


def _as_thresholds(thresholds, seeds: int, name: str) -> np.ndarray:
    """One threshold per seed, (S,): a single number is used for every seed."""
    if thresholds is None:
        raise StatsError(f"{name}: metric 'f1' needs a threshold per model and seed, got None")
    values = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if len(values) == 1:
        values = np.repeat(values, seeds)
    if len(values) != seeds or not np.isfinite(values).all():
        raise StatsError(f"{name}: expected one finite threshold per seed ({seeds}), got {thresholds!r}")
    return values


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise StatsError(f"metric: expected one of {', '.join(METRICS)}, got {metric!r}")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise StatsError(f"confidence: expected a number between 0 and 1, got {confidence!r}")


def _optional(x) -> float | None:
    """A plain float for JSON, None for NaN / None."""
    return None if x is None or math.isnan(x) else float(x)


# ----------------------------------------------------------------------------------------------
# The two intervals and the verdict


def seed_interval(differences: Sequence[float], confidence: float = 0.95) -> dict:
    """Student-t interval for the mean paired difference over seeds (A_s - B_s, same seed s).

    With d the n defined differences (NaN entries are dropped and counted in "dropped"):
    mean = sum(d) / n, std = sqrt(sum((d - mean)^2) / (n - 1)) (sample std), and the interval is
    mean -/+ t_{n-1, (1 + confidence)/2} * std / sqrt(n). With n == 1 the std and the interval are
    None: one seed says nothing about training randomness. With n == 0 the mean is None too.
    Returns {"n", "dropped", "mean", "std", "interval": [low, high] or None, "confidence"}.
    """
    _check_confidence(confidence)
    d = np.asarray(differences, dtype=np.float64).reshape(-1)
    defined = d[~np.isnan(d)]
    n = len(defined)
    out = {"n": n, "dropped": int(len(d) - n), "mean": None, "std": None, "interval": None,
           "confidence": float(confidence)}
    if n == 0:
        return out
    mean = float(defined.mean())
    out["mean"] = mean
    if n > 1:
        std = float(defined.std(ddof=1))
        half = float(scipy_stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, interval=[mean - half, mean + half])
    return out


def bootstrap_counts(rows: int, replicates: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap replicates of `rows` eval rows as blocks of row counts, (block, rows) int32.

    Each replicate draws `rows` row indices uniformly with replacement (numpy's default_rng(seed));
    counts[r, i] is how often replicate r drew row i. Blocks keep memory near BLOCK_ELEMENTS numbers;
    the block size depends only on `rows`, so the replicates are the same for the same seed.
    """
    rng = np.random.default_rng(seed)
    block = max(1, BLOCK_ELEMENTS // rows)
    for start in range(0, replicates, block):
        drawn = rng.integers(0, rows, size=(min(block, replicates - start), rows))  # (block, rows) row indices
        counts = np.empty(drawn.shape, dtype=np.int32)
        for r, indices in enumerate(drawn):  # one bincount per row: its bins stay in cache
            counts[r] = np.bincount(indices, minlength=rows)
        yield counts


def _per_seed(models: list[dict], counts: np.ndarray, metrics) -> dict[str, np.ndarray]:
    """Metrics of one model's prepared seeds on each replicate: {metric: (S, R)}."""
    values = [_metric_values(m, counts, metrics) for m in models]
    return {metric: np.stack([v[metric] for v in values]) for metric in metrics}


def _bootstrap(labels, a, b, thr_a, thr_b, metrics, replicates: int, confidence: float, seed: int) -> tuple[dict, dict]:
    """`bootstrap_interval` for several metrics on the same replicates (one draw and sort for all).

    Returns ({metric: bootstrap_interval's dict}, {"a"/"b": {metric: (S,) values on the eval rows}}).
    """
    models_a = [_prepare(labels, a[s], thr_a[s], metrics) for s in range(len(a))]
    models_b = [_prepare(labels, b[s], thr_b[s], metrics) for s in range(len(b))]
    everything = np.ones((1, a.shape[1]), dtype=np.int32)
    observed = {"a": _per_seed(models_a, everything, metrics), "b": _per_seed(models_b, everything, metrics)}
    differences = {m: [] for m in metrics}
    for counts in bootstrap_counts(a.shape[1], replicates, seed):
        value_a, value_b = _per_seed(models_a, counts, metrics), _per_seed(models_b, counts, metrics)
        for m in metrics:
            differences[m].append((value_a[m] - value_b[m]).mean(axis=0))      # (block,)
    out = {}
    for m in metrics:
        replicate = np.concatenate(differences[m])                            # (replicates,)
        kept = replicate[~np.isnan(replicate)]
        interval = None
        if len(kept):
            low, high = np.percentile(kept, [50 * (1 - confidence), 50 * (1 + confidence)])
            interval = [float(low), float(high)]
        mean_difference = float((observed["a"][m] - observed["b"][m]).mean())
        out[m] = {"observed": _optional(mean_difference), "interval": interval, "replicates": int(len(kept)),
                  "dropped": int(replicates - len(kept)), "confidence": float(confidence)}
    return out, {side: {m: v[:, 0] for m, v in values.items()} for side, values in observed.items()}


def _bootstrap_args(metrics, replicates, confidence) -> None:
    for metric in metrics:
        _check_metric(metric)
    _check_confidence(confidence)
    if replicates < 1:
        raise StatsError(f"replicates: expected at least 1, got {replicates}")


def _thresholds(metrics, thresholds_a, thresholds_b, seeds: int) -> tuple[np.ndarray, np.ndarray]:
    if "f1" not in metrics:  # unused: any number will do
        return np.zeros(seeds), np.zeros(seeds)
    return _as_thresholds(thresholds_a, seeds, "thresholds_a"), _as_thresholds(thresholds_b, seeds, "thresholds_b")


def bootstrap_interval(labels, scores_a, scores_b, metric: str, *, thresholds_a=None, thresholds_b=None,
                       replicates: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap over eval rows of the mean per-seed difference metric(A_s) - metric(B_s).

    labels (N,) of 0/1; scores_a, scores_b (N,) or (S, N), row i of every seed the same eval row;
    thresholds_a/b: one per seed (or one number for all), needed for metric "f1" (F1 of score >= t).
    The statistic is D = (1/S) sum_s [m(A_s) - m(B_s)]. Each replicate resamples the N rows with
    replacement (`bootstrap_counts`), the same rows for A, B and every seed, and recomputes D; the
    interval is the (1 - c)/2 and (1 + c)/2 percentiles (numpy's linear interpolation) of the
    defined replicates. Replicates that draw one class only are dropped and counted.
    Deterministic for a seed. Returns {"observed": D on the eval rows, "interval": [low, high],
    "replicates": used, "dropped", "confidence"}; observed and interval are None when the eval rows
    hold one class only.
    """
    _bootstrap_args((metric,), replicates, confidence)
    labels, a, b = _as_inputs(labels, scores_a, scores_b)
    thr_a, thr_b = _thresholds((metric,), thresholds_a, thresholds_b, len(a))
    return _bootstrap(labels, a, b, thr_a, thr_b, (metric,), replicates, confidence, seed)[0][metric]


def _side(interval) -> int:
    """+1 when the interval lies strictly above 0, -1 strictly below, 0 otherwise (or None)."""
    if interval is None:
        return 0
    low, high = interval
    return 1 if low > 0 else -1 if high < 0 else 0


ROWS_FAVOUR_A = "inconclusive (rows favour A, one seed)"
ROWS_FAVOUR_B = "inconclusive (rows favour B, one seed)"


def verdict(seed_ci: dict | None, boot_ci: dict | None) -> str:
    """The call on A - B: "better" / "worse" when both intervals exclude 0 on that side, else "inconclusive".

    seed_ci is `seed_interval`'s result, boot_ci `bootstrap_interval`'s. When there is no seed
    interval (one seed) nothing is called; the label says which way the rows interval leans when it
    excludes 0: "inconclusive (rows favour A, one seed)" / "inconclusive (rows favour B, one seed)".
    No bootstrap interval (no defined replicate) is always "inconclusive".
    """
    rows = _side(boot_ci["interval"] if boot_ci else None)
    seed_range = seed_ci["interval"] if seed_ci else None
    if seed_range is None:
        return {1: ROWS_FAVOUR_A, -1: ROWS_FAVOUR_B}.get(rows, "inconclusive")
    both = rows if rows == _side(seed_range) else 0
    return {1: "better", -1: "worse"}.get(both, "inconclusive")


# ----------------------------------------------------------------------------------------------
# One comparison of two models, and its line in the report


def compare(labels, scores_a, scores_b, *, thresholds_a, thresholds_b, metrics: Sequence[str] = METRICS,
            replicates: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict:
    """Model A against model B on the same eval rows and seeds, per metric; JSON-able.

    labels (N,) of 0/1; scores_a, scores_b (N,) or (S, N) positive-class scores; thresholds_a/b one
    per seed (or one number) for "f1", may be None when "f1" is not asked for. Returns
    {"seeds": S, "rows": N, "confidence", "metrics": {metric: {"a": [S values], "b": [S values],
    "differences": [A_s - B_s], "seeds": seed_interval, "rows": bootstrap_interval, "verdict"}}};
    undefined values (one class only) are None.
    """
    metrics = tuple(metrics)
    _bootstrap_args(metrics, replicates, confidence)
    labels, a, b = _as_inputs(labels, scores_a, scores_b)
    seeds, rows = a.shape
    thr_a, thr_b = _thresholds(metrics, thresholds_a, thresholds_b, seeds)
    boot, observed = _bootstrap(labels, a, b, thr_a, thr_b, metrics, replicates, confidence, seed)
    out = {"seeds": seeds, "rows": rows, "confidence": float(confidence), "metrics": {}}
    for metric in metrics:
        value_a, value_b = observed["a"][metric].tolist(), observed["b"][metric].tolist()  # (S,) each
        differences = [x - y for x, y in zip(value_a, value_b)]
        seed_ci = seed_interval(differences, confidence)
        out["metrics"][metric] = {
            "a": [_optional(v) for v in value_a],
            "b": [_optional(v) for v in value_b],
            "differences": [_optional(v) for v in differences],
            "seeds": seed_ci,
            "rows": boot[metric],
            "verdict": verdict(seed_ci, boot[metric]),
        }
    return out


def _signed(x: float) -> str:
    # Four decimals, as the report's tables: AUC gaps between distillation variants are often
    # a few thousandths, which three decimals would round to +0.00x on both ends.
    return f"{x:+.4f}"


def format_comparison(name: str, result: dict) -> str:
    """One line for the report, e.g.

    CPFD vs PFD (A - B, 3 seeds, 2000 rows, 95% intervals): ROC AUC +0.0120 [seeds -0.0040, +0.0280;
    rows +0.0030, +0.0210] inconclusive; PR AUC ...; F1 ...

    The number is the mean over seeds of A - B; "seeds" is the t interval over seeds ("n/a" with
    one seed), "rows" the bootstrap interval over eval rows; then the verdict.
    """
    seeds = result["seeds"]
    head = (f"{name} (A - B, {seeds} seed{'s' if seeds != 1 else ''}, {result['rows']} rows, "
            f"{round(100 * result['confidence'])}% intervals)")
    parts = []
    for metric, r in result["metrics"].items():
        label = METRIC_NAMES.get(metric, metric)
        mean = r["seeds"]["mean"]
        if mean is None:
            parts.append(f"{label} n/a (undefined: one class only)")
            continue
        seed_range = r["seeds"]["interval"]
        seed_text = f"seeds {_signed(seed_range[0])}, {_signed(seed_range[1])}" if seed_range else "seeds n/a"
        row_range = r["rows"]["interval"]
        row_text = f"rows {_signed(row_range[0])}, {_signed(row_range[1])}" if row_range else "rows n/a"
        parts.append(f"{label} {_signed(mean)} [{seed_text}; {row_text}] {r['verdict']}")
    return f"{head}: " + "; ".join(parts)
