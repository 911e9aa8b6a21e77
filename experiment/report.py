"""The experiment's report: the paper's Tables 1 and 3-7 and Figures 3 and 5 for one corpus, with
paired statistics for every comparison that matters.

`write_report` reads what the experiment steps wrote (each model's eval metrics and predictions, the
teacher dumps, the synthetic corpus's truth file when there is one) and writes `report.json` (every
number) and `report.md` (the tables, and one line per comparison saying what the data showed),
plus the figures. Nothing here trains or re-scores a model except the serving-latency measurement
of Table 4.

The F1 of every table is taken at the threshold each model found best on its validation split (so
no eval label chose it); F1@0.5 stands beside it. Comparisons (`experiment.stats`): per metric, the
per-seed paired differences, a 95% interval over seeds and one from a paired bootstrap over eval
rows, and a verdict that calls a difference only when both intervals exclude 0.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cpfd.storage.atomic import atomic_write_bytes, atomic_write_json
from cpfd.storage.corpus import Corpus
from cpfd.experiment.schedule import WARNINGS
from cpfd.storage.dump import read_dump_columns, read_teacher_losses
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import read_metrics_log, read_training_record

METRICS = ("roc_auc", "pr_auc", "f1_val", "f1_05")
METRIC_NAMES = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "f1_val": "F1 (val. threshold)", "f1_05": "F1@0.5"}
# The metrics a model is judged on: F1@0.5 is not (every student's threshold is chosen on its
# validation split), so it is shown, marked, and never bolded.
DECISION_METRICS = ("roc_auc", "pr_auc", "f1_val")
COLUMN_NAMES = {**METRIC_NAMES, "f1_05": "F1@0.5 (not the decision metric)"}
EVAL_KEYS = {"roc_auc": "roc_auc", "pr_auc": "pr_auc", "f1_val": "f1_at_val_threshold", "f1_05": "f1"}


# ---------------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------------

def eval_paths(seed_dir: Path, name: str) -> tuple[Path, Path]:
    """Where a model's eval-split metrics (JSON) and predictions (Parquet) go in an experiment folder."""
    return seed_dir / "eval" / f"{name}.json", seed_dir / "eval" / f"{name}.parquet"


def summarize(values: list) -> dict:
    """Mean, sample standard deviation (None for one seed), and the values themselves."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return {
        "mean": statistics.fmean(clean) if clean else float("nan"),
        "std": statistics.stdev(clean) if len(clean) > 1 else None,
        "values": values,
    }


def fmt(summary: dict | None, bold: bool = False) -> str:
    if summary is None or math.isnan(summary["mean"]):
        return "n/a"
    text = f"{summary['mean']:.4f}" + (f" ± {summary['std']:.4f}" if summary["std"] is not None else "")
    return f"**{text}**" if bold else text


def gap_closed(student: float, baseline: float, teacher: float) -> float | None:
    """(student - baseline) / (teacher - baseline): the share of the teacher's lead recovered."""
    if teacher - baseline == 0 or any(math.isnan(x) for x in (student, baseline, teacher)):
        return None
    return (student - baseline) / (teacher - baseline)


def strictly_best(models: dict, names: list[str], metric: str) -> str | None:
    """The one model with the highest mean of `metric` among `names`; None on a tie (nothing is bold)."""
    means = {n: models[n][metric]["mean"] for n in names if not math.isnan(models[n][metric]["mean"])}
    if not means:
        return None
    top = max(means.values())
    winners = [n for n, v in means.items() if v == top]
    return winners[0] if len(winners) == 1 else None


def metric_of(evaluation: dict, metric: str):
    """A report metric from an eval.json; a task of more classes has one (macro) F1 for both F1 columns."""
    value = evaluation.get(EVAL_KEYS[metric])
    if value is None and metric == "f1_val":
        value = evaluation.get("f1")
    return value


def hit_rate_at_matched_recall(baseline_probs: np.ndarray, baseline_threshold: float, probs: np.ndarray,
                               labels: np.ndarray) -> dict:
    """Paper Table 5 replayed offline: each model recalls as many eval videos as the baseline does at
    its validation threshold (its top-k by score); the hit rate is the precision of that set."""
    k = int((baseline_probs >= baseline_threshold).sum())
    if k == 0:
        return {"recalled": 0, "hit_rate": None}
    top = np.argsort(-probs, kind="stable")[:k]
    return {"recalled": k, "hit_rate": float(labels[top].mean())}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Measurements the tables need
# ---------------------------------------------------------------------------------------------

def read_predictions(path: Path) -> dict:
    t = pq.read_table(path, columns=["sample_id", "label", "prob", "pred"])
    return {"sample_id": t.column("sample_id").to_pylist(), "label": t.column("label").to_numpy(),
            "prob": t.column("prob").to_numpy().astype(np.float64), "pred": t.column("pred").to_numpy()}


def predicted(predictions: dict, threshold: float | None) -> np.ndarray:
    """Each row's predicted class: positive at the validation threshold (binary), else the argmax."""
    if threshold is None:
        return predictions["pred"]
    return (predictions["prob"] >= threshold).astype(np.int64)


def ms_per_video(score, batch: dict, n: int, repeats: int) -> dict:
    """Median milliseconds per video of `score(batch)` on the batch's `n` videos one at a time and all
    at once (after one warm-up), over `repeats`, with the fastest and slowest repeat (`*_range`)."""
    one = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(n)]
    score(one[0])  # warm-up
    single, batched = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in one:
            score(b)
        single.append((time.perf_counter() - start) / n * 1000)
        start = time.perf_counter()
        score(batch)
        batched.append((time.perf_counter() - start) / n * 1000)
    return {"ms_per_video_batch1": statistics.median(single), "ms_per_video_batched": statistics.median(batched),
            "ms_per_video_batch1_range": [min(single), max(single)],
            "ms_per_video_batched_range": [min(batched), max(batched)], "repeats": repeats}


