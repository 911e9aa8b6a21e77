"""How far the baseline student gets from its ceiling, per preset and training budget: on the
validation split only, with no distillation run at all (so choosing the experiment's default
corpus and budget from it sees no distillation result).

    .venv/bin/python benchmarks/student_budget.py --out runs/budget --jobs 2

For each preset it writes a synthetic corpus (train 2,000 videos as `cpfd experiment` makes it),
computes the student's ceiling on the validation rows (a logistic regression on the three visible
latents, fitted on the training rows: what docs/synthetic.md calls the ROC ceiling of any model on
frames + text), then trains `cpfd train-student` under each budget and reads the kept epoch's
validation ROC AUC from training.json. It prints, per preset and budget, the validation ROC AUC,
the ceiling, the share of the distance to the ceiling left, the optimizer steps and wall seconds.
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
# name: extra train-student options. "today" is the budget the experiment had before (3 epochs).
BUDGETS = {
    "3 epochs, lr 5e-4": ["--epochs", "3", "--lr", "5e-4"],
    "auto 600 steps, lr 5e-4": ["--min-steps", "600", "--lr", "5e-4"],
    "auto 600 steps, lr 1e-3": ["--min-steps", "600", "--lr", "1e-3"],
    "auto 600 steps, lr 2e-3": ["--min-steps", "600", "--lr", "2e-3"],
}


def ceiling(corpus: Path) -> float:
    """ROC AUC on the validation rows of a logistic regression on the visible latents (training rows)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from cpfd.pipeline.data import training_rows, validation_rows
    from cpfd.experiment.synth import read_truth
    from cpfd.storage.corpus import Corpus

    truth = read_truth(corpus).to_pandas()
    truth = truth[truth["split"] == "train"]
    c = Corpus(corpus, verify="fast")
    ids = c.read_column("train", "sample_id")
    labels = np.array(c.read_column("train", "label").to_pylist())
    truth = truth.set_index("sample_id").loc[ids.to_pylist()]
    x = truth[["latent_object", "latent_motion", "latent_text"]].to_numpy()
    train, val = training_rows(0.1).mask(ids), validation_rows(0.1).mask(ids)
    model = LogisticRegression().fit(x[train], labels[train])
    return float(roc_auc_score(labels[val], model.predict_proba(x[val])[:, 1]))


def run(corpus: Path, out: Path, options: list[str]) -> dict:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cpfd.cli", "train-student", str(corpus), "--out", str(out), "--quiet",
                    "--overwrite", *options], check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    record = json.loads((out / "training.json").read_text())
    best = record["epochs"][record["best_epoch"] - 1]
    return {"val_roc_auc": best["val_roc_auc"], "steps": record["schedule"]["steps"],
            "seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/budget"))
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    presets = args.presets.split(",")
    for preset in presets:
        corpus = args.out / preset / "corpus"
        if not (corpus / "corpus.json").exists():
            subprocess.run([sys.executable, "-m", "cpfd.cli", "synth", str(corpus), "--preset", preset,
                            "--train-samples", "2000", "--eval-samples", "200", "--quiet", "--overwrite"], check=True)
    ceilings = {p: ceiling(args.out / p / "corpus") for p in presets}
    jobs = [(p, name) for p in presets for name in BUDGETS]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = dict(zip(jobs, pool.map(
            lambda job: run(args.out / job[0] / "corpus", args.out / job[0] / f"student-{list(BUDGETS).index(job[1])}",
                            BUDGETS[job[1]]), jobs)))
    print(f"# {' '.join(sys.argv)}   ({os.cpu_count()} CPUs, {args.jobs} trainings at a time, 1 torch thread each)")
    print(f"{'preset':<7} {'budget':<26} {'val ROC':>8} {'ceiling':>8} {'gap left':>9} {'steps':>6} {'seconds':>8}")
    for (preset, name), r in results.items():
        gap = (ceilings[preset] - r["val_roc_auc"]) / (ceilings[preset] - 0.5)
        print(f"{preset:<7} {name:<26} {r['val_roc_auc']:>8.4f} {ceilings[preset]:>8.4f} {gap:>9.1%} {r['steps']:>6} "
              f"{r['seconds']:>8.0f}")
    (args.out / "budget.json").write_text(json.dumps({"ceilings": ceilings, "results": {
        f"{p}|{n}": r for (p, n), r in results.items()}}, indent=2))


if __name__ == "__main__":
    main()
