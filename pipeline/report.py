"""The experiment's report: the paper's Tables 1 and 3-7 and Figures 3 and 5 for one corpus.

`write_report` reads what the experiment steps wrote (each model's eval metrics and eval
predictions, the teacher dumps) and writes `report.json` (every number) and `report.md`
(the tables), plus `fig_teacher_loss.png` and `fig_alpha.png`. Nothing here trains or re-scores
a model except the serving-latency measurement of Table 4.
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

from cpfd.pipeline.experiment import eval_paths
from cpfd.storage.analysis import connect, inspect_dump
from cpfd.storage.atomic import atomic_write_bytes, atomic_write_json
from cpfd.storage.corpus import Corpus

METRICS = ("roc_auc", "pr_auc", "f1", "best_f1")
METRIC_NAMES = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "f1": "F1@0.5", "best_f1": "best F1"}


# ---------------------------------------------------------------------------------------------
# Small pure helpers
# ---------------------------------------------------------------------------------------------

def summarize(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one seed), and the values themselves."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return {
        "mean": statistics.fmean(clean) if clean else float("nan"),
        "std": statistics.stdev(clean) if len(clean) > 1 else None,
        "values": values,
    }


def fmt(summary: dict, bold: bool = False) -> str:
    if math.isnan(summary["mean"]):
        return "n/a"
    text = f"{summary['mean']:.4f}" + (f" ± {summary['std']:.4f}" if summary["std"] is not None else "")
    return f"**{text}**" if bold else text


def gap_closed(student: float, baseline: float, teacher: float) -> float | None:
    """(student - baseline) / (teacher - baseline): the share of the teacher's lead recovered."""
    if teacher - baseline == 0 or any(math.isnan(x) for x in (student, baseline, teacher)):
        return None
    return (student - baseline) / (teacher - baseline)


def hit_rate_at_matched_recall(baseline_probs: np.ndarray, probs: np.ndarray, labels: np.ndarray) -> dict:
    """Paper Table 5 replayed offline: each model recalls as many eval videos as the baseline does
    at its 0.5 threshold (its top-k by score); the hit rate is the precision of that set."""
    k = int((baseline_probs >= 0.5).sum())
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
    t = pq.read_table(path, columns=["label", "prob"])
    return {"label": t.column("label").to_numpy(), "prob": t.column("prob").to_numpy()}


def serving_latency(model_dir: Path, corpus: Corpus, device: str = "cpu", videos: int = 32, repeats: int = 3) -> dict:
    """Median milliseconds per video at batch size 1 and at batch size `videos`, on this machine,
    through the scoring path every command uses (`pipeline.scoring.score_batches`)."""
    from cpfd.pipeline.scoring import resolve_device, score_batches
    from cpfd.pipeline.stages import dataset_for, load_model

    model, tokenizer = load_model(model_dir)
    device = resolve_device(device)
    model.to(device)
    batch = next(iter(dataset_for(model, corpus, "eval", tokenizer, batch_size=videos)))
    n = len(batch["labels"])
    one = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(n)]
    score_batches(model, one[:1], device)  # warm-up
    single, batched = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in one:
            score_batches(model, [b], device)
        single.append((time.perf_counter() - start) / n * 1000)
        start = time.perf_counter()
        score_batches(model, [batch], device)
        batched.append((time.perf_counter() - start) / n * 1000)
    return {"ms_per_video_batch1": statistics.median(single), "ms_per_video_batched": statistics.median(batched),
            "parameters": sum(p.numel() for p in model.parameters()), "videos": n, "device": str(device)}


def teacher_loss_by_outcome(dump_dir: Path, predictions: Path) -> dict:
    """Teacher loss of every dumped row, split by (student correct?, label), via DuckDB."""
    con = connect(dump_dir, predictions=predictions)
    try:
        rows = con.execute(
            "SELECT p.pred = p.label, t.label, t.teacher_loss FROM teacher t "
            "JOIN predictions p USING (sample_id)"
        ).fetchnumpy()
    finally:
        con.close()
    values = list(rows.values())
    correct, label, loss = (np.asarray(v) for v in values)
    return {(bool(c), int(y)): loss[(correct == c) & (label == y)] for c in (True, False) for y in np.unique(label)}


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------

