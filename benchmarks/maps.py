"""Maps, not points: where PFD and CPFD pay off, over the synthetic generator's knobs (issue 13, item 4).

    .venv/bin/python benchmarks/maps.py --out runs/maps --seeds 3 --jobs 2                 # everything
    .venv/bin/python benchmarks/maps.py --out runs/maps --only presets,strength            # some parts
    .venv/bin/python benchmarks/maps.py --out runs/maps --summary                          # tables + figures only

Every point is one `cpfd experiment` (defaults unless said; one torch thread each, `--jobs` at a
time), so every number comes with paired intervals over seeds and eval rows (experiment/stats.py):

    presets    the five presets, the default experiment plus --cross-fit 3 (docs/results.md's
               main table, and in-sample against cross-fitted teacher dumps)
    strength   task1, --privileged-strength 0, 0.5, 1, 2, 4, for --story latent and consequence:
               the gain of PFD and CPFD (exp-decay) over X-VLM against the privileged features'
               predictive power (Yang et al., NeurIPS 2022, find PFD's gain non-monotone in it)
    size       task1, 500, 1,000, 2,000 and 5,000 training videos (10x)
    alpha      on the strength=1 latent point's teachers and dumps: PFD at alpha 0.25, 0.5, 0.75,
               0.9, each beside CPFD at the same mean alpha (threshold at the median teacher loss,
               alpha_high = a + d, alpha_low = a - d, d = min(0.4, a, 1 - a): half the rows on
               each side, so the mean is exactly a)
    confidence task1, --label-noise 0, 0.05, 0.1, 0.2 x --privileged-missing 0, 0.3, 0.6 (issue 27),
               each with --cross-fit 3 --confidences loss,entropy: PFD, CPFD (exp-decay) on the loss
               and on the teacher's entropy, each beside PFD at its mean alpha, in-sample and
               cross-fitted. `--cells N0:M0,N1:M1` runs only those (label noise : missing) cells.

Steps already done are reused (each experiment folder resumes), so rerunning finishes a cut run.
It writes OUT/summary.json, OUT/summary.md and OUT/fig_map_*.png.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

PRESETS = ["task1", "task2", "task3", "task4", "task5"]
STRENGTHS = [0.0, 0.5, 1.0, 2.0, 4.0]
STORIES = ["latent", "consequence"]
SIZES = [500, 1000, 2000, 5000]
LABEL_NOISE = [0.0, 0.05, 0.1, 0.2]
MISSING = [0.0, 0.3, 0.6]
CONFIDENCE_ARGS = ["--mappings", "exp-decay", "--cross-fit", 3, "--confidences", "loss,entropy"]
ALPHAS = [0.25, 0.5, 0.75, 0.9]
MAP_ARGS = ["--mappings", "exp-decay", "--no-matched-pfd"]  # a map point: teacher, X-VLM, PFD, CPFD
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cpfd(*args) -> None:
    done = subprocess.run([sys.executable, "-m", "cpfd.cli", *map(str, args)], env=ENV, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"cpfd {' '.join(map(str, args))} failed:\n{done.stderr[-2000:]}")


def experiment(out: Path, seeds: int, *args) -> Path:
    start = time.perf_counter()  # one step at a time in each: the experiments run side by side (--jobs)
    cpfd("experiment", "--out", out, "--seeds", seeds, "--threads", 1, "--jobs", 1, "--quiet", *args)
    print(f"{time.perf_counter() - start:7.0f} s  {out}", flush=True)
    return out


def confidence_cells(cells: str | None) -> list[tuple[float, float]]:
    """The (label noise, privileged missing) cells of the confidence map: all, or those named."""
    if not cells:
        return [(n, m) for n in LABEL_NOISE for m in MISSING]
    return [(float(n), float(m)) for n, m in (c.split(":") for c in cells.split(","))]


def confidence_point(root: Path, noise: float, missing: float) -> Path:
    return root / "confidence" / f"N{noise:g}-M{missing:g}"


def points(root: Path, seeds: int, only: set, cells: str | None = None) -> list[tuple[Path, list]]:
    todo = []
    if "confidence" in only:
        todo += [(confidence_point(root, n, m), ["--preset", "task1", "--label-noise", n, "--privileged-missing", m,
                                                 *CONFIDENCE_ARGS]) for n, m in confidence_cells(cells)]
    if "presets" in only:
        todo += [(root / "presets" / p, ["--preset", p, "--cross-fit", 3]) for p in PRESETS]
    if "strength" in only or "alpha" in only:
        todo += [(root / "strength" / f"{story}-S{s:g}", ["--preset", "task1", "--story", story,
                                                          "--privileged-strength", s, *MAP_ARGS])
                 for s in STRENGTHS for story in STORIES if "strength" in only or (story, s) == ("latent", 1.0)]
    if "size" in only:
        todo += [(root / "size" / f"n{n}", ["--preset", "task1", "--train-samples", n, *MAP_ARGS]) for n in SIZES]
    return todo


# ---- the alpha sweep, on an existing point's teachers and dumps ---------------------------------

def alpha_sweep(root: Path, seeds: int) -> None:
    point = root / "strength" / "latent-S1"
    corpus = point / "corpus"
    for seed in range(seeds):
        seed_dir = point / f"seed-{seed}"
        out = root / "alpha" / f"seed-{seed}"
        for a in ALPHAS:
            d = min(0.4, a, 1 - a)
            runs = {f"pfd-{a:g}": ["--mapping", "constant", "--alpha", a],
                    f"cpfd-{a:g}": ["--mapping", "threshold", "--alpha-high", a + d, "--alpha-low", a - d]}
            for name, args in runs.items():
                model = out / name
                if not (model / "training.json").exists() or not json.loads((model / "training.json").read_text()).get("finished"):
                    cpfd("distill", corpus, seed_dir / "dump", "--out", model, *args, "--seed", seed, "--lr", "1e-3",
                         "--overwrite", "--quiet")
                if not (out / f"{name}.parquet").exists():
                    cpfd("evaluate", model, corpus, "--out", out / f"{name}.parquet", "--json", "--quiet")
        print(f"alpha sweep, seed {seed}: done", flush=True)


# ---- summary ------------------------------------------------------------------------------------

def gains(report: dict) -> dict:
    """PFD / CPFD minus X-VLM (and CPFD minus PFD) per metric: mean paired difference, intervals, verdict."""
    out = {}
    for label in ("PFD vs X-VLM", "CPFD vs X-VLM", "CPFD vs PFD", "CPFD vs PFD at its mean alpha",
                  "cross-fitted CPFD vs in-sample CPFD", "cross-fitted PFD vs in-sample PFD",
                  "cross-fitted CPFD vs cross-fitted PFD", *CONFIDENCE_LABELS):
        found = report["comparisons"].get(label)
        if found:
            out[label] = {m: {"mean": v["seeds"]["mean"], "seed_interval": v["seeds"]["interval"],
                              "row_interval": v["rows"]["interval"], "verdict": v["verdict"]}
                          for m, v in found["metrics"].items()}
    t3 = report["tables"]["table3"]
    models = {label: {m: (row[m]["mean"], row[m]["std"]) for m in ("roc_auc", "pr_auc", "f1_val")}
              for label, row in t3["models"].items()}
    return {"gains": out, "models": models, "ceiling": t3.get("ceiling_roc_auc"), "seeds": report["seeds"]}


def alpha_summary(root: Path, seeds: int) -> dict:
    from cpfd.experiment.stats import compare

    def probs(path):
        import pyarrow.parquet as pq

        t = pq.read_table(path, columns=["label", "prob"])
        return t.column("label").to_numpy(), t.column("prob").to_numpy().astype(np.float64)

    point = root / "strength" / "latent-S1"
    out = {}
    for a in ALPHAS:
        rows = {}
        for name in (f"pfd-{a:g}", f"cpfd-{a:g}", "baseline"):
            paths = [(point / f"seed-{s}" / "eval" / "baseline.parquet") if name == "baseline"
                     else (root / "alpha" / f"seed-{s}" / f"{name}.parquet") for s in range(seeds)]
            if not all(p.exists() for p in paths):
                return out
            loaded = [probs(p) for p in paths]
            thresholds = []
            for s in range(seeds):
                record = (point / f"seed-{s}" / "baseline" if name == "baseline" else root / "alpha" / f"seed-{s}" / name)
                thresholds.append(json.loads((record / "training.json").read_text()).get("threshold") or 0.5)
            rows[name] = (loaded[0][0], np.stack([p for _, p in loaded]), thresholds)
        labels = rows["baseline"][0]
        found = {}
        for label, a_name, b_name in (("PFD vs X-VLM", f"pfd-{a:g}", "baseline"), ("CPFD vs X-VLM", f"cpfd-{a:g}", "baseline"),
                                      ("CPFD vs PFD at the same mean alpha", f"cpfd-{a:g}", f"pfd-{a:g}")):
            c = compare(labels, rows[a_name][1], rows[b_name][1], thresholds_a=rows[a_name][2],
                        thresholds_b=rows[b_name][2], replicates=1000, seed=0)
            found[label] = {m: {"mean": v["seeds"]["mean"], "seed_interval": v["seeds"]["interval"],
                                "row_interval": v["rows"]["interval"], "verdict": v["verdict"],
                                "a": float(np.mean(v["a"])), "b": float(np.mean(v["b"]))}
                            for m, v in c["metrics"].items()}
        out[f"{a:g}"] = found
    return out


def confidence_figure(path: Path, summary: dict) -> None:
    """Per cell that has run, in-sample and cross-fitted: the ROC AUC differences of the confidence
    map's columns, mean over seeds, with the 95% interval over seeds (thin) and over eval rows (thick)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(key, point) for key, point in summary.get("confidence", {}).items() if point is not None]
    if not cells:
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    colours = ("#0072B2", "#E69F00", "#009E73", "#CC79A7")
    for ax, cross_fitted in zip(axes, (False, True)):
        columns = CONFIDENCE_COLUMNS[cross_fitted]
        width = 0.8 / len(columns)
        for j, ((name, label), colour) in enumerate(zip(columns, colours)):
            for i, (key, point) in enumerate(cells):
                g = point["gains"].get(label, {}).get("roc_auc")
                if not g or g["mean"] is None:
                    continue
                x = i + (j - (len(columns) - 1) / 2) * width
                for interval, lw in ((g["seed_interval"], 1.0), (g["row_interval"], 4.0)):
                    if interval:
                        ax.plot([x, x], interval, color=colour, linewidth=lw, alpha=0.8)
                ax.plot([x], [g["mean"]], "o", color=colour, label=name if i == 0 else None)
        ax.axhline(0, color="0.5", linewidth=0.8)
        ax.set_xticks(range(len(cells)))
        ax.set_xticklabels([f"noise {k.split('/')[0]}\nmissing {k.split('/')[1]}" for k, _ in cells])
        ax.set_title(f"{'cross-fitted' if cross_fitted else 'in-sample'} teacher dump")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("ROC AUC difference (thin: seeds interval, thick: rows)")
    fig.suptitle("task1: CPFD on the loss and on the entropy, each beside PFD at its mean alpha")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def resolved_mark(g: dict) -> str:
    """'**' where both 95% intervals (over eval rows and over seeds) exclude 0, '*' where the rows'
    alone does, '+' where the seeds' alone does, '' where neither."""
    rows, seeds = (bool(i) and (i[0] > 0 or i[1] < 0) for i in (g["row_interval"], g["seed_interval"]))
    return "**" if rows and seeds else "*" if rows else "+" if seeds else ""


