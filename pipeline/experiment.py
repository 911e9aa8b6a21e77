"""`cpfd experiment`: the paper's whole comparison on one corpus, then `report.md`.

For each seed, in this order (each step is skipped when its output is already complete, and an
interrupted training step resumes from its checkpoint, so rerunning on the same folder finishes
an interrupted experiment):

    corpus      cpfd synth (the embedded default) or the user's corpus (--corpus)
    teacher     cpfd train-teacher                     DF-X-VLM
    baseline    cpfd train-student                     X-VLM, no distillation
    dump        cpfd dump-teacher --split train        the teacher's logits and losses, once
    dump-eval   cpfd dump-teacher --split eval         for Table 1 / Figure 3 on held-out videos
    pfd         cpfd distill --mapping constant --alpha 0.5               vanilla PFD
    cpfd-M      cpfd distill --mapping M (calibrated)  for each mapping M
    pfd-M       cpfd distill --mapping constant --alpha <mean alpha of M>  PFD at CPFD's average trust
    cpfd-M-T    cpfd distill --mapping M --temperature T, for the primary mapping and each extra T
    evaluate    cpfd evaluate on the eval split, for every model

Layout of DIR:

    DIR/corpus/                       (synthetic runs only)
    DIR/seed-0/teacher/ baseline/ pfd/ cpfd-exp-decay/ pfd-exp-decay/ ... dump/ dump-eval/
    DIR/seed-0/eval/<model>.json      metrics on the eval split; <model>.parquet its predictions
                                      (outside the model folders: an output never lies in an input)
    DIR/report.md, report.json, fig_teacher_loss.png, fig_alpha.png
    DIR/timings.json                  wall seconds of each step this folder ran
    DIR/experiment.json               the settings the steps were run with (a rerun must match)
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.stages import evaluate_model, train_model
from cpfd.storage.atomic import atomic_write_json
from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST, read_teacher_losses
from cpfd.storage.errors import CpfdError
from cpfd.storage.model_folder import CHECKPOINT, read_training_record, training_finished
from cpfd.storage.outputs import check_paths
from cpfd.student.cpfd import MAPPINGS, alpha_from_loss

CPFD_MAPPINGS = tuple(m for m in MAPPINGS if m != "constant")


@dataclass
class ExperimentOptions:
    out: Path = Path("runs/experiment")
    corpus: Path | None = None  # a user's corpus; None = synthesize `preset`
    preset: str = "task1"
    train_samples: int | None = 2000
    eval_samples: int | None = 2000
    seeds: int = 1
    mappings: list[str] = field(default_factory=lambda: list(CPFD_MAPPINGS))
    primary_mapping: str = "exp-decay"  # the CPFD row of Table 3; fixed before any result is seen
    temperatures: list[float] = field(default_factory=lambda: [1.0])
    pfd_alpha: float = 0.5
    matched_pfd: bool = True  # PFD at each mapping's mean alpha (Table 6)
    progress: bool = True


def model_dirs(options: ExperimentOptions) -> list[str]:
    """The student/teacher model folders of one seed, in training order."""
    names = ["teacher", "baseline", "pfd"]
    for m in options.mappings:
        names.append(f"cpfd-{m}")
        if options.matched_pfd:
            names.append(f"pfd-{m}")
    for t in options.temperatures:
        if t != 1.0:
            names.append(f"cpfd-{options.primary_mapping}-T{t:g}")
    return names


def check_options(options: ExperimentOptions) -> None:
    unknown = [m for m in options.mappings if m not in CPFD_MAPPINGS]
    if unknown:
        raise CpfdError(f"--mappings: unknown mapping(s) {unknown}; expected some of {list(CPFD_MAPPINGS)}")
    if not options.mappings:
        raise CpfdError("--mappings: give at least one mapping")
    if options.primary_mapping not in options.mappings:
        raise CpfdError(f"--primary-mapping {options.primary_mapping} is not among --mappings {options.mappings}")
    if options.seeds < 1:
        raise CpfdError(f"--seeds must be at least 1, got {options.seeds}")
    bad = [t for t in options.temperatures if not t > 0]
    if bad or not options.temperatures:
        raise CpfdError(f"--temperatures must be positive numbers, got {options.temperatures}")
    if not 0 <= options.pfd_alpha <= 1:
        raise CpfdError(f"--pfd-alpha must be in [0, 1], got {options.pfd_alpha}")


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def eval_paths(seed_dir: Path, name: str) -> tuple[Path, Path]:
    """Where a model's eval-split metrics (JSON) and predictions (Parquet) go in an experiment folder."""
    return seed_dir / "eval" / f"{name}.json", seed_dir / "eval" / f"{name}.parquet"