def serving_latency(model_dir: Path, corpus: Corpus, device: str = "cpu", videos: int = 32, repeats: int = 5) -> dict:
    """Median milliseconds per video at batch size 1 and at batch size `videos`, on this machine,
    through the scoring path every command uses (`pipeline.scoring.score_batches`)."""
    from cpfd.pipeline.scoring import resolve_device, score_batches
    from cpfd.pipeline.stages import dataset_for
    from cpfd.teacher.models import load_model

    model, tokenizer = load_model(model_dir)
    device = resolve_device(device)
    model.to(device)
    batch = next(iter(dataset_for(model, corpus, "eval", tokenizer, batch_size=videos)))
    n = len(batch["labels"])
    timing = ms_per_video(lambda b: score_batches(model, [b], device), batch, n, repeats)
    return {**timing, "parameters": sum(p.numel() for p in model.parameters()), "videos": n, "device": str(device)}


def onnx_serving_latency(model_dir: Path, corpus: Corpus, videos: int = 32, repeats: int = 5) -> dict | None:
    """`serving_latency` of the student exported by `cpfd export` (into a temporary folder), on
    onnxruntime's CPU provider, on the same rows; None when the export extra is not installed,
    {"failed": why} when the export fails."""
    import importlib.util
    import tempfile

    if any(importlib.util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")):
        return None
    import onnxruntime as ort

    from cpfd.pipeline.stages import dataset_for
    from cpfd.student.export import export_student, graph_inputs
    from cpfd.teacher.models import load_model

    model, tokenizer = load_model(model_dir)
    batch = next(iter(dataset_for(model, corpus, "eval", tokenizer, batch_size=videos)))
    names = graph_inputs(model.config)
    feed = {n: batch[n].numpy() for n in names}
    n = len(batch["labels"])
    with tempfile.TemporaryDirectory(prefix="cpfd-report-export-") as folder:
        try:
            serving = export_student(model_dir, Path(folder) / "serve", corpus=corpus.path, check_rows=videos)
        except CpfdError as e:  # e.g. a backbone the exporter cannot trace: the report says so and goes on
            return {"failed": str(e)}
        session = ort.InferenceSession(str(Path(folder) / "serve" / "model.onnx"), providers=["CPUExecutionProvider"])
        timing = ms_per_video(lambda b: session.run(["probs"], b), feed, n, repeats)
    return {**timing, "videos": n, "device": "cpu (onnxruntime)",
            "parity_max_abs_diff_probs": serving["parity"]["max_abs_diff_probs"]}


def teacher_loss_by_outcome(dump_dir: Path, predictions: dict, threshold: float | None, classes: list[str]) -> dict:
    """Paper Table 1 on held-out rows: the teacher's loss on each eval row, by the student's outcome
    (correct at its validation threshold, or not) and the row's class. Also the raw groups for Figure 3."""
    dump = read_dump_columns(dump_dir, ["sample_id", "label", "teacher_loss"])
    if dump.column("sample_id").to_pylist() != predictions["sample_id"]:
        raise ValueError(f"{dump_dir}: rows differ from the predictions' (both should be the eval split, in order)")
    labels, loss = dump.column("label").to_numpy(), dump.column("teacher_loss").to_numpy().astype(np.float64)
    correct = predicted(predictions, threshold) == labels
    table = {"groups": [*classes, "overall"]}
    groups = {}
    for outcome, mask in (("correct", correct), ("incorrect", ~correct)):
        table[outcome] = {}
        for y, name in [*enumerate(classes), (None, "overall")]:
            cell = mask if y is None else mask & (labels == y)
            table[outcome][name] = {"mean_teacher_loss": float(loss[cell].mean()) if cell.any() else None,
                                    "count": int(cell.sum())}
            if y is not None:
                groups[(outcome == "correct", y)] = loss[cell]
    return {"table": table, "groups": groups}


def student_ceiling(corpus: Corpus, val_fraction: float) -> float | None:
    """The student's ceiling on a synthetic corpus: ROC AUC on the eval split of a logistic regression
    on the three visible latents, fitted on the training rows (docs/synthetic.md). None otherwise."""
    from cpfd.experiment.synth import read_truth

    truth = read_truth(corpus.path) if corpus.num_classes == 2 else None
    if truth is None or not {"latent_object", "latent_motion", "latent_text"} <= set(truth.column_names):
        return None
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from cpfd.pipeline.data import training_rows

    frame = truth.to_pandas().set_index("sample_id")
    visible = ["latent_object", "latent_motion", "latent_text"]
    ids = {split: corpus.read_column(split, "sample_id") for split in ("train", "eval")}
    labels = {split: np.array(corpus.read_column(split, "label").to_pylist()) for split in ("train", "eval")}
    train = training_rows(val_fraction).mask(ids["train"])
    x_train = frame.loc[np.array(ids["train"].to_pylist())[train], visible].to_numpy()
    x_eval = frame.loc[ids["eval"].to_pylist(), visible].to_numpy()
    model = LogisticRegression().fit(x_train, labels["train"][train])
    return float(roc_auc_score(labels["eval"], model.predict_proba(x_eval)[:, 1]))


def train_loss_by_truth(dump_dir: Path, corpus: Corpus) -> dict:
    """The train-split teacher loss by label and, when the synthetic truth file says, by whether the
    stored label was flipped from the true one (for analysis only: no model ever reads it)."""
    from cpfd.experiment.synth import read_truth

    dump = read_dump_columns(dump_dir, ["sample_id", "label", "teacher_loss"])
    labels, loss = dump.column("label").to_numpy(), dump.column("teacher_loss").to_numpy().astype(np.float64)
    truth = read_truth(corpus.path)
    flipped = None
    if truth is not None:
        frame = truth.to_pandas().set_index("sample_id")
        flipped = frame.loc[dump.column("sample_id").to_pylist(), "flipped"].to_numpy().astype(bool)
    out = {}
    for y, name in enumerate(corpus.classes):
        for flip in ((False, True) if flipped is not None else (None,)):
            mask = (labels == y) if flip is None else (labels == y) & (flipped == flip)
            key = name if flip is None else f"{name}, label {'flipped' if flip else 'true'}"
            out[key] = loss[mask]
    return out


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# Colour-blind-safe and distinct as outlines (Okabe-Ito).
DISTINCT_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442")


def _share_weights(values: np.ndarray) -> np.ndarray:
    """Histogram weights that make each bar the share of its group's rows in the bin.

    Not `density=True`: on log-spaced bins a density divides by the linear bin width, which
    flattens the wide high-loss bins where the flipped and misclassified rows lie."""
    return np.full(len(values), 1.0 / max(len(values), 1))


def _log_bins(arrays) -> np.ndarray:
    values = np.concatenate([a for a in arrays if len(a)]) if any(len(a) for a in arrays) else np.array([1e-3, 1.0])
    lo, hi = max(values.min(), 1e-6), max(values.max(), 1e-5)
    return np.logspace(np.log10(lo), np.log10(hi), 40)


def figure_teacher_loss(groups: dict, classes: list[str], path: Path, title: str) -> None:
    plt = _plt()
    bins = _log_bins(groups.values())
    fig, axes = plt.subplots(1, len(classes), figsize=(5 * len(classes), 3.6), squeeze=False)
    for ax, (y, name) in zip(axes[0], enumerate(classes)):
        for correct, color in ((True, "tab:blue"), (False, "tab:orange")):
            losses = groups.get((correct, y), np.zeros(0))
            if len(losses):  # outlines, not filled bars: both stay readable where they overlap
                ax.hist(losses, bins=bins, weights=_share_weights(losses), histtype="step", linewidth=1.8,
                        color=color, label=f"student {'correct' if correct else 'incorrect'} (n={len(losses)})")
        ax.set_xscale("log")
        ax.set_title(f"label {name}")
        ax.set_xlabel("teacher loss")
        if ax.get_legend_handles_labels()[0]:  # a class with no eval rows has nothing to label
            ax.legend(fontsize=8)
    axes[0][0].set_ylabel("share of the group's rows")
    fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path)


