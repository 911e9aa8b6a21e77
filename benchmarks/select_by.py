"""Which validation metric should pick the kept epoch? `--select-by`, chosen from baseline runs only (issue 27, item 0).

    .venv/bin/python benchmarks/select_by.py                         # the five presets + task1 small, 3 seeds
    .venv/bin/python benchmarks/select_by.py --points task1,task1:200 --seeds 5

Each point is a fresh synthetic corpus (`cpfd synth --preset P [--train-samples N] --seed 1000+s`:
drawn for this question only, so no reported result's eval rows take part in choosing) and one X-VLM
baseline (`train-student`, every default, `--seed s`) per seed. The training is the library's own
loop (`pipeline.train.start_run`, `run_epoch`, `end_epoch`), with one addition: after every epoch the
model is also scored on the eval split. Since `--select-by` only changes which epoch is kept, never
the trajectory, one training answers for every criterion: each one's kept epoch is replayed from the
recorded validation metrics with the product's own `selection_score` and `better_epoch`, and its eval
metrics are read off that epoch. Only baseline models take part, so the choice cannot favour PFD or
CPFD.

Printed per point: the eval ROC AUC, PR AUC and log loss of the epoch each criterion keeps (mean over
seeds), each criterion minus the default (`roc_auc`) paired over seeds with a 95% t interval, how
often the criteria keep different epochs, and how many epochs tied at the best validation ROC AUC
(where the log-loss tie-break acts). `roc_auc, later` is the rule before the tie-break: a tie went to
the later epoch. Results are cached in WORKDIR/select-by/ so a cut run resumes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

CRITERIA = ["roc_auc", "pr_auc", "log_loss"]
LATER_ON_TIE = "roc_auc, later"  # the rule before issue 27: a tie of ROC AUC went to the later epoch
SHOWN = ["roc_auc", "pr_auc", "log_loss"]
DEFAULT_POINTS = "task1,task2,task3,task4,task5,task1:200"


def parse_point(text: str) -> tuple[str, int | None]:
    preset, _, size = text.partition(":")
    return preset, (int(size) if size else None)


def train_with_eval(corpus_path: Path, out: Path, seed: int) -> list[dict]:
    """One baseline training with every default; per epoch, its metrics plus `eval_*` on the eval split."""
    from cpfd.pipeline.options import ModelOptions, TrainOptions
    from cpfd.pipeline.stages import dataset_for, prepare_stage
    from cpfd.pipeline.train import cross_entropy_loss, end_epoch, evaluate, finish_run, run_epoch, start_run
    from cpfd.storage.corpus import Corpus
    from cpfd.student.train import build_student

    corpus = Corpus(corpus_path)
    options = TrainOptions(seed=seed, progress=False, log_every=0)
    stage = prepare_stage(corpus, out, build=build_student, stage="train-student", model_options=ModelOptions(),
                          train_options=options, overwrite=True, resume=False, command="benchmarks/select_by.py")
    eval_set = dataset_for(stage.model, corpus, "eval", stage.tokenizer, options.batch_size)
    run = start_run(stage.model, stage.train_set, stage.val_set, out, options, stage.record, resume=False)
    epochs = []
    for epoch in range(len(run.plan)):
        metrics = run_epoch(run, epoch, stage.train_set, cross_entropy_loss)
        end_epoch(run, epoch, metrics, stage.val_set)
        scored = evaluate(run.model, eval_set, run.device)
        epochs.append({k: v for k, v in metrics.items() if k.startswith("val_")}
                      | {f"eval_{k}": scored[k] for k in SHOWN})
    finish_run(run)
    return epochs


def kept_epoch(epochs: list[dict], criterion: str) -> int:
    """The epoch (0-based) the product keeps under `criterion`, replayed from the validation metrics."""
    from cpfd.pipeline.train import better_epoch, selection_score

    best, best_score, best_tiebreak = 0, -math.inf, -math.inf
    for i, metrics in enumerate(epochs):
        if criterion == LATER_ON_TIE:
            score, tiebreak = selection_score(metrics, "roc_auc", has_validation=True)[0], 0.0
        else:
            score, tiebreak = selection_score(metrics, criterion, has_validation=True)
        if better_epoch(score, tiebreak, best_score, best_tiebreak) or i == 0:
            best, best_score, best_tiebreak = i, score, tiebreak
    return best


def tied_at_best(epochs: list[dict]) -> int | str:
    """How many epochs share the best validation ROC AUC (1: no tie); 'undefined' where every epoch's
    is NaN (a validation split of one class: the log-loss tie-break alone picks the epoch)."""
    values = [e["val_roc_auc"] for e in epochs if e["val_roc_auc"] == e["val_roc_auc"]]
    return sum(v == max(values) for v in values) if values else "undefined"


def summarize(point: str, runs: dict[int, list[dict]]) -> list[str]:
    from cpfd.experiment.stats import seed_interval

    criteria = CRITERIA + [LATER_ON_TIE]
    kept = {c: {s: kept_epoch(epochs, c) for s, epochs in runs.items()} for c in criteria}
    value = {c: {m: [runs[s][kept[c][s]][f"eval_{m}"] for s in runs] for m in SHOWN} for c in criteria}
    lines = [f"\n## {point}: {len(runs)} seeds, {len(next(iter(runs.values())))} epochs each\n",
             "| criterion | kept epochs | eval ROC AUC | eval PR AUC | eval log loss | ROC AUC - roc_auc's [95% over seeds] "
             "| log loss - roc_auc's [95%] | seeds with another epoch |",
             "|---|---|---|---|---|---|---|---|"]
    for c in criteria:
        cells = [c, ", ".join(str(kept[c][s] + 1) for s in runs)]
        cells += [f"{sum(value[c][m]) / len(runs):.4f}" for m in SHOWN]
        for m in ("roc_auc", "log_loss"):
            d = seed_interval([a - b for a, b in zip(value[c][m], value["roc_auc"][m])])
            low_high = f" [{d['interval'][0]:+.4f}, {d['interval'][1]:+.4f}]" if d["interval"] else ""
            cells.append(f"{d['mean']:+.4f}{low_high}")
        cells.append(str(sum(kept[c][s] != kept["roc_auc"][s] for s in runs)))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("\nepochs tied at the best validation ROC AUC, per seed: "
                 + ", ".join(map(str, (tied_at_best(epochs) for epochs in runs.values()))))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", default=DEFAULT_POINTS,
                        help="comma-separated PRESET or PRESET:TRAIN_SAMPLES (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=None, help="eval videos per corpus (default: the preset's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR)
    args = parser.parse_args()
    common.set_threads(args.threads)

    root = args.workdir / "select-by"
    root.mkdir(parents=True, exist_ok=True)
    report = [f"# --select-by from baseline runs: {args.seeds} seeds, {common.machine(args.threads)}"]
    for point in args.points.split(","):
        preset, size = parse_point(point)
        runs = {}
        for seed in range(args.seeds):
            cached = root / f"{point.replace(':', '-')}-eval{args.eval_samples or 'default'}-seed{seed}.json"
            if not cached.exists():
                corpus = common.ensure_corpus(args.workdir, preset, train_samples=size, eval_samples=args.eval_samples,
                                              seed=1000 + seed)
                epochs = train_with_eval(corpus, root / "model", seed)
                partial = cached.with_suffix(".partial")
                partial.write_text(json.dumps(epochs))
                partial.replace(cached)  # a cut run leaves no cache entry that looks finished
                print(f"  {point} seed {seed}: {len(epochs)} epochs", file=sys.stderr, flush=True)
            runs[seed] = json.loads(cached.read_text())
        lines = summarize(point, runs)
        report += lines
        print("\n".join(lines), flush=True)
    (root / "summary.md").write_text("\n".join(report) + "\n")
    print(f"\nwrote {root / 'summary.md'}")


if __name__ == "__main__":
    main()
