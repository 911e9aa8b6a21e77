"""`cpfd experiment`: the paper's whole comparison on one corpus, then `report.md`.

For each seed, these steps (each is skipped when its output is already complete, and an
interrupted training step resumes from its checkpoint, so rerunning on the same folder finishes
an interrupted experiment). With --jobs 1 they run in this order; with --jobs N up to N run at
once, each as soon as the steps it reads from have finished (`experiment.schedule`):

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

Each step is one library call (`experiment.launch.Step`). With --jobs 1 it is made here, or with
--nproc-per-node N by each process of a torchrun job of N processes (`experiment.launch.run_step`);
with --jobs N > 1 each step runs in a process of its own (`experiment.launch.start_step`: one
process, or the torchrun job's launcher), its output in DIR/logs/. Evaluation runs as one process
either way; the report is written here.

Every training keeps a validation split carved from the train split (by a hash of sample_id) to
pick its epoch and its F1 threshold; the eval split only reports. Layout of DIR:

    DIR/corpus/                       (synthetic runs only)
    DIR/seed-0/teacher/ baseline/ pfd/ cpfd-exp-decay/ pfd-exp-decay/ ... dump/ dump-eval/
    DIR/seed-0/eval/<model>.json      metrics on the eval split; <model>.parquet its predictions
                                      (outside the model folders: an output never lies in an input)
    DIR/report.md, report.json, fig_*.png
    DIR/timings.json                  wall seconds of each step this folder ran
    DIR/logs/seed-0/<step>.log        each step's output, with --jobs N > 1
    DIR/experiment.json               the settings the steps were run with (a rerun must match)
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cpfd.experiment.options import ExperimentOptions, check_experiment_options
from cpfd.experiment.report import eval_paths, write_report
from cpfd.experiment.launch import Step
from cpfd.experiment.schedule import Task, run_tasks
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.evaluate import evaluate_model
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import CHECKPOINT, FOLDS, read_training_record, training_finished
from cpfd.storage.outputs import check_paths
from cpfd.student.cpfd import alpha_from_loss
from cpfd.student.distill import distill, read_confidence, resolve_mapping
from cpfd.student.train import train_student
from cpfd.teacher.crossfit import train_cross_fitted_teacher
from cpfd.teacher.dump import dump_teacher
from cpfd.teacher.models import ARCHITECTURES
from cpfd.teacher.train import train_teacher

def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def mean_alpha(dump_dir: Path, mapping: str, params: dict, confidence: str = "loss") -> float:
    """The average alpha a mapping gives over the dumped rows: what matched PFD uses."""
    return float(np.mean(alpha_from_loss(read_confidence(dump_dir, confidence), mapping, **params)))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_threads(options: ExperimentOptions, model_options: ModelOptions) -> int:
    """--threads, or: one thread for the tiny models built from a config (thread hand-offs cost more
    than their matrix work; docs/benchmarks.md), every core for a pretrained backbone or a wide model."""
    if options.threads:
        return options.threads
    tiny = model_options.vision_model is None and model_options.text_model is None and model_options.hidden_size <= 128
    return 1 if tiny else available_cores()


def process_threads(options: ExperimentOptions, model_options: ModelOptions) -> int:
    """Torch threads of each process of a step: a step's threads, shared out over --nproc-per-node."""
    return max(1, torch_threads(options, model_options) // options.nproc_per_node)


def default_jobs(options: ExperimentOptions, model_options: ModelOptions) -> int:
    """--jobs, or: as many steps at once as the cores hold, each step's processes x their threads."""
    if options.jobs:
        return options.jobs
    return max(1, available_cores() // (process_threads(options, model_options) * options.nproc_per_node))


def evaluate_step(seed_dir: Path, name: str, corpus_path: Path, device: str) -> None:
    """A model's metrics on the eval split (DIR/seed-s/eval/<model>.json) and its predictions beside them."""
    metrics_path, predictions = eval_paths(seed_dir, name)
    metrics = evaluate_model(seed_dir / name, corpus_path, architectures=ARCHITECTURES, split="eval",
                             out=predictions, overwrite=True,  # its own folder: an interrupted evaluation's file
                             device=device, progress=False)
    atomic_write_json(metrics_path, metrics)


def matched_alpha(dump_dir: Path, mapping: str, confidence: str = "loss") -> float:
    """The alpha of the PFD matched to a mapping: its mean alpha over the dump's rows, every parameter
    calibrated from that dump's `confidence` signal, as `distill` calibrates them (rounded to 6
    places, as it is trained)."""
    params = resolve_mapping(dump_dir, mapping, {}, confidence)[0]
    return round(mean_alpha(dump_dir, mapping, params, confidence), 6)


@dataclass
class Distillation:
    """One distilled student of a seed: its folder name and what it is trained with."""

    name: str
    dump: str
    mapping: str  # "constant" for PFD
    temperature: float = 1.0
    matched_to: str | None = None  # pfd-M: PFD at the mean alpha of cpfd-M (this mapping's name)
    confidence: str = "loss"  # the signal the mapping reads (of cpfd-M-C, or of what pfd-M-C is matched to)


def vanilla_pfd(run: Distillation) -> str:
    """The vanilla PFD a matched PFD stands for when its alpha is --pfd-alpha: `pfd` (or `pfd-cf`)."""
    return "pfd-cf" if run.dump == "dump-cf" else "pfd"


class Experiment:
    """The steps of one experiment folder, as tasks (`experiment.schedule`); each is idempotent."""

    def __init__(self, options: ExperimentOptions, model_options: ModelOptions, train_options: TrainOptions,
                 command: str):
        check_experiment_options(options)
        self.options, self.model_options, self.train_options = options, model_options, train_options
        self.out = Path(options.out)
        self.command = command
        self.corpus_path = Path(options.corpus) if options.corpus is not None else self.out / "corpus"

    def seed_options(self, seed: int) -> TrainOptions:
        return TrainOptions(**{**asdict(self.train_options), "seed": seed})

    def step(self, name: str, function, /, **kwargs) -> Step:
        return Step(name, function, kwargs, device=self.train_options.device)

    # ---- the corpus (before any task) ------------------------------------------------------------
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
                               progress=o.progress, row_group_rows=row_group_rows, label_noise=o.label_noise,
                               privileged_missing=o.privileged_missing)
        return Corpus(path)

    # ---- the tasks ------------------------------------------------------------------------------
    def distillations(self, dump: str, suffix: str, mappings: list[str], temperatures: list[float]) -> list[Distillation]:
        """PFD, CPFD for each mapping and its matched PFD, the temperature ablation."""
        o = self.options
        runs = [Distillation(f"pfd{suffix}", dump, "constant")]
        for mapping in mappings:
            runs.append(Distillation(f"cpfd-{mapping}{suffix}", dump, mapping))
            if o.matched_pfd:
                runs.append(Distillation(f"pfd-{mapping}{suffix}", dump, "constant", matched_to=mapping))
        runs += [Distillation(f"cpfd-{o.primary_mapping}-T{t:g}{suffix}", dump, o.primary_mapping, t)
                 for t in temperatures if t != 1.0]
        for c in o.confidences:  # the primary mapping on a label-free signal, and PFD at its mean alpha
            if c != "loss":
                runs.append(Distillation(f"cpfd-{o.primary_mapping}-{c}{suffix}", dump, o.primary_mapping, confidence=c))
                runs.append(Distillation(f"pfd-{o.primary_mapping}-{c}{suffix}", dump, "constant",
                                         matched_to=o.primary_mapping, confidence=c))
        return runs

    def seed_distillations(self) -> list[Distillation]:
        o = self.options
        runs = self.distillations("dump", "", o.mappings, o.temperatures)
        if o.cross_fit:
            runs += self.distillations("dump-cf", "-cf", [o.primary_mapping], [1.0])
        return runs

    def same_as_pfd(self, seed_dir: Path, run: Distillation) -> float | None:
        """A matched PFD's alpha when it is `--pfd-alpha` (within 1e-6; e.g. a threshold at the median):
        then it is vanilla PFD, not trained twice. None otherwise."""
        if run.matched_to is None:
            return None
        alpha = matched_alpha(seed_dir / run.dump, run.matched_to, run.confidence)
        return alpha if abs(alpha - self.options.pfd_alpha) < 1e-6 else None

    def tasks(self) -> list[Task]:
        """Every seed's tasks, each after the tasks whose outputs it reads; within a seed in the order
        `--jobs 1` runs them (docs/experiment.md)."""
        tasks = []
        for seed in range(self.options.seeds):
            tasks += self.seed_tasks(seed)
        return tasks

    def seed_tasks(self, seed: int) -> list[Task]:
        o, seed_dir = self.options, self.out / f"seed-{seed}"
        s = seed_dir.name
        tasks = [self.train_task(seed_dir, "teacher", "teacher", seed),
                 self.train_task(seed_dir, "baseline", "student", seed),
                 self.dump_task(seed_dir, "teacher", "dump", "train"),
                 self.dump_task(seed_dir, "teacher", "dump-eval", "eval")]
        cross_fit = []
        if o.cross_fit:
            cross_fit = [self.train_task(seed_dir, "teacher-cf", "teacher", seed, folds=o.cross_fit),
                         self.dump_task(seed_dir, "teacher-cf", "dump-cf", "train"),
                         self.dump_task(seed_dir, "teacher-cf", "dump-cf-eval", "eval")]
        runs = self.seed_distillations()
        tasks += [self.distill_task(seed_dir, run, seed) for run in runs if not run.name.endswith("-cf")]
        tasks += cross_fit
        tasks += [self.distill_task(seed_dir, run, seed) for run in runs if run.name.endswith("-cf")]
        for name in ["teacher", "baseline", *(run.name for run in runs)]:
            run = next((r for r in runs if r.name == name), None)
            tasks.append(Task(
                f"{s}/eval/{name}", f"{s}: evaluate {name} on the eval split", "evaluate", (f"{s}/{name}",),
                finished=lambda name=name: eval_paths(seed_dir, name)[0].exists(),
                make=lambda name=name, run=run: self.evaluate_or_not(seed_dir, name, run)))
        return tasks

    def train_task(self, seed_dir: Path, name: str, role: str, seed: int, folds: int = 0) -> Task:
        out, s = seed_dir / name, seed_dir.name

        def make() -> Step:
            resume = (out / CHECKPOINT).exists() or (folds > 0 and out.exists())
            options = dict(corpus_path=self.corpus_path, out=out, model_options=self.model_options,
                           train_options=self.seed_options(seed), resume=resume,
                           command=f"{self.command} (step {name})")
            if folds:
                return self.step(f"{s}/{name}", train_cross_fitted_teacher, folds=folds, **options)
            return self.step(f"{s}/{name}", train_teacher if role == "teacher" else train_student,
                             overwrite=not resume, **options)

        return Task(f"{s}/{name}", f"{s}: train {name}" + (f" ({folds} folds)" if folds else ""), "train", (),
                    finished=lambda: (out / FOLDS).exists() if folds else training_finished(out), make=make,
                    nproc=self.options.nproc_per_node)

    def dump_task(self, seed_dir: Path, teacher: str, name: str, split: str) -> Task:
        out, s = seed_dir / name, seed_dir.name
        return Task(f"{s}/{name}", f"{s}: dump-teacher {teacher} --split {split}", "dump", (f"{s}/{teacher}",),
                    finished=lambda: (out / DUMP_MANIFEST).exists(),
                    make=lambda: self.step(  # under torchrun, the processes split the shards
                        f"{s}/{name}", dump_teacher, teacher_dir=seed_dir / teacher, corpus_path=self.corpus_path,
                        out=out, split=split, device=self.train_options.device, progress=self.options.progress),
                    nproc=self.options.nproc_per_node)

    def distill_task(self, seed_dir: Path, run: Distillation, seed: int) -> Task:
        out, s = seed_dir / run.name, seed_dir.name

        def make() -> Step | str:
            params = {}
            if run.matched_to is not None:
                alpha = matched_alpha(seed_dir / run.dump, run.matched_to, run.confidence)
                if abs(alpha - self.options.pfd_alpha) < 1e-6:
                    return f"{s}: {run.name} is {vanilla_pfd(run)} (mean alpha {alpha:g})"
                params = {"alpha": alpha}
            elif run.mapping == "constant":
                params = {"alpha": self.options.pfd_alpha}
            resume = (out / CHECKPOINT).exists()
            return self.step(f"{s}/{run.name}", distill, corpus_path=self.corpus_path, dump_dir=seed_dir / run.dump,
                             out=out, mapping=run.mapping, params=params, temperature=run.temperature,
                             confidence=run.confidence if run.matched_to is None else "loss",
                             model_options=self.model_options, train_options=self.seed_options(seed),
                             overwrite=not resume, resume=resume, command=f"{self.command} (step {run.name})",
                             announce=say)

        signal = f", {run.confidence}" if run.confidence != "loss" and run.matched_to is None else ""
        return Task(f"{s}/{run.name}", f"{s}: distill {run.name} ({run.mapping}{signal}, T={run.temperature:g})", "distill",
                    (f"{s}/{run.dump}",), finished=lambda: training_finished(out), make=make,
                    nproc=self.options.nproc_per_node)

    def evaluate_or_not(self, seed_dir: Path, name: str, run: Distillation | None) -> Step | str:
        if run is not None and self.same_as_pfd(seed_dir, run) is not None:
            return f"{seed_dir.name}: evaluate {name}: it is {vanilla_pfd(run)}"
        return self.step(f"{seed_dir.name}/eval/{name}", evaluate_step, seed_dir=seed_dir, name=name,
                         corpus_path=self.corpus_path, device=self.train_options.device)

    # ---- the results ------------------------------------------------------------------------------
    def seed_results(self, seed: int) -> dict:
        """{model: eval metrics}, each distilled student's with its `distillation` record (its dump,
        mean alpha over the dump's rows, and `same_as` for a matched PFD that is vanilla PFD)."""
        seed_dir = self.out / f"seed-{seed}"
        metrics = {name: json.loads(eval_paths(seed_dir, name)[0].read_text()) for name in ("teacher", "baseline")}
        for run in self.seed_distillations():
            pfd = vanilla_pfd(run) if run.matched_to else None
            if run.matched_to and self.same_as_pfd(seed_dir, run) is not None:
                metrics[run.name] = {**metrics[pfd], "distillation": {**metrics[pfd]["distillation"], "same_as": pfd}}
                continue
            record = dict(read_training_record(seed_dir / run.name)["distillation"])
            record["dump"] = run.dump
            record["mean_alpha"] = mean_alpha(seed_dir / run.dump, record["mapping"], record["params"],
                                              record.get("confidence", "loss"))
            metrics[run.name] = {**json.loads(eval_paths(seed_dir, run.name)[0].read_text()), "distillation": record}
        return metrics

    def settings(self) -> dict:
        """What the finished steps in DIR depend on; seeds, mappings and temperatures may grow."""
        o = self.options
        train = {k: v for k, v in asdict(self.train_options).items()
                 if k not in ("progress", "num_workers", "device", "keep_checkpoint", "log_every", "tensorboard")}
        corpus = str(o.corpus) if o.corpus is not None else {
            "preset": o.preset, "train_samples": o.train_samples, "eval_samples": o.eval_samples, "story": o.story,
            "privileged_strength": o.privileged_strength,
            **({"label_noise": o.label_noise} if o.label_noise is not None else {}),  # absent: as before the knobs
            **({"privileged_missing": o.privileged_missing} if o.privileged_missing else {})}
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
        if corpus.num_rows("eval") == 0:
            raise CpfdError(f"{corpus.path}: the eval split is empty; the experiment evaluates on it")
        if not corpus.privileged_features:
            raise CpfdError(f"{corpus.path}: the corpus has no privileged features: there is nothing to distill")
        jobs = default_jobs(o, self.model_options)
        if jobs > 1:
            say(f"running up to {jobs} steps at once, {process_threads(o, self.model_options)} torch thread(s) per "
                f"process; each step's output goes to {self.out / 'logs'}/")
        here = jobs == 1 and o.nproc_per_node == 1  # every step in this process, with its threads
        run_tasks(self.tasks(), jobs=jobs, threads=None if here else process_threads(o, self.model_options),
                  logs=self.out / "logs", timings=self.out / "timings.json", say=say)
        results = {seed: self.seed_results(seed) for seed in range(o.seeds)}
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