def figure_alpha(runs: dict, losses: np.ndarray, path: Path) -> None:
    """Each mapping's alpha against teacher loss, on a log axis spanning the dump's rows (0.5th to
    99.5th percentile), over the share of the rows in each loss bin (grey)."""
    from cpfd.student.cpfd import alpha_from_loss

    plt = _plt()
    positive = losses[losses > 0]
    lo, hi = (np.quantile(positive, [0.005, 0.995]) if len(positive) else (1e-3, 1.0))
    lo, hi = max(float(lo), 1e-6), max(float(hi), float(lo) * 10)
    grid = np.geomspace(lo / 2, hi * 2, 400)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    rows = ax.twinx()
    rows.hist(np.clip(positive, lo / 2, hi * 2), bins=np.geomspace(lo / 2, hi * 2, 40), weights=_share_weights(positive),
              color="0.85")
    rows.set_ylabel("share of the dump's rows", color="0.45")
    ax.set_zorder(rows.get_zorder() + 1)
    ax.patch.set_visible(False)
    for (name, run), color in zip(runs.items(), DISTINCT_COLOURS):
        params = ", ".join(f"{k}={v:.3g}" for k, v in run["params"].items())
        ax.plot(grid, alpha_from_loss(grid, run["mapping"], **run["params"]), color=color, linewidth=1.8,
                label=f"{run['mapping']} ({params})")
    ax.set_xscale("log")
    ax.set_xlabel("teacher loss (log scale; grey: the train dump's rows)")
    ax.set_ylabel("alpha")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Alpha as a function of teacher loss (parameters used, seed 0)")
    fig.tight_layout()
    save_figure(fig, path)


def figure_training(curves: dict, steps: dict, path: Path) -> None:
    """Left: validation ROC AUC per epoch of every model (seed 0), the kept epoch marked. Right: the
    cross-entropy and distillation term per logged step of PFD and CPFD (metrics.jsonl)."""
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for i, (name, (auc, kept)) in enumerate(curves.items()):
        color, style = DISTINCT_COLOURS[i % len(DISTINCT_COLOURS)], ("-", "--", ":")[i // len(DISTINCT_COLOURS) % 3]
        epochs = np.arange(1, len(auc) + 1)
        left.plot(epochs, auc, color=color, linestyle=style, linewidth=1.4, label=name)
        if kept and 1 <= kept <= len(auc):
            left.plot([kept], [auc[kept - 1]], marker="o", markersize=7, color=color, markeredgecolor="black")
    left.set_xlabel("epoch")
    left.set_ylabel("validation ROC AUC")
    left.set_title("Validation ROC AUC per epoch (circle: the kept epoch)")
    left.legend(fontsize=7)
    for (name, lines), color in zip(steps.items(), DISTINCT_COLOURS):
        step = [line["step"] for line in lines]
        right.plot(step, [line["ce"] for line in lines], color=color, linewidth=1.4, label=f"{name}: cross-entropy")
        if all("kd" in line for line in lines):
            right.plot(step, [line["kd"] for line in lines], color=color, linewidth=1.4, linestyle="--",
                       label=f"{name}: distillation term (T^2 KL)")
    right.set_xlabel("optimizer step")
    right.set_ylabel("mean over the logged steps' rows")
    right.set_title("Training loss terms per step")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path)


