"""`cpfd experiment`: the paper's whole comparison on one corpus, then `report.md`.

For each seed, in this order (each step is skipped when its output is already complete, and an
interrupted training step resumes from its checkpoint, so rerunning on the same folder finishes
an interrupted experiment):

    corpus       cpfd synth (the embedded default) or the user's corpus (--corpus)
    teacher      cpfd train-teacher                     DF-X-VLM
    baseline     cpfd train-student                     X-VLM, no distillation
    dump         cpfd dump-teacher --split train        the teacher's logits and losses, once
    dump-eval    cpfd dump-teacher --split eval         for Table 1 / Figure 3 on held-out videos
    pfd          cpfd distill --mapping constant --alpha A               vanilla PFD
    cpfd-M       cpfd distill --mapping M (calibrated)  for each mapping M
    pfd-M        cpfd distill --mapping constant --alpha <mean alpha of M>  PFD at CPFD's average trust
                 (not trained when that mean is PFD's own alpha: then it is `pfd`)
    cpfd-M-T     cpfd distill --mapping M --temperature T, for the primary mapping and each extra T
    with --cross-fit K:
    teacher-cf   cpfd train-teacher --folds K           K fold teachers
    dump-cf, dump-cf-eval                               the cross-fitted dumps
    pfd-cf, cpfd-M-cf, pfd-M-cf                         PFD, CPFD (primary M) and matched PFD from it
    evaluate     cpfd evaluate on the eval split, for every model

Each training and dump is one library call (`experiment.launch.Step`): made here, or with
--nproc-per-node N by each process of a torchrun job of N processes (`experiment.launch.run_step`);
evaluation and the report run here.

Every training keeps a validation split carved from the train split (by a hash of sample_id) to
pick its epoch and its F1 threshold; the eval split only reports. Layout of DIR:

    DIR/corpus/                       (synthetic runs only)
    DIR/seed-0/teacher/ baseline/ pfd/ cpfd-exp-decay/ pfd-exp-decay/ ... dump/ dump-eval/
    DIR/seed-0/eval/<model>.json      metrics on the eval split; <model>.parquet its predictions
                                      (outside the model folders: an output never lies in an input)
    DIR/report.md, report.json, fig_*.png
    DIR/timings.json                  wall seconds of each step this folder ran
    DIR/experiment.json               the settings the steps were run with (a rerun must match)
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cpfd.experiment.options import ExperimentOptions, check_experiment_options
from cpfd.experiment.report import eval_paths, write_report
from cpfd.experiment.launch import Step, run_step
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.evaluate import evaluate_model
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST, read_teacher_losses
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import CHECKPOINT, FOLDS, read_training_record, training_finished
from cpfd.storage.outputs import check_paths
from cpfd.student.cpfd import alpha_from_loss
from cpfd.student.distill import distill
from cpfd.student.train import train_student
from cpfd.teacher.crossfit import train_cross_fitted_teacher
from cpfd.teacher.dump import dump_teacher
from cpfd.teacher.models import ARCHITECTURES
from cpfd.teacher.train import train_teacher

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mean_alpha(dump_dir: Path, mapping: str, params: dict) -> float:
    """The average alpha a mapping gives over the dumped rows: what matched PFD uses."""
    return float(np.mean(alpha_from_loss(read_teacher_losses(dump_dir), mapping, **params)))


def torch_threads(options: ExperimentOptions, model_options: ModelOptions) -> int:
    """--threads, or: one thread for the tiny models built from a config (thread hand-offs cost more
    than their matrix work; docs/benchmarks.md), every core for a pretrained backbone or a wide model."""
    if options.threads:
        return options.threads
    tiny = model_options.vision_model is None and model_options.text_model is None and model_options.hidden_size <= 128
    return 1 if tiny else max(1, os.cpu_count() or 1)


class Experiment:
    """Runs the steps of one experiment folder; each step is idempotent."""

    def __init__(self, options: ExperimentOptions, model_options: ModelOptions, train_options: TrainOptions,
                 command: str):
        check_experiment_options(options)
        self.options, self.model_options, self.train_options = options, model_options, train_options
        self.out = Path(options.out)
        self.command = command
        self.steps_total = 0
        self.steps_done = 0

    # ---- bookkeeping ----------------------------------------------------------------------
    def announce(self, what: str, reused: bool = False) -> None:
        self.steps_done += 1
        say(f"[{self.steps_done}/{self.steps_total}] {what}" + (" (reused)" if reused else ""))

    def timed(self, key: str, fn, *args, **kw):
        """Run one step and record its wall time in DIR/timings.json (steps reused cost nothing)."""
        start = time.perf_counter()
        result = fn(*args, **kw)
        path = self.out / "timings.json"
        timings = json.loads(path.read_text()) if path.exists() else {}
        timings[key] = round(time.perf_counter() - start, 2)
        atomic_write_json(path, timings)
        return result

    def seed_options(self, seed: int) -> TrainOptions:
        return TrainOptions(**{**asdict(self.train_options), "seed": seed})

    def step(self, name: str, function, **kwargs) -> None:
        """One training or dump: the library call, in this process or, with --nproc-per-node N, in each
        process of a torchrun job (`experiment.launch`); its wall time goes to DIR/timings.json."""
        n = self.options.nproc_per_node
        threads = max(1, torch_threads(self.options, self.model_options) // n)  # the cores, shared out
        step = Step(name, function, kwargs, device=self.train_options.device)
        self.timed(name, run_step, step, nproc=n, threads=threads)

    # ---- steps ------------------------------------------------------------------------------
    def corpus(self) -> Corpus:
        o = self.options
        if o.corpus is not None:
            return Corpus(o.corpus)
        path = self.out / "corpus"
        if (path / CORPUS_JSON).exists():
            return Corpus(path)
        from cpfd.experiment.synth import write_synthetic_corpus

        say(f"synthesizing corpus {path} (preset {o.preset}, story {o.story}, privileged strength {o.privileged_strength:g})")
        # Under torchrun each process x worker needs row groups of its own (the default row group
        # holds 8,192 rows: the whole of a small corpus), so then: 4 or more per process and worker.
        parts = o.nproc_per_node * max(self.train_options.num_workers, 1)
        row_group_rows = 8_192 if parts == 1 else max(1, min(8_192, (o.train_samples or 8_192) // (4 * parts)))
        write_synthetic_corpus(path, preset=o.preset, train_samples=o.train_samples, eval_samples=o.eval_samples,
                               seed=0, story=o.story, privileged_strength=o.privileged_strength, overwrite=True,
                               progress=o.progress, row_group_rows=row_group_rows)
        return Corpus(path)

    def train(self, seed_dir: Path, name: str, role: str, seed: int, folds: int = 0) -> None:
        out = seed_dir / name
        done = (out / FOLDS).exists() if folds else training_finished(out)
        self.announce(f"{seed_dir.name}: train {name}" + (f" ({folds} folds)" if folds else ""), reused=done)
        if done:
            return
        resume = (out / CHECKPOINT).exists() or (folds > 0 and out.exists())
        options = dict(model_options=self.model_options, train_options=self.seed_options(seed), resume=resume,
                       command=f"{self.command} (step {name})")
        if folds:
            self.step(f"{seed_dir.name}/{name}", train_cross_fitted_teacher, corpus_path=self.corpus_path, out=out,
                     folds=folds, **options)
        else:
            self.step(f"{seed_dir.name}/{name}", train_teacher if role == "teacher" else train_student,
                     corpus_path=self.corpus_path, out=out, overwrite=not resume, **options)

    def dump(self, seed_dir: Path, teacher: str, name: str, split: str) -> Path:
        out = seed_dir / name
        done = (out / DUMP_MANIFEST).exists()
        self.announce(f"{seed_dir.name}: dump-teacher {teacher} --split {split}", reused=done)
        if not done:  # under torchrun, the processes split the shards
            self.step(f"{seed_dir.name}/{name}", dump_teacher, teacher_dir=seed_dir / teacher, corpus_path=self.corpus_path,
                     out=out, split=split, device=self.train_options.device, progress=self.options.progress)
        return out

    def distill(self, seed_dir: Path, name: str, seed: int, dump: str, mapping: str, params: dict,
                temperature: float) -> dict:
        out = seed_dir / name
        done = training_finished(out)
        self.announce(f"{seed_dir.name}: distill {name} ({mapping}, T={temperature:g})", reused=done)
        if not done:
            resume = (out / CHECKPOINT).exists()
            self.step(f"{seed_dir.name}/{name}", distill, corpus_path=self.corpus_path, dump_dir=seed_dir / dump,
                     out=out, mapping=mapping, params=params, temperature=temperature,
                     model_options=self.model_options, train_options=self.seed_options(seed), overwrite=not resume,
                     resume=resume, command=f"{self.command} (step {name})", announce=say)
        run = dict(read_training_record(out)["distillation"])
        run["dump"] = dump
        run["mean_alpha"] = mean_alpha(seed_dir / dump, run["mapping"], run["params"])
        return run

    def evaluate(self, seed_dir: Path, name: str) -> dict:
        metrics_path, predictions = eval_paths(seed_dir, name)
        if metrics_path.exists():
            return json.loads(metrics_path.read_text())
        metrics = evaluate_model(seed_dir / name, self.corpus_path, architectures=ARCHITECTURES, split="eval",
                                 out=predictions, overwrite=True,  # its own folder: an interrupted evaluation's file
                                 device=self.train_options.device, progress=False)
        atomic_write_json(metrics_path, metrics)
        return metrics

    def distillations(self, seed_dir: Path, seed: int, dump: str, suffix: str, mappings: list[str],
                      temperatures: list[float]) -> dict:
        """PFD, CPFD for each mapping, matched PFD, the temperature ablation: {model name: run}."""
        o = self.options
        runs = {f"pfd{suffix}": self.distill(seed_dir, f"pfd{suffix}", seed, dump, "constant", {"alpha": o.pfd_alpha}, 1.0)}
        for mapping in mappings:
            name = f"cpfd-{mapping}{suffix}"
            runs[name] = self.distill(seed_dir, name, seed, dump, mapping, {}, 1.0)
            if o.matched_pfd:
                alpha = round(runs[name]["mean_alpha"], 6)
                if abs(alpha - o.pfd_alpha) < 1e-6:  # e.g. threshold at the median: that is vanilla PFD
                    self.announce(f"{seed_dir.name}: pfd-{mapping}{suffix} is pfd{suffix} (mean alpha {alpha:g})",
                                  reused=True)
                    runs[f"pfd-{mapping}{suffix}"] = {**runs[f"pfd{suffix}"], "same_as": f"pfd{suffix}"}
                else:
                    runs[f"pfd-{mapping}{suffix}"] = self.distill(seed_dir, f"pfd-{mapping}{suffix}", seed, dump,
                                                                  "constant", {"alpha": alpha}, 1.0)
        for t in temperatures:
            if t != 1.0:
                name = f"cpfd-{o.primary_mapping}-T{t:g}{suffix}"
                runs[name] = self.distill(seed_dir, name, seed, dump, o.primary_mapping, {}, t)
        return runs

    def run_seed(self, seed: int) -> dict:
        seed_dir = self.out / f"seed-{seed}"
        o = self.options
        self.train(seed_dir, "teacher", "teacher", seed)
        self.train(seed_dir, "baseline", "student", seed)
        self.dump(seed_dir, "teacher", "dump", "train")
        self.dump(seed_dir, "teacher", "dump-eval", "eval")
        runs = self.distillations(seed_dir, seed, "dump", "", o.mappings, o.temperatures)
        if o.cross_fit:
            self.train(seed_dir, "teacher-cf", "teacher", seed, folds=o.cross_fit)
            self.dump(seed_dir, "teacher-cf", "dump-cf", "train")
            self.dump(seed_dir, "teacher-cf", "dump-cf-eval", "eval")
            runs.update(self.distillations(seed_dir, seed, "dump-cf", "-cf", [o.primary_mapping], [1.0]))
        names = ["teacher", "baseline", *(n for n, r in runs.items() if "same_as" not in r)]
        self.announce(f"{seed_dir.name}: evaluate {len(names)} models on the eval split")
        metrics = {name: self.evaluate(seed_dir, name) for name in names}
        for name, run in runs.items():
            metrics[name] = {**metrics[run.get("same_as", name)], "distillation": run}
        return metrics

    def settings(self) -> dict:
        """What the finished steps in DIR depend on; seeds, mappings and temperatures may grow."""
        o = self.options
        train = {k: v for k, v in asdict(self.train_options).items()
                 if k not in ("progress", "num_workers", "device", "keep_checkpoint")}
        corpus = str(o.corpus) if o.corpus is not None else {
            "preset": o.preset, "train_samples": o.train_samples, "eval_samples": o.eval_samples, "story": o.story,
            "privileged_strength": o.privileged_strength}
        return {"corpus": corpus, "model_options": asdict(self.model_options), "train_options": train,
                "pfd_alpha": o.pfd_alpha, "cross_fit": o.cross_fit}

    def check_settings(self) -> None:
        """Refuse to mix steps trained with other settings into one report: say what differs, briefly."""
        path = self.out / "experiment.json"
        settings = json.loads(json.dumps(self.settings(), default=str))
        if path.exists():
            before = json.loads(path.read_text())
            changes = settings_diff(before, settings)
            if changes:
                raise CpfdError(f"{self.out} holds an experiment run with other settings ({'; '.join(changes)}); "
                                "use another --out, or the settings it was run with")
        else:
            atomic_write_json(path, settings)

    def run(self) -> dict:
        o = self.options
        check_paths({"--out": self.out}, {"--corpus": o.corpus, "--vision-model": self.model_options.vision_model,
                                          "--text-model": self.model_options.text_model})
        import torch

        torch.set_num_threads(torch_threads(o, self.model_options))
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_settings()
        corpus = self.corpus()
        self.corpus_path = corpus.path
        if corpus.num_rows("eval") == 0:
            raise CpfdError(f"{corpus.path}: the eval split is empty; the experiment evaluates on it")
        if not corpus.privileged_features:
            raise CpfdError(f"{corpus.path}: the corpus has no privileged features: there is nothing to distill")
        per_mapping = 1 + int(o.matched_pfd)
        per_seed = (4 + 1 + per_mapping * len(o.mappings) + sum(t != 1.0 for t in o.temperatures) + 1
                    + (3 + 1 + per_mapping if o.cross_fit else 0))
        self.steps_total = o.seeds * per_seed
        results = {seed: self.run_seed(seed) for seed in range(o.seeds)}

        say("writing the report")
        return write_report(self.out, corpus, o, results, self.model_options, self.train_options, self.command)


def settings_diff(before: dict, now: dict, prefix: str = "") -> list[str]:
    """What changed between two settings dicts, as `key old -> new` (nested keys dotted)."""
    changes = []
    for key in sorted(set(before) | set(now)):
        a, b = before.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += settings_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key} {json.dumps(a)} -> {json.dumps(b)}")
    return changes


def run_experiment(options: ExperimentOptions, model_options: ModelOptions, train_options: TrainOptions,
                   command: str = "") -> dict:
    return Experiment(options, model_options, train_options, command).run()