GRID_COLUMNS = ("CPFD(loss) - PFD@mean", "CPFD(entropy) - PFD@mean", "CPFD(entropy) - CPFD(loss)")


def confidence_grid_figure(path: Path, summary: dict) -> None:
    """The confidence map as a map: label noise (rows) x privileged missing (columns), one panel per
    comparison and dump (in-sample, cross-fitted). Colour and number: the mean ROC AUC difference over
    seeds; one star where the interval over eval rows excludes 0, two where the seeds' does too
    (a plus where only the seeds' does);
    grey where the cell has not run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = summary.get("confidence", {})
    if not any(points.values()):
        return
    fig, axes = plt.subplots(2, len(GRID_COLUMNS), figsize=(4.2 * len(GRID_COLUMNS), 7.2), sharex=True, sharey=True)
    limit = 0.05  # ROC AUC points on either side of 0: the colour scale every panel shares
    for row, cross_fitted in enumerate((False, True)):
        labels = dict(CONFIDENCE_COLUMNS[cross_fitted])
        for col, name in enumerate(GRID_COLUMNS):
            ax = axes[row, col]
            grid = np.full((len(LABEL_NOISE), len(MISSING)), np.nan)
            for i, noise in enumerate(LABEL_NOISE):
                for j, missing in enumerate(MISSING):
                    point = points.get(f"{noise:g}/{missing:g}")
                    g = (point or {}).get("gains", {}).get(labels[name], {}).get("roc_auc")
                    if not g or g["mean"] is None:
                        ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="0.4")
                        continue
                    grid[i, j] = g["mean"]
                    ax.text(j, i, f"{g['mean']:+.3f}{resolved_mark(g)}", ha="center", va="center", fontsize=9,
                            color="white" if abs(g["mean"]) > 0.6 * limit else "black")
            shown = np.ma.masked_invalid(grid)
            cmap = plt.get_cmap("RdBu").with_extremes(bad="0.9")
            image = ax.imshow(shown, cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
            ax.set_xticks(range(len(MISSING)), [f"{m:g}" for m in MISSING])
            ax.set_yticks(range(len(LABEL_NOISE)), [f"{n:g}" for n in LABEL_NOISE])
            ax.set_title(f"{name}\n{'cross-fitted' if cross_fitted else 'in-sample'} dump", fontsize=9)
    fig.supxlabel("privileged features missing (share of videos)")
    fig.supylabel("label noise (flip rate)")
    fig.colorbar(image, ax=axes, shrink=0.6, label="ROC AUC difference, mean over seeds")
    fig.suptitle("task1 confidence map: * the eval-rows interval excludes 0, ** the seeds' interval too, "
                 "+ the seeds' alone")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def figure(path: Path, xs, series: dict, xlabel: str, title: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {label: points for label, points in series.items() if any(points)}
    if not series:  # no point of this map has run yet
        return
    fig, ax = plt.subplots(figsize=(6.4, 4))
    xs = np.asarray(xs, dtype=float)
    span = np.log(xs.max() / xs.min()) if log_x else xs.max() - xs.min()
    for i, (label, points) in enumerate(series.items()):
        ys = [p["mean"] if p else np.nan for p in points]
        lo = [p["mean"] - p["seed_interval"][0] if p and p["seed_interval"] else 0 for p in points]
        hi = [p["seed_interval"][1] - p["mean"] if p and p["seed_interval"] else 0 for p in points]
        shift = 0.012 * span * (i - (len(series) - 1) / 2)  # side by side, so the intervals do not hide each other
        ax.errorbar(xs * np.exp(shift) if log_x else xs + shift, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    if log_x:
        ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g}" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("ROC AUC gain over X-VLM (95% interval over seeds)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cell(g: dict | None) -> str:
    """'+0.0290 [-0.003, +0.061] [+0.010, +0.047] inconclusive': the mean paired difference, its 95%
    intervals over seeds and over eval rows, and the verdict (bold when resolved)."""
    if not g:
        return "-"
    if g["mean"] is None:  # the metric is undefined on this point's eval rows (one class only)
        return "n/a"

    def interval(i):
        return f"[{i[0]:+.3f}, {i[1]:+.3f}]" if i else "[n/a]"

    verdict = g["verdict"] if g["verdict"] == "inconclusive" else f"**{g['verdict']}**"
    return f"{g['mean']:+.4f} {interval(g['seed_interval'])} {interval(g['row_interval'])} {verdict}"


COLUMNS = (("PFD - X-VLM", "PFD vs X-VLM"), ("CPFD - X-VLM", "CPFD vs X-VLM"), ("CPFD - PFD", "CPFD vs PFD"))


def point_table(title: str, key: str, rows: list[tuple[str, dict | None]], metric: str = "roc_auc") -> list[str]:
    """One markdown table: a row per map point, the baseline's and teacher's metric, then the gains."""
    lines = [f"### {title}", "", f"| {key} | X-VLM | teacher | " + " | ".join(c for c, _ in COLUMNS) + " |",
             "|---" * (3 + len(COLUMNS)) + "|"]
    for name, point in rows:
        if point is None:
            lines.append(f"| {name} | not run |" + " |" * (1 + len(COLUMNS)))
            continue
        models = point["models"]
        base, teacher = models["X-VLM"][metric][0], models["DF-X-VLM (teacher)"][metric][0]
        gains = [cell(point["gains"].get(label, {}).get(metric)) for _, label in COLUMNS]
        lines.append(f"| {name} | {base:.4f} | {teacher:.4f} | " + " | ".join(gains) + " |")
    return lines + [""]


def cpfd_ahead(summary: dict) -> list[str]:
    """Every point and metric where CPFD - PFD has an interval (over seeds or over rows) above 0."""
    pairs = [(f"preset {p}", v) for p, v in summary["presets"].items()]
    pairs += [(f"story {story}, strength {s}", v) for story, points in summary["strength"].items() for s, v in points.items()]
    pairs += [(f"{n} training videos", v) for n, v in summary["size"].items()]
    compared = [(f"{name}, {label}", (point or {}).get("gains", {}).get(label) or {}) for name, point in pairs
                for label in ("CPFD vs PFD", "CPFD vs PFD at its mean alpha", "cross-fitted CPFD vs cross-fitted PFD")]
    compared += [(f"alpha sweep at {a}, CPFD vs PFD at the same mean alpha", point["CPFD vs PFD at the same mean alpha"])
                 for a, point in summary["alpha"].items()]
    found = []
    for name, metrics in compared:
        for metric, g in metrics.items():
            above = [which for which, i in (("seeds", g["seed_interval"]), ("rows", g["row_interval"])) if i and i[0] > 0]
            if above:
                found.append(f"- {name}, {metric}: {cell(g)} (above 0 over {' and '.join(above)})")
    return found or ["- nowhere among the points that have run"]


# The confidence map's comparisons (experiment.report.comparisons_to_make's labels): the columns of
# its two tables, in-sample and cross-fitted teacher dumps.
CONFIDENCE_COLUMNS = {
    False: (("PFD - X-VLM", "PFD vs X-VLM"), ("CPFD(loss) - PFD@mean", "CPFD vs PFD at its mean alpha"),
            ("CPFD(entropy) - PFD@mean", "CPFD (entropy) vs PFD at its mean alpha"),
            ("CPFD(entropy) - CPFD(loss)", "CPFD (entropy) vs CPFD (loss)")),
    True: (("CPFD(loss) - X-VLM", "cross-fitted CPFD vs X-VLM"),
           ("CPFD(loss) - PFD@mean", "cross-fitted CPFD vs PFD at its mean alpha"),
           ("CPFD(entropy) - PFD@mean", "cross-fitted CPFD (entropy) vs PFD at its mean alpha"),
           ("CPFD(entropy) - CPFD(loss)", "cross-fitted CPFD (entropy) vs cross-fitted CPFD (loss)")),
}
CONFIDENCE_LABELS = tuple(label for columns in CONFIDENCE_COLUMNS.values() for _, label in columns)


def confidence_table(summary: dict, cross_fitted: bool) -> list[str]:
    """One row per (label noise, missing) cell that has run: ROC AUC differences, mean [seeds] [rows] verdict."""
    columns = CONFIDENCE_COLUMNS[cross_fitted]
    lines = [f"### Confidence map, {'cross-fitted' if cross_fitted else 'in-sample'} teacher dump (task1, ROC AUC)", "",
             "| label noise | privileged missing | X-VLM | " + " | ".join(c for c, _ in columns) + " |",
             "|---" * (3 + len(columns)) + "|"]
    for key, point in summary.get("confidence", {}).items():
        if point is None:
            continue
        noise, missing = key.split("/")
        base = point["models"]["X-VLM"]["roc_auc"][0]
        lines.append(f"| {noise} | {missing} | {base:.4f} | "
                     + " | ".join(cell(point["gains"].get(label, {}).get("roc_auc")) for _, label in columns) + " |")
    return lines + [""]


def summary_markdown(summary: dict) -> str:
    """The map's tables (ROC AUC; cells: mean paired difference, 95% interval over seeds, over eval
    rows, verdict), the alpha sweep, and where CPFD is ahead of PFD."""
    lines = ["# Maps (benchmarks/maps.py)", "",
             "ROC AUC of X-VLM and the teacher (mean over seeds); differences as mean [95% interval over seeds] "
             "[95% paired bootstrap interval over eval rows] verdict.", ""]
    lines += point_table("Presets", "preset", list(summary["presets"].items()))
    for story, points in summary["strength"].items():
        lines += point_table(f"Privileged strength, story {story} (task1)", "strength", list(points.items()))
    lines += point_table("Training-set size (task1)", "training videos", list(summary["size"].items()))
    lines += ["### PFD's alpha swept, CPFD (threshold) at the same mean alpha (task1, latent, S = 1)", "",
              "| alpha | PFD | CPFD | PFD - X-VLM | CPFD - X-VLM | CPFD - PFD at the same mean alpha |",
              "|---|---|---|---|---|---|"]
    for a, point in summary["alpha"].items():
        pfd, cpfd_ = point["PFD vs X-VLM"]["roc_auc"], point["CPFD vs X-VLM"]["roc_auc"]
        lines.append(f"| {a} | {pfd['a']:.4f} | {cpfd_['a']:.4f} | {cell(pfd)} | {cell(cpfd_)} | "
                     f"{cell(point['CPFD vs PFD at the same mean alpha']['roc_auc'])} |")
    if not summary["alpha"]:
        lines.append("| not run | | | | | |")
    lines += ["", "### Where CPFD is ahead of PFD with an interval above 0 (any metric)", "", *cpfd_ahead(summary), ""]
    if any(v is not None for v in summary.get("confidence", {}).values()):
        lines += confidence_table(summary, cross_fitted=False) + confidence_table(summary, cross_fitted=True)
    return "\n".join(lines)


def summarize(root: Path, seeds: int) -> dict:
    def load(folder: Path):
        report = folder / "report.json"
        return gains(json.loads(report.read_text())) if report.exists() else None

    summary = {"presets": {p: load(root / "presets" / p) for p in PRESETS},
               "strength": {story: {f"{s:g}": load(root / "strength" / f"{story}-S{s:g}") for s in STRENGTHS}
                            for story in STORIES},
               "size": {str(n): load(root / "size" / f"n{n}") for n in SIZES},
               "alpha": alpha_summary(root, seeds),
               "confidence": {f"{n:g}/{m:g}": load(confidence_point(root, n, m)) for n in LABEL_NOISE for m in MISSING}}
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    (root / "summary.md").write_text(summary_markdown(summary))

    def roc(point, label):
        return (point or {}).get("gains", {}).get(label, {}).get("roc_auc")

    series = {}
    for story in STORIES:
        for label, name in (("PFD vs X-VLM", "PFD"), ("CPFD vs X-VLM", "CPFD")):
            series[f"{name}, story {story}"] = [roc(summary["strength"][story][f"{s:g}"], label) for s in STRENGTHS]
    figure(root / "fig_map_strength.png", STRENGTHS, series, "privileged strength",
           "task1: distillation gain against the privileged features' predictive power")
    figure(root / "fig_map_size.png", SIZES, {name: [roc(summary["size"][str(n)], label) for n in SIZES]
                                             for label, name in (("PFD vs X-VLM", "PFD"), ("CPFD vs X-VLM", "CPFD"))},
           "training videos", "task1: distillation gain against the training-set size", log_x=True)
    confidence_figure(root / "fig_map_confidence.png", summary)
    confidence_grid_figure(root / "fig_map_confidence_grid.png", summary)
    if summary["alpha"]:
        figure(root / "fig_map_alpha.png", ALPHAS,
               {name: [summary["alpha"].get(f"{a:g}", {}).get(label, {}).get("roc_auc") for a in ALPHAS]
                for label, name in (("PFD vs X-VLM", "PFD at alpha"), ("CPFD vs X-VLM", "CPFD (threshold) at mean alpha"))},
               "alpha (mean alpha for CPFD)", "task1: PFD's alpha swept, CPFD at the same mean alpha")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/maps"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="presets,strength,size,alpha,confidence")
    parser.add_argument("--summary", action="store_true", help="only summarize what is there")
    parser.add_argument("--cells", default=None, help="confidence map: only these label-noise:missing cells, e.g. 0.1:0")
    args = parser.parse_args()
    if args.summary and not args.out.is_dir():
        parser.error(f"--out {args.out}: no such folder; run the maps first")
    only = set(args.only.split(","))
    if not args.summary:
        print(f"# {' '.join(sys.argv)}   ({os.cpu_count()} CPUs, {args.jobs} experiments at a time, 1 thread each)")
        with ThreadPoolExecutor(args.jobs) as pool:
            for future in [pool.submit(experiment, out, args.seeds, *a)
                           for out, a in points(args.out, args.seeds, only, args.cells)]:
                future.result()
        if "alpha" in only:
            alpha_sweep(args.out, args.seeds)
    summarize(args.out, args.seeds)
    print(f"wrote {args.out / 'summary.json'}, {args.out / 'summary.md'} and the figures")


if __name__ == "__main__":
    main()