def figure_loss_by_truth(dumps: dict, path: Path) -> None:
    """Train-split teacher loss by label and flipped, in-sample beside cross-fitted."""
    plt = _plt()
    bins = _log_bins([a for groups in dumps.values() for a in groups.values()])
    fig, axes = plt.subplots(1, len(dumps), figsize=(6 * len(dumps), 3.8), squeeze=False)
    for ax, (title, groups) in zip(axes[0], dumps.items()):
        for (key, losses), color in zip(groups.items(), DISTINCT_COLOURS):
            if len(losses):
                ax.hist(losses, bins=bins, weights=_share_weights(losses), histtype="step", linewidth=1.8,
                        color=color, label=f"{key} (n={len(losses)})")
        ax.set_xscale("log")
        ax.set_title(title)
        ax.set_xlabel("teacher loss on train-split rows")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0][0].set_ylabel("share of the group's rows")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    import io

    plt = _plt()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def comparisons_to_make(options, names: set) -> list[tuple[str, str, str]]:
    """(label, model A, model B) of every comparison the report makes: A - B."""
    p = f"cpfd-{options.primary_mapping}"
    pairs = [("PFD vs X-VLM", "pfd", "baseline"), ("CPFD vs X-VLM", p, "baseline"), ("CPFD vs PFD", p, "pfd"),
             ("CPFD vs PFD at its mean alpha", p, f"pfd-{options.primary_mapping}")]
    pairs += [(f"CPFD ({m}) vs PFD at its mean alpha", f"cpfd-{m}", f"pfd-{m}")
              for m in options.mappings if m != options.primary_mapping]
    if options.cross_fit:
        pairs += [("cross-fitted CPFD vs in-sample CPFD", f"{p}-cf", p), ("cross-fitted PFD vs in-sample PFD", "pfd-cf", "pfd"),
                  ("cross-fitted CPFD vs cross-fitted PFD", f"{p}-cf", "pfd-cf"), ("cross-fitted CPFD vs X-VLM", f"{p}-cf", "baseline"),
                  ("cross-fitted CPFD vs PFD at its mean alpha", f"{p}-cf", f"pfd-{options.primary_mapping}-cf")]
    for c in getattr(options, "confidences", ["loss"]):
        if c == "loss":
            continue
        for suffix, where in (("", ""), ("-cf", "cross-fitted ")):
            if suffix and not options.cross_fit:
                continue
            pairs += [(f"{where}CPFD ({c}) vs PFD at its mean alpha", f"{p}-{c}{suffix}", f"pfd-{options.primary_mapping}-{c}{suffix}"),
                      (f"{where}CPFD ({c}) vs {where}CPFD (loss)", f"{p}-{c}{suffix}", f"{p}{suffix}"),
                      (f"{where}CPFD ({c}) vs {where}PFD", f"{p}-{c}{suffix}", f"pfd{suffix}")]
    return [(label, a, b) for label, a, b in pairs if a in names and b in names and a != b]


def run_comparisons(out: Path, seeds: list[int], results: dict, pairs, replicates: int) -> dict:
    """Paired statistics of each pair over seeds and eval rows (`experiment.stats.compare`)."""
    from cpfd.experiment.stats import compare

    found = {}
    for label, a, b in pairs:
        preds = {name: [read_predictions(eval_paths(out / f"seed-{s}", results[s][name].get("distillation", {}).get(
            "same_as", name))[1]) for s in seeds] for name in (a, b)}
        labels = preds[a][0]["label"]
        thresholds = {name: [results[s][name].get("val_threshold", 0.5) for s in seeds] for name in (a, b)}
        probs_a, probs_b = np.stack([p["prob"] for p in preds[a]]), np.stack([p["prob"] for p in preds[b]])
        found[label] = {"a": a, "b": b, **compare(
            labels, probs_a, probs_b, thresholds_a=thresholds[a], thresholds_b=thresholds[b], replicates=replicates,
            seed=0), "mean_abs_prob_difference": float(np.abs(probs_a - probs_b).mean())}
    return found


# Two models whose eval probabilities differ by less than this on average are practically the same
# model (e.g. PFD from a teacher that memorised its training rows: its soft labels are the labels).
SAME_MODEL_PROB_DIFFERENCE = 0.005


def verdict_line(comparisons: dict, seeds: int) -> str:
    """One line for the top of the report, in the words the statistics allow: which of the main
    comparisons are resolved on ROC AUC (both intervals exclude 0), and that the rest are not."""
    main = [label for label in ("PFD vs X-VLM", "CPFD vs X-VLM", "CPFD vs PFD", "CPFD vs PFD at its mean alpha")
            if label in comparisons]
    called = [(label, comparisons[label]["metrics"]["roc_auc"]["verdict"]) for label in main]
    resolved = [f"{label.split(' vs ')[0]} {v} than {label.split(' vs ')[1]}" for label, v in called
                if v in ("better", "worse")]
    open_ = [label for label, v in called if v not in ("better", "worse")]
    if seeds == 1:
        return ("**Verdict:** with one seed nothing is called better or worse (no interval over training seeds); "
                "run `--seeds 3` or more. The rows intervals are in \"What the data showed\".")
    if not resolved:
        return (f"**Verdict:** on ROC AUC no difference is resolved ({', '.join(open_)}: an interval includes 0); "
                "these data do not tell the methods apart.")
    return (f"**Verdict** (ROC AUC, both intervals exclude 0): {'; '.join(resolved)}"
            + (f"; not resolved: {', '.join(open_)}." if open_ else "."))