def figure_teacher_loss(groups: dict, classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_losses = np.concatenate([v for v in groups.values() if len(v)])
    lo, hi = max(all_losses.min(), 1e-6), max(all_losses.max(), 1e-5)
    bins = np.logspace(np.log10(lo), np.log10(hi), 40)
    fig, axes = plt.subplots(1, len(classes), figsize=(5 * len(classes), 3.6), squeeze=False)
    for ax, (y, name) in zip(axes[0], enumerate(classes)):
        for correct, color in ((True, "tab:green"), (False, "tab:red")):
            losses = groups.get((correct, y), np.zeros(0))
            if not len(losses):
                continue
            ax.hist(losses, bins=bins, alpha=0.6, color=color, density=True,
                    label=f"student {'correct' if correct else 'incorrect'} (n={len(losses)})")
        ax.set_xscale("log")
        ax.set_title(f"label {name}")
        ax.set_xlabel("teacher loss")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("density")
    fig.suptitle("Teacher loss by student correctness (eval split, baseline student, seed 0)")
    fig.tight_layout()
    save_figure(fig, path)


def figure_alpha(runs: dict, loss_max: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpfd.student.cpfd import alpha_from_loss

    losses = np.linspace(0, loss_max, 400)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, run in runs.items():
        params = ", ".join(f"{k}={v:.3g}" for k, v in run["params"].items())
        ax.plot(losses, alpha_from_loss(losses, run["mapping"], **run["params"]), label=f"{run['mapping']} ({params})")
    ax.set_xlabel("teacher loss")
    ax.set_ylabel("alpha")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    ax.set_title("Alpha as a function of teacher loss (parameters used, seed 0)")
    fig.tight_layout()
    save_figure(fig, path)


def save_figure(fig, path: Path) -> None:
    import io

    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------

def write_report(out: Path, corpus: Corpus, options, results: dict, model_options, train_options, command: str) -> dict:
    """Write report.json, report.md and the two figures; return the report dict."""
    seeds = sorted(results)
    seed0 = out / f"seed-{seeds[0]}"
    names = list(results[seeds[0]])
    models = {name: {m: summarize([results[s][name].get(m) for s in seeds]) for m in METRICS} for name in names}
    primary = f"cpfd-{options.primary_mapping}"
    provenance = (f"corpus `{corpus.path}` (task {corpus.meta.get('task')}, fingerprint {corpus.fingerprint[:12]}, "
                  f"{corpus.num_rows('train')} train / {corpus.num_rows('eval')} eval videos); "
                  f"seeds {', '.join(map(str, seeds))}; command `{command}`")

    # Table 3
    table3_models = [("X-VLM", "baseline"), ("DF-X-VLM (teacher)", "teacher"),
                     (f"PFD-X-VLM (alpha {options.pfd_alpha:g})", "pfd"), (f"CPFD-X-VLM ({options.primary_mapping})", primary)]
    students = ["baseline", "pfd", primary]
    best = {m: max(students, key=lambda n: models[n][m]["mean"] if not math.isnan(models[n][m]["mean"]) else -1) for m in METRICS}
    gaps = {name: {m: gap_closed(models[name][m]["mean"], models["baseline"][m]["mean"], models["teacher"][m]["mean"])
                   for m in METRICS} for name in ("pfd", primary)}
    table3 = {"models": {label: models[name] for label, name in table3_models}, "gap_closed": gaps}

    # Table 6 and 7
    table6 = {}
    for mapping in options.mappings:
        run = results[seeds[0]][f"cpfd-{mapping}"]["distillation"]
        table6[mapping] = {
            "cpfd": models[f"cpfd-{mapping}"],
            "mean_alpha": summarize([results[s][f"cpfd-{mapping}"]["distillation"]["mean_alpha"] for s in seeds]),
            "params_seed0": run["params"],
            "calibrated": run["calibrated"],
            "pfd_matched": models.get(f"pfd-{mapping}"),
        }
    table7 = {}
    for t in options.temperatures:
        name = primary if t == 1.0 else f"{primary}-T{t:g}"
        table7[f"{t:g}"] = models[name]

    # Table 1 and Figure 3: held-out videos, teacher loss vs the baseline student's correctness
    table1 = [inspect_dump(out / f"seed-{s}" / "dump-eval", predictions=eval_paths(out / f"seed-{s}", "baseline")[1])["table1"]
              for s in seeds]
    groups = teacher_loss_by_outcome(seed0 / "dump-eval", eval_paths(seed0, "baseline")[1])
    figure_teacher_loss(groups, corpus.classes, out / "fig_teacher_loss.png")
    loss_q99 = float(np.quantile(np.concatenate([v for v in groups.values() if len(v)]), 0.99))
    figure_alpha({m: results[seeds[0]][f"cpfd-{m}"]["distillation"] for m in options.mappings}
                 | {"pfd": results[seeds[0]]["pfd"]["distillation"]}, max(loss_q99, 1e-3), out / "fig_alpha.png")

    # Table 5 (offline replay of the online A/B protocol)
    table5 = {}
    for name in ["baseline", "teacher", "pfd", primary]:
        rates = []
        for s in seeds:
            base = read_predictions(eval_paths(out / f"seed-{s}", "baseline")[1])
            pred = read_predictions(eval_paths(out / f"seed-{s}", name)[1])
            rates.append(hit_rate_at_matched_recall(base["prob"], pred["prob"], pred["label"]))
        table5[name] = {"hit_rate": summarize([r["hit_rate"] for r in rates]), "recalled": [r["recalled"] for r in rates]}

    # Table 4 (serving cost, measured here)
    cost = {"teacher": serving_latency(seed0 / "teacher", corpus), "student": serving_latency(seed0 / primary, corpus)}
    table4 = {**cost, "dense_features_needed": {"teacher": len(corpus.privileged_features), "student": 0},
              "latency_ratio_batch1": cost["teacher"]["ms_per_video_batch1"] / cost["student"]["ms_per_video_batch1"],
              "parameter_ratio": cost["teacher"]["parameters"] / cost["student"]["parameters"]}

    report = {
        "command": command,
        "corpus": {"path": str(corpus.path), "task": corpus.meta.get("task"), "fingerprint": corpus.fingerprint,
                   "train_rows": corpus.num_rows("train"), "eval_rows": corpus.num_rows("eval"), "classes": corpus.classes},
        "seeds": seeds,
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items()},
        "model_options": asdict(model_options),
        "train_options": asdict(train_options),
        "results": {str(s): results[s] for s in seeds},
        "tables": {"table1": table1, "table3": table3, "table4": table4, "table5": table5, "table6": table6, "table7": table7},
    }
    atomic_write_json(out / "report.json", json.loads(json.dumps(report, default=str)))
    atomic_write_bytes(out / "report.md", render_markdown(report, models, table3_models, best, gaps, primary, provenance,
                                                         corpus, options).encode())
    return report


def format_experiment_summary(report: dict, out: Path) -> str:
    """What `cpfd experiment` prints at the end: Table 3's means, and where the report is."""
    lines = [f"{label:<28} ROC {row['roc_auc']['mean']:.4f}  PR {row['pr_auc']['mean']:.4f}  F1 {row['f1']['mean']:.4f}"
             for label, row in report["tables"]["table3"]["models"].items()]
    return "\n".join(lines + [f"wrote {Path(out) / 'report.md'}"])


def render_markdown(report, models, table3_models, best, gaps, primary, provenance, corpus, options) -> str:
    t = report["tables"]
    out = ["# CPFD experiment report", "", f"Produced from {provenance}.", "",
           "Metrics on the eval split; mean ± sample standard deviation over seeds (no ± with one seed). "
           "F1@0.5 is the positive-class F1 at probability 0.5, best F1 the best over thresholds. "
           "Each model's kept epoch is the one with the best eval ROC AUC (the same rule for every model).", ""]

    out += ["## Table 3: teacher, baseline, PFD and CPFD", ""]
    rows = []
    for label, name in table3_models:
        rows.append([label] + [fmt(models[name][m], bold=(best[m] == name)) for m in METRICS])
    out.append(markdown_table(["model"] + [METRIC_NAMES[m] for m in METRICS], rows))
    out += ["", "Gap closed, (student - X-VLM) / (teacher - X-VLM), on the means:", ""]
    out.append(markdown_table(["student"] + [METRIC_NAMES[m] for m in METRICS],
                              [[name] + [("n/a" if gaps[name][m] is None else f"{gaps[name][m]:+.1%}") for m in METRICS]
                               for name in gaps]))
    out += ["", f"Bold: the best student per metric. CPFD's mapping ({options.primary_mapping}) was fixed before the run "
            "(`--primary-mapping`); Table 6 has all mappings.", ""]

    out += ["## Table 6: mappings, each beside PFD at the same mean alpha", ""]
    rows = []
    for mapping, row in t["table6"].items():
        params = ", ".join(f"{k}={v:.3g}" for k, v in row["params_seed0"].items())
        pfd = row["pfd_matched"]
        rows.append([mapping, params, fmt(row["mean_alpha"]), fmt(row["cpfd"]["roc_auc"]), fmt(row["cpfd"]["pr_auc"]),
                     fmt(row["cpfd"]["f1"]), fmt(pfd["roc_auc"]) if pfd else "-", fmt(pfd["pr_auc"]) if pfd else "-",
                     fmt(pfd["f1"]) if pfd else "-"])
    out.append(markdown_table(["mapping", "parameters (seed 0)", "mean alpha", "CPFD ROC", "CPFD PR", "CPFD F1",
                               "PFD@mean-alpha ROC", "PFD@mean-alpha PR", "PFD@mean-alpha F1"], rows))
    out += ["", f"PFD at alpha {options.pfd_alpha:g}: ROC {fmt(models['pfd']['roc_auc'])}, PR {fmt(models['pfd']['pr_auc'])}, "
            f"F1 {fmt(models['pfd']['f1'])}. Parameters not given were calibrated from the teacher-loss quantiles "
            "(docs/method.md).", ""]

    out += [f"## Table 7: temperature ({options.primary_mapping})", ""]
    out.append(markdown_table(["T"] + [METRIC_NAMES[m] for m in METRICS],
                              [[f"T={k}"] + [fmt(v[m]) for m in METRICS] for k, v in t["table7"].items()]))
    if len(t["table7"]) == 1:
        out += ["", "Only T=1 was run; pass `--temperatures 0.5,1,2` for the ablation."]
    out.append("")

    out += ["## Table 1: mean teacher loss by baseline-student correctness (eval split, DuckDB)", ""]
    groups = t["table1"][0]["groups"]
    rows = []
    for outcome in ("correct", "incorrect"):
        cells = []
        for g in groups:
            means = [s[outcome][g]["mean_teacher_loss"] for s in t["table1"]]
            counts = [s[outcome][g]["count"] for s in t["table1"]]
            cells.append(f"{fmt(summarize(means))} (n={sum(counts) // len(counts)})")
        rows.append([f"student {outcome}"] + cells)
    out.append(markdown_table(["mean teacher loss @"] + groups, rows))
    out += ["", "Teacher: DF-X-VLM dumped on the eval split; student: the baseline X-VLM's eval predictions "
            "(`cpfd inspect DUMP --predictions P`). Figure 3: `fig_teacher_loss.png`.", "",
            "![teacher loss](fig_teacher_loss.png)", ""]

    out += ["## Table 5 (offline): hit rate at the baseline's recall volume", ""]
    rows = [[name, fmt(v["hit_rate"]), str(v["recalled"][0])] for name, v in t["table5"].items()]
    out.append(markdown_table(["model", "hit rate", "videos recalled (seed 0)"], rows))
    base = t["table5"]["baseline"]["hit_rate"]["mean"]
    if t["table5"]["baseline"]["recalled"][0] == 0:
        out += ["", "The baseline recalls no eval video at probability 0.5 here, so the protocol has no volume to "
                "match: the hit rates are undefined (train longer, or see Table 3's threshold-free metrics)."]
    out += ["", "Each model recalls as many eval videos as the baseline does at probability 0.5 (its top-k by score); "
            "the hit rate is the share of positives among them, the paper's online A/B protocol replayed on the eval "
            "split." + (" Relative to X-VLM: " + ", ".join(
                f"{n} {v['hit_rate']['mean'] / base - 1:+.1%}" for n, v in t["table5"].items()
                if n != "baseline" and not math.isnan(v["hit_rate"]["mean"])) + "."
                if base and not math.isnan(base) else ""), ""]

    c = t["table4"]
    out += ["## Table 4: serving cost, teacher vs student (measured on this machine)", ""]
    out.append(markdown_table(
        ["", "parameters", "ms / video (batch 1)", "ms / video (batch 32)", "dense features needed at serving"],
        [["DF-X-VLM (teacher)", f"{c['teacher']['parameters']:,}", f"{c['teacher']['ms_per_video_batch1']:.2f}",
          f"{c['teacher']['ms_per_video_batched']:.3f}", str(c["dense_features_needed"]["teacher"])],
         ["CPFD X-VLM (student)", f"{c['student']['parameters']:,}", f"{c['student']['ms_per_video_batch1']:.2f}",
          f"{c['student']['ms_per_video_batched']:.3f}", "0"]]))
    out += ["", f"Teacher / student: {c['parameter_ratio']:.2f}x parameters, {c['latency_ratio_batch1']:.2f}x latency at "
            "batch 1. The model latency understates the teacher's real cost: at serving time each of its "
            f"{c['dense_features_needed']['teacher']} privileged features must first be computed or fetched "
            "(report counts, legacy model scores, engagement), which is the cost the paper's Table 4 measures.", ""]

    out += ["## Figure 5: alpha against teacher loss", "", "![alpha](fig_alpha.png)", ""]
    out += ["## How to reproduce", "", f"```\n{report['command']}\n```", "",
            "Model folders and dumps are under `seed-N/`, each model's eval metrics and predictions under `seed-N/eval/`; "
            "`report.json` holds every number above.", ""]
    return "\n".join(out)