def mean_alpha(dump_dir: Path, mapping: str, params: dict) -> float:
    """The average alpha a mapping gives over the training rows: what matched PFD uses."""
    return float(np.mean(alpha_from_loss(read_teacher_losses(dump_dir), mapping, **params)))


class Experiment:
    """Runs the steps of one experiment folder; each `step_*` is idempotent."""

    def __init__(self, options: ExperimentOptions, model_options: ModelOptions, train_options: TrainOptions,
                 command: str):
        check_options(options)
        self.options, self.model_options, self.train_options = options, model_options, train_options
        self.out = Path(options.out)
        self.command = command
        self.steps_total = 0
        self.steps_done = 0

    # ---- bookkeeping ----------------------------------------------------------------------
    def announce(self, what: str) -> None:
        self.steps_done += 1
        say(f"[{self.steps_done}/{self.steps_total}] {what}")

    def timed(self, key: str, fn, *args, **kw):
        """Run one step and record its wall time in DIR/timings.json (steps reused cost nothing)."""
        start = time.perf_counter()
        result = fn(*args, **kw)
        path = self.out / "timings.json"
        timings = json.loads(path.read_text()) if path.exists() else {}
        timings[key] = round(time.perf_counter() - start, 2)
        atomic_write_json(path, timings)
        return result

    # ---- steps ------------------------------------------------------------------------------
    def corpus(self) -> Corpus:
        if self.options.corpus is not None:
            return Corpus(self.options.corpus)
        path = self.out / "corpus"
        if (path / CORPUS_JSON).exists():
            return Corpus(path)
        from cpfd.pipeline.synth import write_synthetic_corpus

        say(f"synthesizing corpus {path} (preset {self.options.preset})")
        write_synthetic_corpus(path, preset=self.options.preset, train_samples=self.options.train_samples,
                               eval_samples=self.options.eval_samples, seed=0, overwrite=True,
                               progress=self.options.progress)
        return Corpus(path)

    def train(self, seed_dir: Path, name: str, role: str, seed: int) -> None:
        out = seed_dir / name
        self.announce(f"{seed_dir.name}: train {name}")
        if training_finished(out):
            return
        resume = (out / CHECKPOINT).exists()
        options = TrainOptions(**{**asdict(self.train_options), "seed": seed})
        self.timed(f"{seed_dir.name}/{name}", train_model, self.corpus_path, out, role=role,
                   model_options=self.model_options, train_options=options, overwrite=not resume,
                   resume=resume, command=f"{self.command} (step {name})")

    def dump(self, seed_dir: Path, split: str) -> Path:
        from cpfd.pipeline.dump_teacher import dump_teacher

        out = seed_dir / ("dump" if split == "train" else "dump-eval")
        self.announce(f"{seed_dir.name}: dump-teacher --split {split}")
        if not (out / DUMP_MANIFEST).exists():
            self.timed(f"{seed_dir.name}/{out.name}", dump_teacher, seed_dir / "teacher", self.corpus_path, out,
                       split=split, device=self.train_options.device, progress=self.options.progress)
        return out

    def distill(self, seed_dir: Path, name: str, seed: int, mapping: str, params: dict, temperature: float) -> dict:
        from cpfd.pipeline.distill import distill

        out = seed_dir / name
        self.announce(f"{seed_dir.name}: distill {name} ({mapping}, T={temperature:g})")
        if not training_finished(out):
            resume = (out / CHECKPOINT).exists()
            options = TrainOptions(**{**asdict(self.train_options), "seed": seed})
            self.timed(f"{seed_dir.name}/{name}", distill, self.corpus_path, seed_dir / "dump", out,
                       mapping=mapping, params=params, temperature=temperature, model_options=self.model_options,
                       train_options=options, overwrite=not resume, resume=resume,
                       command=f"{self.command} (step {name})", announce=say)
        return read_training_record(out)["distillation"]

    def evaluate(self, seed_dir: Path, name: str) -> dict:
        out = seed_dir / name
        metrics_path, predictions = eval_paths(seed_dir, name)
        if metrics_path.exists():
            return json.loads(metrics_path.read_text())
        metrics = evaluate_model(out, self.corpus_path, split="eval", out=predictions,
                                 device=self.train_options.device, progress=False)
        atomic_write_json(metrics_path, metrics)
        return metrics

    def run_seed(self, seed: int) -> dict:
        seed_dir = self.out / f"seed-{seed}"
        o = self.options
        self.train(seed_dir, "teacher", "teacher", seed)
        self.train(seed_dir, "baseline", "student", seed)
        dump = self.dump(seed_dir, "train")
        self.dump(seed_dir, "eval")
        runs = {"pfd": self.distill(seed_dir, "pfd", seed, "constant", {"alpha": o.pfd_alpha}, 1.0)}
        for mapping in o.mappings:
            runs[f"cpfd-{mapping}"] = self.distill(seed_dir, f"cpfd-{mapping}", seed, mapping, {}, 1.0)
            if o.matched_pfd:
                alpha = mean_alpha(dump, mapping, runs[f"cpfd-{mapping}"]["params"])
                runs[f"pfd-{mapping}"] = self.distill(seed_dir, f"pfd-{mapping}", seed, "constant",
                                                      {"alpha": round(alpha, 6)}, 1.0)
        for t in o.temperatures:
            if t != 1.0:
                name = f"cpfd-{o.primary_mapping}-T{t:g}"
                runs[name] = self.distill(seed_dir, name, seed, o.primary_mapping, {}, t)
        self.announce(f"{seed_dir.name}: evaluate {len(model_dirs(o))} models on the eval split")
        metrics = {name: self.evaluate(seed_dir, name) for name in model_dirs(o)}
        for name, run in runs.items():
            metrics[name]["distillation"] = run
            if run["mapping"] != "constant":
                metrics[name]["distillation"]["mean_alpha"] = mean_alpha(dump, run["mapping"], run["params"])
        return metrics

    def settings(self) -> dict:
        """What the finished steps in DIR depend on; seeds, mappings and temperatures may grow."""
        o = self.options
        train = {k: v for k, v in asdict(self.train_options).items() if k not in ("progress", "num_workers", "device")}
        return {
            "corpus": str(o.corpus) if o.corpus is not None else {"preset": o.preset, "train_samples": o.train_samples,
                                                                   "eval_samples": o.eval_samples},
            "model_options": asdict(self.model_options),
            "train_options": train,
            "pfd_alpha": o.pfd_alpha,
        }

    def check_settings(self) -> None:
        """Refuse to mix steps trained with other settings into one report."""
        path = self.out / "experiment.json"
        settings = json.loads(json.dumps(self.settings(), default=str))
        if path.exists():
            before = json.loads(path.read_text())
            changed = sorted(k for k in settings if settings[k] != before.get(k))
            if changed:
                raise CpfdError(f"{self.out} holds an experiment run with other settings ({', '.join(changed)}: "
                                f"{[before.get(k) for k in changed]} then, {[settings[k] for k in changed]} now); "
                                "use another --out")
        else:
            atomic_write_json(path, settings)

    def run(self) -> dict:
        o = self.options
        check_paths({"--out": self.out}, {"--corpus": o.corpus, "--vision-model": self.model_options.vision_model,
                                          "--text-model": self.model_options.text_model})
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_settings()
        corpus = self.corpus()
        self.corpus_path = corpus.path
        if corpus.num_rows("eval") == 0:
            raise CpfdError(f"{corpus.path}: the eval split is empty; the experiment evaluates on it")
        if not corpus.privileged_features:
            raise CpfdError(f"{corpus.path}: the corpus has no privileged features: there is nothing to distill")
        per_seed = 4 + (len(model_dirs(o)) - 2) + 1  # trainings + dumps + distills + evaluate
        self.steps_total = o.seeds * per_seed
        results = {seed: self.run_seed(seed) for seed in range(o.seeds)}

        from cpfd.pipeline.report import write_report

        say("writing the report")
        return write_report(self.out, corpus, o, results, self.model_options, self.train_options, self.command)


def run_experiment(options: ExperimentOptions, model_options: ModelOptions, train_options: TrainOptions,
                   command: str = "") -> dict:
    return Experiment(options, model_options, train_options, command).run()