def write_report(out: Path, corpus: Corpus, options, results: dict, model_options, train_options, command: str) -> dict:
    """Write report.json, report.md and the figures; return the report dict."""
    from cpfd.experiment.stats import format_comparison

    seeds = sorted(results)
    seed0 = out / f"seed-{seeds[0]}"
    names = list(results[seeds[0]])
    binary = corpus.num_classes == 2
    models = {name: {m: summarize([metric_of(results[s][name], m) for s in seeds]) for m in METRICS} for name in names}
    primary = f"cpfd-{options.primary_mapping}"
    base_threshold = [results[s]["baseline"].get("val_threshold") for s in seeds]
    provenance = (f"corpus `{corpus.path}` (task {corpus.meta.get('task')}, fingerprint {corpus.fingerprint[:12]}, "
                  f"{corpus.num_rows('train')} train / {corpus.num_rows('eval')} eval videos); "
                  f"seeds {', '.join(map(str, seeds))}; command `{command}`")

    # Table 3 (and its cross-fitted rows)
    table3_models = [("X-VLM", "baseline"), ("DF-X-VLM (teacher)", "teacher"),
                     (f"PFD-X-VLM (alpha {options.pfd_alpha:g})", "pfd"), (f"CPFD-X-VLM ({options.primary_mapping})", primary)]
    if options.cross_fit:
        table3_models += [("PFD-X-VLM, cross-fitted dump", "pfd-cf"),
                          (f"CPFD-X-VLM ({options.primary_mapping}), cross-fitted dump", f"{primary}-cf")]
    students = [n for _, n in table3_models if n != "teacher"]
    best = {m: strictly_best(models, students, m) for m in DECISION_METRICS}
    gaps = {name: {m: gap_closed(models[name][m]["mean"], models["baseline"][m]["mean"], models["teacher"][m]["mean"])
                   for m in METRICS} for name in students if name != "baseline"}
    ceiling = student_ceiling(corpus, train_options.val_fraction)
    table3 = {"models": {label: models[name] for label, name in table3_models}, "gap_closed": gaps,
              "ceiling_roc_auc": ceiling}

    comparisons = run_comparisons(out, seeds, results, comparisons_to_make(options, set(names)),
                                  options.bootstrap) if binary else {}

    # Table 6 and 7
    table6 = {}
    for mapping in options.mappings:
        name, matched = f"cpfd-{mapping}", f"pfd-{mapping}"
        run = results[seeds[0]][name]["distillation"]
        table6[mapping] = {
            "cpfd": models[name],
            "mean_alpha": summarize([results[s][name]["distillation"]["mean_alpha"] for s in seeds]),
            "params_seed0": run["params"], "calibrated": run["calibrated"],
            "pfd_matched": models.get(matched),
            "pfd_matched_is_pfd": bool(matched in names and results[seeds[0]][matched]["distillation"].get("same_as")),
        }
    table7 = {f"{t:g}": models[primary if t == 1.0 else f"{primary}-T{t:g}"] for t in options.temperatures}
    signals = {}  # the primary mapping on each confidence signal, beside PFD at its mean alpha
    for c in getattr(options, "confidences", ["loss"]):
        for suffix in ("", "-cf") if options.cross_fit else ("",):
            name = f"{primary}{'' if c == 'loss' else '-' + c}{suffix}"
            matched = f"pfd-{options.primary_mapping}{'' if c == 'loss' else '-' + c}{suffix}"
            if name in models:
                signals[f"{c}{suffix}"] = {
                    "cpfd": models[name], "pfd_matched": models.get(matched),
                    "mean_alpha": summarize([results[s][name]["distillation"]["mean_alpha"] for s in seeds])}

    # Table 1 and Figure 3: held-out videos, teacher loss by the baseline student's outcome
    table1, table1_cf = [], []
    for s in seeds:
        base = read_predictions(eval_paths(out / f"seed-{s}", "baseline")[1])
        t = base_threshold[seeds.index(s)] if binary else None
        found = teacher_loss_by_outcome(out / f"seed-{s}" / "dump-eval", base, t, corpus.classes)
        table1.append(found["table"])
        if s == seeds[0]:
            figure_teacher_loss(found["groups"], corpus.classes, out / "fig_teacher_loss.png",
                                "Teacher loss by baseline-student correctness (eval split, seed 0)")
        if options.cross_fit:
            table1_cf.append(teacher_loss_by_outcome(out / f"seed-{s}" / "dump-cf-eval", base, t, corpus.classes)["table"])
    figure_alpha({m: results[seeds[0]][f"cpfd-{m}"]["distillation"] for m in options.mappings}
                 | {"pfd": results[seeds[0]]["pfd"]["distillation"]}, read_teacher_losses(seed0 / "dump"),
                 out / "fig_alpha.png")

    # Training curves (seed 0): validation ROC AUC per epoch of every model; PFD's and CPFD's loss terms
    curves, steps = {}, {}
    for name in names:
        if "same_as" in results[seeds[0]][name].get("distillation", {}):
            continue
        record = read_training_record(seed0 / name) or {}
        curves[name] = ([e.get("val_roc_auc", float("nan")) for e in record.get("epochs", [])], record.get("best_epoch"))
    for name in ("pfd", primary):
        lines = [line for line in read_metrics_log(seed0 / name) if line.get("kind") == "train"]
        if lines:
            steps[name] = lines
    figure_training(curves, steps, out / "fig_training.png")
    warnings_noted = json.loads((out / WARNINGS).read_text()) if (out / WARNINGS).exists() else {}

    # Cross-fitting: the training rows' teacher loss by label (and flipped), both dumps
    by_truth = None
    if options.cross_fit:
        dumps = {"in-sample dump (teacher scored its own training rows)": train_loss_by_truth(seed0 / "dump", corpus),
                 "cross-fitted dump (each row by a teacher that never saw it)": train_loss_by_truth(seed0 / "dump-cf", corpus)}
        figure_loss_by_truth(dumps, out / "fig_teacher_loss_crossfit.png")
        by_truth = {title: {k: {"mean": float(v.mean()) if len(v) else None, "count": int(len(v))}
                            for k, v in groups.items()} for title, groups in dumps.items()}

    # Table 5 (offline replay of the online A/B protocol), binary tasks
    table5 = {}
    if binary:
        for name in ["baseline", "teacher", "pfd", primary]:
            rates = []
            for s, t in zip(seeds, base_threshold):
                base = read_predictions(eval_paths(out / f"seed-{s}", "baseline")[1])
                pred = read_predictions(eval_paths(out / f"seed-{s}", name)[1])
                rates.append(hit_rate_at_matched_recall(base["prob"], t if t is not None else 0.5, pred["prob"],
                                                        pred["label"]))
            table5[name] = {"hit_rate": summarize([r["hit_rate"] for r in rates]), "recalled": [r["recalled"] for r in rates]}

    # Table 4 (serving cost, measured here)
    cost = {"teacher": serving_latency(seed0 / "teacher", corpus), "student": serving_latency(seed0 / primary, corpus),
            "student_onnx": onnx_serving_latency(seed0 / primary, corpus)}
    table4 = {**cost, "dense_features_needed": {"teacher": len(corpus.features) + len(corpus.privileged_features),
                                                "student": len(corpus.features)},
              "privileged_features_needed": {"teacher": len(corpus.privileged_features), "student": 0},
              "latency_ratio_batch1": cost["teacher"]["ms_per_video_batch1"] / cost["student"]["ms_per_video_batch1"],
              "parameter_ratio": cost["teacher"]["parameters"] / cost["student"]["parameters"]}

    report = {
        "command": command,
        "corpus": {"path": str(corpus.path), "task": corpus.meta.get("task"), "fingerprint": corpus.fingerprint,
                   "train_rows": corpus.num_rows("train"), "eval_rows": corpus.num_rows("eval"), "classes": corpus.classes,
                   "synthetic": corpus.meta.get("synthetic")},
        "seeds": seeds,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "model_options": asdict(model_options),
        "train_options": asdict(train_options),
        "results": {str(s): results[s] for s in seeds},
        "comparisons": comparisons,
        "tables": {"table1": table1, "table1_crossfit": table1_cf or None, "table3": table3, "table4": table4,
                   "table5": table5, "table6": table6, "table7": table7, "crossfit_train_loss": by_truth,
                   "confidence_signals": signals if len(getattr(options, "confidences", ["loss"])) > 1 else None},
        "verdict": verdict_line(comparisons, len(seeds)) if comparisons else None,
        "warnings": warnings_noted,
        "same_models": {label: c["mean_abs_prob_difference"] for label, c in comparisons.items()
                        if c["mean_abs_prob_difference"] < SAME_MODEL_PROB_DIFFERENCE},
    }
    report = json.loads(json.dumps(report, default=str))
    atomic_write_json(out / "report.json", report)
    lines = [format_comparison(label, found) for label, found in comparisons.items()]
    atomic_write_bytes(out / "report.md", render_markdown(report, models, table3_models, best, gaps, provenance, corpus,
                                                          options, lines).encode())
    return report


def render_markdown(report, models, table3_models, best, gaps, provenance, corpus, options, comparison_lines) -> str:
    t = report["tables"]
    seeds = report["seeds"]
    out = ["# CPFD experiment report", "", f"Produced from {provenance}.", "",
           "Metrics on the eval split; mean ± sample standard deviation over seeds (no ± with one seed). Every model "
           "kept the epoch that was best on its validation split (ids of the train split held out by hash, "
           f"{report['train_options']['val_fraction']:g} of them) and found its F1 threshold there: the eval split "
           "chose nothing. F1@0.5 is the positive-class F1 at probability 0.5: not the decision metric (every "
           "model's threshold was chosen on validation), so it is marked and never bolded.", ""]
    if report.get("verdict"):
        out += [report["verdict"], ""]

    out += ["## Table 3: teacher, baseline, PFD and CPFD", ""]
    rows = [[label] + [fmt(models[name][m], bold=(best.get(m) == name)) for m in METRICS] for label, name in table3_models]
    out.append(markdown_table(["model"] + [COLUMN_NAMES[m] for m in METRICS], rows))
    ceiling = t["table3"]["ceiling_roc_auc"]
    if ceiling is not None:
        base = models["baseline"]["roc_auc"]["mean"]
        out += ["", f"The student's ceiling on this synthetic corpus (a logistic regression on the three visible "
                f"latents, docs/synthetic.md): ROC AUC {ceiling:.4f}; X-VLM is {ceiling - base:+.4f} from it."]
    versus_baseline = {c["a"]: c for c in report["comparisons"].values() if c["b"] == "baseline"}

    def gap_cell(name: str, metric: str) -> str:
        verdict = (versus_baseline.get(name) or {}).get("metrics", {}).get(metric, {}).get("verdict")
        if verdict not in ("better", "worse"):
            return "not resolved"  # a ratio of a difference that may be noise says nothing
        return "n/a" if gaps[name][metric] is None else f"{gaps[name][metric]:+.1%}"

    out += ["", "Gap closed, (student - X-VLM) / (teacher - X-VLM), on the means, where the student's difference "
            "from X-VLM is resolved (both intervals exclude 0, \"What the data showed\"):", ""]
    out.append(markdown_table(["student"] + [METRIC_NAMES[m] for m in DECISION_METRICS],
                              [[name] + [gap_cell(name, m) for m in DECISION_METRICS] for name in gaps]))
    out += ["", "Bold: the best student per decision metric, when one is strictly best (a mean, not a verdict). "
            f"CPFD's mapping ({options.primary_mapping}) was fixed before the run (`--primary-mapping`); Table 6 has "
            "all mappings.", ""]
    out += caveats_markdown(report)

    out += ["## What the data showed", ""]
    if comparison_lines:
        out += ["Paired differences A - B per metric (F1 at each model's validation threshold), with 95% intervals "
                "over seeds (Student t on the per-seed differences; none with one seed) and over eval rows (a "
                "paired bootstrap); a difference is called better or worse only when both intervals exclude 0 "
                "(experiment/stats.py). With one seed nothing is called: \"rows favour A\" says only that the "
                "rows interval excludes 0 for these trained models.", ""]
        out += [f"- {line}" for line in comparison_lines]
    else:
        out.append("Paired statistics need a task of two classes; this one has "
                   f"{corpus.num_classes}: compare the tables' means and spreads.")
    out.append("")

    out += ["## Table 6: mappings, each beside PFD at the same mean alpha", ""]
    rows = []
    for mapping, row in t["table6"].items():
        params = ", ".join(f"{k}={v:.3g}" for k, v in row["params_seed0"].items())
        pfd = row["pfd_matched"]
        same = " (= PFD)" if row.get("pfd_matched_is_pfd") else ""
        rows.append([mapping, params, fmt(row["mean_alpha"]), fmt(row["cpfd"]["roc_auc"]), fmt(row["cpfd"]["pr_auc"]),
                     fmt(row["cpfd"]["f1_val"]), (fmt(pfd["roc_auc"]) + same) if pfd else "-",
                     fmt(pfd["pr_auc"]) if pfd else "-", fmt(pfd["f1_val"]) if pfd else "-"])
    out.append(markdown_table(["mapping", "parameters (seed 0)", "mean alpha", "CPFD ROC", "CPFD PR", "CPFD F1",
                               "PFD@mean-alpha ROC", "PFD@mean-alpha PR", "PFD@mean-alpha F1"], rows))
    out += ["", f"PFD at alpha {options.pfd_alpha:g}: ROC {fmt(models['pfd']['roc_auc'])}, PR {fmt(models['pfd']['pr_auc'])}, "
            f"F1 {fmt(models['pfd']['f1_val'])}. Parameters not given were calibrated from the teacher-loss quantiles "
            "(docs/method.md). Where a mapping's mean alpha is PFD's own alpha, PFD at that alpha is vanilla PFD and "
            "is not trained twice (= PFD).", ""]

    if t.get("confidence_signals"):
        out += [f"## CPFD ({options.primary_mapping}) by confidence signal, each beside PFD at the same mean alpha", ""]
        rows = []
        for key, row in t["confidence_signals"].items():
            pfd = row["pfd_matched"]
            rows.append([key.replace("-cf", " (cross-fitted dump)"), fmt(row["mean_alpha"]), fmt(row["cpfd"]["roc_auc"]),
                         fmt(row["cpfd"]["pr_auc"]), fmt(pfd["roc_auc"]) if pfd else "-", fmt(pfd["pr_auc"]) if pfd else "-"])
        out.append(markdown_table(["signal", "mean alpha", "CPFD ROC", "CPFD PR", "PFD@mean-alpha ROC",
                                   "PFD@mean-alpha PR"], rows))
        out += ["", "The signal the mapping reads (`distill --confidence`, docs/method.md): `loss` against the stored "
                "label (the paper's), `entropy` or `margin` of the teacher's prediction (no label). The verdicts are "
                "in \"What the data showed\".", ""]

    out += [f"## Table 7: temperature ({options.primary_mapping})", ""]
    out.append(markdown_table(["T"] + [COLUMN_NAMES[m] for m in METRICS],
                              [[f"T={k}"] + [fmt(v[m]) for m in METRICS] for k, v in t["table7"].items()]))
    if len(t["table7"]) == 1:
        out += ["", "Only T=1 was run; pass `--temperatures 0.5,1,2` for the ablation."]
    out.append("")

    out += table1_markdown("## Table 1: mean teacher loss by baseline-student outcome (eval split)", t["table1"])
    out += ["Teacher: DF-X-VLM dumped on the eval split; student: the baseline X-VLM's eval predictions, "
            "correct or not at its validation threshold. Figure 3: `fig_teacher_loss.png`.", "",
            "![teacher loss](fig_teacher_loss.png)", ""]

    if options.cross_fit:
        out += cross_fit_markdown(t, models, options)

    if t["table5"]:
        out += ["## Table 5 (offline): hit rate at the baseline's recall volume", ""]
        rows = [[name, fmt(v["hit_rate"]), str(v["recalled"][0])] for name, v in t["table5"].items()]
        out.append(markdown_table(["model", "hit rate", "videos recalled (seed 0)"], rows))
        base = t["table5"]["baseline"]["hit_rate"]["mean"]
        if t["table5"]["baseline"]["recalled"][0] == 0:
            out += ["", "The baseline recalls no eval video at its validation threshold here, so the protocol has no "
                    "volume to match: the hit rates are undefined (see Table 3's threshold-free metrics)."]
        out += ["", "Each model recalls as many eval videos as the baseline does at its validation threshold (its "
                "top-k by score); the hit rate is the share of positives among them, the paper's online A/B protocol "
                "replayed on the eval split." + (" Relative to X-VLM: " + ", ".join(
                    f"{n} {v['hit_rate']['mean'] / base - 1:+.1%}" for n, v in t["table5"].items()
                    if n != "baseline" and not math.isnan(v["hit_rate"]["mean"])) + "."
                    if base and not math.isnan(base) else ""), ""]

    c = t["table4"]
    exported = bool(c.get("student_onnx")) and "failed" not in c["student_onnx"]
    out += ["## Table 4: serving cost, teacher vs student (measured on this machine)", ""]
    out.append(markdown_table(
        ["", "parameters", "ms / video (batch 1)", "ms / video (batch 32)", "dense features needed at serving",
         "of them privileged"],
        [["DF-X-VLM (teacher)", f"{c['teacher']['parameters']:,}", latency(c["teacher"], "batch1", 2),
          latency(c["teacher"], "batched", 3), str(c["dense_features_needed"]["teacher"]),
          str(c["privileged_features_needed"]["teacher"])],
         ["CPFD X-VLM (student)", f"{c['student']['parameters']:,}", latency(c["student"], "batch1", 2),
          latency(c["student"], "batched", 3), str(c["dense_features_needed"]["student"]), "0"],
         *([["the student exported (`cpfd export`), onnxruntime CPU", f"{c['student']['parameters']:,}",
             latency(c["student_onnx"], "batch1", 2), latency(c["student_onnx"], "batched", 3),
             str(c["dense_features_needed"]["student"]), "0"]] if exported else [])]))
    out += ["", f"Each latency: the median of {c['student'].get('repeats', 3)} repeats over the same "
            f"{c['student']['videos']} eval videos, (fastest-slowest) beside it; this machine's other load moves them."]
    if exported:
        o = c["student_onnx"]
        out += ["", f"The exported student answers {c['student']['ms_per_video_batch1'] / o['ms_per_video_batch1']:.1f}x "
                f"sooner than the PyTorch student at batch 1 and {c['student']['ms_per_video_batched'] / o['ms_per_video_batched']:.1f}x "
                f"at batch {o['videos']}, on the same rows, with probabilities within {o['parity_max_abs_diff_probs']:.1g} of "
                "PyTorch's (docs/serving.md)."]
    else:
        why = (c["student_onnx"] or {}).get("failed") or "`pip install 'cpfd[export]'` (onnx, onnxscript, onnxruntime)"
        out += ["", f"The exported student is not measured: {why}."]
    out += ["", f"Teacher / student: {c['parameter_ratio']:.2f}x parameters, {c['latency_ratio_batch1']:.2f}x latency at "
            "batch 1. The model latency understates the teacher's real cost: at serving time each of its "
            f"{c['privileged_features_needed']['teacher']} privileged features must first be computed or fetched "
            "(report counts, legacy model scores, engagement), which is the cost the paper's Table 4 measures; the "
            "student reads only the non-privileged features known at upload.", ""]

    out += ["## Figure 5: alpha against teacher loss", "", "![alpha](fig_alpha.png)", ""]
    out += ["## Training curves (seed 0)", "",
            "Left: each model's validation ROC AUC per epoch, the kept epoch circled (the best on validation; ties "
            "go to the later epoch). Right: PFD's and CPFD's cross-entropy and raw distillation term per logged "
            "step, from each folder's `metrics.jsonl` (`--log-every`).", "", "![training curves](fig_training.png)", ""]
    out += ["## How to reproduce", "", f"```\n{report['command']}\n```", "",
            "Model folders and dumps are under `seed-N/`, each model's eval metrics and predictions under `seed-N/eval/`; "
            "`report.json` holds every number above, the comparisons' per-seed differences and intervals included.", ""]
    return "\n".join(out)


def latency(timing: dict, which: str, decimals: int) -> str:
    """`2.51 (2.40-2.70)`: the median milliseconds per video and the fastest and slowest repeat."""
    median = timing[f"ms_per_video_{which}"]
    spread = timing.get(f"ms_per_video_{which}_range")
    return f"{median:.{decimals}f}" + (f" ({spread[0]:.{decimals}f}-{spread[1]:.{decimals}f})" if spread else "")


def caveats_markdown(report: dict) -> list[str]:
    """What undermines the tables above: warnings the trainings printed, and pairs of models that are
    practically the same model."""
    out = []
    same = report.get("same_models") or {}
    if same:
        out += ["**Practically the same model:** " + "; ".join(
            f"{label} (mean |difference| of eval probabilities {d:.4f})" for label, d in same.items())
            + ". A comparison between them measures nothing. When PFD matches X-VLM, the teacher's soft labels "
              "carry nothing beyond the labels, typically a teacher that memorised its training rows (a small "
              "corpus): try `--cross-fit K`, or a higher distillation temperature (`--temperatures`).", ""]
    noted = report.get("warnings") or {}
    if noted:
        out += ["**Warnings the steps printed** (each undermines the results of the model it names):", ""]
        out += [f"- `{step}`: {line}" for step, lines in sorted(noted.items()) for line in lines]
        out.append("")
    return out


def table1_markdown(heading: str, tables: list[dict]) -> list[str]:
    groups = tables[0]["groups"]
    rows = []
    for outcome in ("correct", "incorrect"):
        cells = []
        for g in groups:
            means = [s[outcome][g]["mean_teacher_loss"] for s in tables]
            counts = [s[outcome][g]["count"] for s in tables]
            cells.append(f"{fmt(summarize(means))} (n={sum(counts) // len(counts)})")
        rows.append([f"student {outcome}"] + cells)
    return [heading, "", markdown_table(["mean teacher loss @"] + groups, rows), ""]


def cross_fit_markdown(t: dict, models: dict, options) -> list[str]:
    out = [f"## Cross-fitted teacher ({options.cross_fit} folds): in-sample beside out-of-fold teacher losses", "",
           "The in-sample dump scores each training row with the teacher that trained on it; the cross-fitted dump "
           "with the fold teacher that never saw it (docs/method.md, \"Cross-fitted teacher dumps\"). PFD and CPFD "
           "from each are in Table 3 and in the comparisons above.", ""]
    if t["crossfit_train_loss"]:
        rows = []
        titles = list(t["crossfit_train_loss"])
        keys = list(t["crossfit_train_loss"][titles[0]])
        for key in keys:
            rows.append([key] + [f"{t['crossfit_train_loss'][title][key]['mean']:.4f} "
                                 f"(n={t['crossfit_train_loss'][title][key]['count']})"
                                 if t["crossfit_train_loss"][title][key]["mean"] is not None else "-" for title in titles])
        out += ["Mean teacher loss on the train-split rows (seed 0), by label and, where the synthetic corpus knows it, "
                "by whether annotators flipped the label (for analysis only; no model reads it):", "",
                markdown_table(["rows"] + titles, rows), "", "![teacher loss, in-sample and cross-fitted]"
                "(fig_teacher_loss_crossfit.png)", ""]
    out += table1_markdown("### Table 1 with the cross-fitted teacher (eval split: the mean of the fold teachers)",
                           t["table1_crossfit"])
    return out


def format_experiment_summary(report: dict, out: Path) -> str:
    """What `cpfd experiment` prints at the end: Table 3's means, the verdicts, and where the report is."""
    lines = [f"{label:<44} ROC {row['roc_auc']['mean']:.4f}  PR {row['pr_auc']['mean']:.4f}  "
             f"F1 {row['f1_val']['mean']:.4f}" for label, row in report["tables"]["table3"]["models"].items()]
    for label, found in report["comparisons"].items():
        lines.append(f"{label}: " + ", ".join(f"{name} {v['verdict']}" for name, v in
                                              (("ROC AUC", found["metrics"]["roc_auc"]),
                                               ("PR AUC", found["metrics"]["pr_auc"]), ("F1", found["metrics"]["f1"]))))
    return "\n".join(lines + [f"wrote {Path(out) / 'report.md'}"])
