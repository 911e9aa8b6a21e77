"""Benchmark: what distilling from a teacher dump costs next to plain student training and online KD.

    .venv/bin/python benchmarks/distill_cost.py
    .venv/bin/python benchmarks/distill_cost.py --repeats 2 --mapping threshold --threads 2

On the `cpfd synth --preset task1` corpus (default sizes: 3,000 train + 3,000 eval videos), a
DF-X-VLM trained for a few steps and its dump (`dump_teacher`, train split) are made once in the
work dir (not timed). One student epoch is then trained three ways:

    train-student  `student.train.train_student`: cross-entropy, the baseline
    distill        `student.distill.distill(corpus, dump, mapping=...)`: CPFD from the stored
                   teacher logits and losses (parameters calibrated from the dump, as the CLI does)
    online         the same CPFD loss and the same loop (`pipeline.train.train`), but the teacher
                   is resident (eval mode, no grad) and runs forward on every batch to produce the
                   teacher logits and teacher loss on the fly; its dataset reads `privileged` too
                   (`Inputs.for_corpus(corpus, privileged=True)`). Mapping parameters: the ones
                   distill resolved from the dump, so the two optimize the same loss.

All three use the default ModelOptions and TrainOptions(epochs=1) (batch 32) and the same seed,
and are measured in two ways:

1. Separately (`--repeats`, default 1, order rotating): each method in a fresh subprocess, so its
   peak RSS (VmHWM = its ru_maxrss; CUDA peak on a GPU) is its own. Also reported: epoch s (train
   rows / training.json's samples_per_s: the loop, not the eval pass), epoch CPU s (the same loop's
   CPU seconds, `common.LoopClock`) and stage s (the whole call: for distill also the dump
   verification and calibration, for online also loading the teacher).

2. Paired (`--paired`, on by default): the shared box drifts by 10-30% between two epochs run a
   minute apart, more than the 5% to be seen. So one subprocess runs the three real calls above
   in three threads that take strict turns, one training step each (a baton is handed on each
   time a loss function is called: the loss functions the stages pass to `train` are wrapped,
   nothing else changes; only one thread runs at any moment). A step of each method is timed
   (wall, and the thread's CPU) between two consecutive loss calls, so all three are measured
   within the same second, step after step. Reported: seconds per step, epoch s = mean step x
   steps, the ratios, and their spread over the four quarters of the epoch. The teacher forward
   (online) is timed around its call (synchronized on CUDA); share = teacher forward / online time.

Targets: distill within 5% of train-student in epoch time and peak RSS; online slower than
distill by at least the teacher's forward share, i.e. (online - distill) / online >= share.
Time verdicts use the paired measure, memory the separate subprocesses. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

METHODS = ("train-student", "distill", "online")


def online_distill(corpus_path, teacher_dir, out, *, mapping: str, params: dict, temperature: float,
                   train_options, clock: list, before_loss=None) -> dict:
    """Online CPFD: `pipeline.train.train` with a loss that runs the resident teacher on each batch.

    `clock` accumulates the wall (`clock[0]`) and CPU (`clock[1]`, this thread's) seconds of the
    teacher's forward. `before_loss()`, if given, is called first in every loss call (paired mode).
    """
    import torch
    import torch.nn.functional as F

    from cpfd.pipeline.data import CorpusBatches, Inputs
    from cpfd.pipeline.options import ModelOptions
    from cpfd.pipeline.stages import dataset_for, prepare_tokenizer
    from cpfd.student.train import build_student
    from cpfd.teacher.models import load_model
    from cpfd.pipeline.scoring import resolve_device
    from cpfd.pipeline.train import set_seed, train
    from cpfd.storage.corpus import Corpus
    from cpfd.student.cpfd import alpha_from_loss, cpfd_loss

    corpus = Corpus(corpus_path)
    teacher, teacher_tokenizer = load_model(teacher_dir)
    device = resolve_device(train_options.device)
    teacher.to(device).eval().requires_grad_(False)
    tokenizer = prepare_tokenizer(corpus, ModelOptions())  # what train_student / distill give the student
    if tokenizer is not None and tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise RuntimeError("student and teacher tokenizers differ: one batch cannot feed both")
    set_seed(train_options.seed)
    student = build_student(corpus, tokenizer, ModelOptions())
    if teacher.config.max_length != student.config.max_length:
        raise RuntimeError("student and teacher read text of different lengths")
    # One batch feeds both models: the student ignores `privileged`, the teacher needs it.
    train_set = CorpusBatches(corpus.path, "train", Inputs.for_corpus(corpus, privileged=True), tokenizer=tokenizer,
                              max_length=student.config.max_length, batch_size=train_options.batch_size,
                              shuffle=True, seed=train_options.seed)
    eval_set = dataset_for(student, corpus, "eval", tokenizer, train_options.batch_size) if corpus.num_rows("eval") else None
    cuda = device.type == "cuda"

    def loss_fn(output, batch: dict):
        if before_loss is not None:
            before_loss()
        if cuda:
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.thread_time()
        with torch.no_grad():
            teacher_logits = teacher(batch).logits.float()  # (B, C)
        if cuda:
            torch.cuda.synchronize()
        clock[0] += time.perf_counter() - start
        clock[1] += time.thread_time() - start_cpu
        teacher_loss = F.cross_entropy(teacher_logits, batch["labels"], reduction="none")  # (B,), as stored by dump-teacher
        alpha = alpha_from_loss(teacher_loss, mapping, **params)  # (B,)
        loss = cpfd_loss(output.logits, teacher_logits, batch["labels"], alpha, temperature)
        return loss, {"alpha": alpha.mean().item()}

    record = {"stage": "online-distill (benchmark)", "num_parameters": sum(p.numel() for p in student.parameters())}
    return train(student, train_set, eval_set, loss_fn, Path(out), train_options, record)


def run_method(method: str, spec: dict, options, clock: list, before_loss=None) -> dict:
    """One epoch of `method` through the library's own entry point; returns the training record."""
    from cpfd.student.distill import distill
    from cpfd.pipeline.options import ModelOptions
    from cpfd.student.train import train_student

    out = common.fresh_dir(Path(spec["out"]) / method)
    if method == "train-student":
        return train_student(spec["corpus"], out, model_options=ModelOptions(), train_options=options,
                           overwrite=True, command="benchmarks/distill_cost.py")
    if method == "distill":
        return distill(spec["corpus"], spec["dump"], out, mapping=spec["mapping"], params={},
                       temperature=spec["temperature"], model_options=ModelOptions(), train_options=options,
                       overwrite=True, command="benchmarks/distill_cost.py", announce=lambda line: None)
    return online_distill(spec["corpus"], spec["teacher"], out, mapping=spec["mapping"], params=spec["params"],
                          temperature=spec["temperature"], train_options=options, clock=clock, before_loss=before_loss)


def train_options(spec: dict):
    from cpfd.pipeline.options import TrainOptions

    return TrainOptions(epochs=1, max_steps=spec["max_steps"], batch_size=spec["batch_size"],
                        device=spec["device"], progress=False, seed=0)


def measure_one(spec: dict) -> dict:
    """In a fresh process: one epoch of `spec["method"]` alone (memory, whole-stage time)."""
    from cpfd.student.distill import distill  # noqa: F401  (the same imports for every method)
    from cpfd.storage.corpus import Corpus

    rss_after_import = common.peak_rss_mb()
    options = train_options(spec)
    clock = [0.0, 0.0]
    loop_clock = common.LoopClock()
    start = time.perf_counter()
    loop_clock.start()
    record = run_method(spec["method"], spec, options, clock)
    loop = loop_clock.stop()
    stage_s = time.perf_counter() - start
    epoch = record["epochs"][0]
    rows = min(epoch["step"] * options.batch_size, Corpus(spec["corpus"], verify="fast").num_rows("train"))
    return {
        "method": spec["method"], "device": record["device"], "rows": rows, "samples_per_s": epoch["samples_per_s"],
        "epoch_s": rows / epoch["samples_per_s"], "epoch_cpu_s": loop["loop_cpu_s"], "stage_s": stage_s,
        "teacher_forward_s": clock[0], "peak_rss_mb": common.peak_rss_mb(), "rss_after_import_mb": rss_after_import,
        "cuda_peak_mb": common.cuda_peak_mb(),
    }


class Turns:
    """Strict round-robin among named threads: exactly one runs between two `switch` calls.

    Nobody runs a timed step until every thread has reached its first `switch` (its set-up is
    done); a thread that ends calls `leave` and the turn passes on.
    """

    def __init__(self, names):
        self.names, self.live, self.arrived = list(names), list(names), set()
        self.current = None
        self.cond = threading.Condition()

    def _after(self, name):
        i = self.live.index(name)
        return self.live[(i + 1) % len(self.live)]

    def _start_if_ready(self):
        if self.current is None and len(self.arrived) == len(self.names) and self.live:
            self.current = self.live[0]

    def switch(self, name):
        with self.cond:
            if name in self.arrived:
                self.current = self._after(name)
            else:
                self.arrived.add(name)
                self._start_if_ready()
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.current == name)

    def leave(self, name):
        with self.cond:
            self.arrived.add(name)
            if self.current == name:
                self.current = self._after(name) if len(self.live) > 1 else None
            self.live.remove(name)
            self._start_if_ready()
            self.cond.notify_all()


def measure_paired(spec: dict) -> dict:
    """In a fresh process: the three methods in three threads taking turns, one step each."""
    import cpfd.student.distill as distill_module
    import cpfd.student.train as stages_module

    options = train_options(spec)
    turns = Turns(METHODS)
    steps = {m: {"wall": [], "cpu": [], "resume": None} for m in METHODS}
    clock = [0.0, 0.0]
    teacher_steps = []  # online teacher forward seconds (wall) per timed step

    def boundary(method: str) -> None:
        """A loss call of `method`: close its step, hand the turn on, open its next step on return."""
        s = steps[method]
        if s["resume"] is not None:
            s["wall"].append(time.perf_counter() - s["resume"][0])
            s["cpu"].append(time.thread_time() - s["resume"][1])
            if method == "online":
                teacher_steps.append(clock[0] - s["teacher_at_resume"])
        turns.switch(method)
        s["resume"] = (time.perf_counter(), time.thread_time())
        s["teacher_at_resume"] = clock[0]

    # Wrap the loss functions the two library stages hand to `train` (looked up as module globals).
    def cross_entropy_loss(output, batch, _inner=stages_module.cross_entropy_loss):
        boundary("train-student")
        return _inner(output, batch)

    def cpfd_objective(*args, _inner=distill_module.cpfd_objective, **kwargs):
        loss_fn = _inner(*args, **kwargs)

        def wrapped(output, batch):
            boundary("distill")
            return loss_fn(output, batch)

        return wrapped

    stages_module.cross_entropy_loss = cross_entropy_loss
    distill_module.cpfd_objective = cpfd_objective
    errors = {}

    def worker(method: str) -> None:
        try:
            run_method(method, spec, options, clock, before_loss=lambda: boundary("online"))
        except BaseException as e:  # reported by the parent
            errors[method] = f"{type(e).__name__}: {e}"
        finally:
            turns.leave(method)

    threads = [threading.Thread(target=worker, args=(m,), name=m) for m in METHODS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"paired run failed: {errors}")
    return {"steps": {m: {"wall": steps[m]["wall"], "cpu": steps[m]["cpu"]} for m in METHODS},
            "teacher_wall": teacher_steps, "batch_size": options.batch_size}


def measure(spec: dict) -> dict:
    common.set_threads(spec["threads"])
    return measure_paired(spec) if spec["method"] == "paired" else measure_one(spec)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report_separate(results: dict) -> None:
    keys = ("epoch_s", "epoch_cpu_s", "stage_s", "peak_rss_mb", "rss_after_import_mb", "teacher_forward_s")
    med = {m: {k: common.median([x[k] for x in results[m]]) for k in keys} for m in METHODS}
    base = med["train-student"]
    rows = []
    for m in METHODS:
        x = med[m]
        cuda = [y["cuda_peak_mb"] for y in results[m] if y["cuda_peak_mb"] is not None]
        rows.append([m, results[m][0]["rows"], f"{x['epoch_s']:.1f}", f"{x['epoch_cpu_s']:.1f}", f"{x['stage_s']:.1f}",
                     f"{x['peak_rss_mb']:.0f}", f"{x['rss_after_import_mb']:.0f}",
                     f"{common.median(cuda):.0f}" if cuda else "-",
                     f"{x['teacher_forward_s']:.1f}" if m == "online" else "-",
                     f"{x['epoch_s'] / base['epoch_s']:.3f}", f"{x['peak_rss_mb'] / base['peak_rss_mb']:.3f}"])
    n = len(results["train-student"])
    print(f"\nSeparately, one subprocess per method (median of {n}):\n")
    print(common.table(["method", "rows", "epoch s", "epoch CPU s", "stage s", "peak RSS MB", "RSS after import MB",
                        "CUDA peak MB", "teacher fwd s", "epoch / train-student", "RSS / train-student"], rows))
    rss_ratio = med["distill"]["peak_rss_mb"] / base["peak_rss_mb"]
    per_run = "; ".join(m + " " + "/".join(f"{y['peak_rss_mb']:.0f}" for y in results[m]) for m in METHODS)
    print(f"\n[memory] distill / train-student peak RSS x{rss_ratio:.3f} -> target <= x1.05 {verdict(rss_ratio <= 1.05)}; "
          f"online / distill x{med['online']['peak_rss_mb'] / med['distill']['peak_rss_mb']:.3f} "
          f"(per run, MB: {per_run})")


def report_paired(paired: dict, rows_per_epoch: int) -> None:
    steps, batch = paired["steps"], paired["batch_size"]
    n = min(len(steps[m]["wall"]) for m in METHODS)
    epoch_steps = -(-rows_per_epoch // batch)

    def total(m, key, lo=0, hi=None):
        return sum(steps[m][key][lo:hi if hi is not None else n])

    quarters = [(q * n // 4, (q + 1) * n // 4) for q in range(4)]
    teacher = sum(paired["teacher_wall"][:n])
    rows = []
    for m in METHODS:
        wall, cpu = total(m, "wall"), total(m, "cpu")
        ratio_q = [total(m, "wall", a, b) / total("train-student", "wall", a, b) for a, b in quarters]
        rows.append([m, n, f"{1000 * wall / n:.1f}", f"{1000 * cpu / n:.1f}", f"{wall / n * epoch_steps:.1f}",
                     f"{wall / total('train-student', 'wall'):.3f}", f"{cpu / total('train-student', 'cpu'):.3f}",
                     f"{min(ratio_q):.3f}-{max(ratio_q):.3f}",
                     f"{1000 * teacher / n:.1f}" if m == "online" else "-"])
    print(f"\nPaired, three threads taking turns step by step in one process ({n} timed steps each):\n")
    print(common.table(["method", "steps", "ms/step (wall)", "ms/step (thread CPU)", f"epoch s ({epoch_steps} steps)",
                        "wall / train-student", "CPU / train-student", "wall ratio over the 4 quarters",
                        "teacher fwd ms/step"], rows))
    base, dist, online = total("train-student", "wall"), total("distill", "wall"), total("online", "wall")
    share = teacher / online
    saved = (online - dist) / online
    share_q = [sum(paired["teacher_wall"][a:b]) / total("online", "wall", a, b) for a, b in quarters]
    saved_q = [(total("online", "wall", a, b) - total("distill", "wall", a, b)) / total("online", "wall", a, b)
               for a, b in quarters]
    print(f"\n[time, paired] distill / train-student x{dist / base:.3f} -> target <= x1.05 {verdict(dist / base <= 1.05)}")
    print(f"[time, paired] online / distill x{online / dist:.3f}; (online - distill) / online = {100 * saved:.1f}% vs "
          f"teacher forward share {100 * share:.1f}% -> target {verdict(saved >= share)} "
          f"(per quarter: {', '.join(f'{100 * a:.1f}% vs {100 * b:.1f}%' for a, b in zip(saved_q, share_q))})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="task1", help="cpfd synth preset of the corpus")
    parser.add_argument("--train-samples", type=int, default=None, help="train rows (default: the preset's)")
    parser.add_argument("--eval-samples", type=int, default=None, help="eval rows (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=1, help="separate subprocess epochs per method (memory); median shown")
    parser.add_argument("--paired", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the three methods step by step in one process")
    parser.add_argument("--mapping", default="neg-sigmoid", help="alpha mapping (parameters calibrated from the dump)")
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    parser.add_argument("--batch-size", type=int, default=32, help="TrainOptions.batch_size")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (quick runs)")
    parser.add_argument("--teacher-steps", type=int, default=20, help="optimizer steps of the fixture teacher")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR, help="cache of corpus, teacher, dump, outputs")
    args = parser.parse_args()

    from cpfd.student.distill import resolve_mapping
    from cpfd.storage.corpus import Corpus

    corpus = common.ensure_corpus(args.workdir, args.preset, args.train_samples, args.eval_samples)
    teacher = common.ensure_teacher(args.workdir, corpus, args.teacher_steps, args.threads, args.device)
    dump = common.ensure_dump(args.workdir, teacher, corpus, args.threads, args.device)
    params, _ = resolve_mapping(Path(dump), args.mapping, {})
    print(f"# {common.command_line()}")
    print(f"# {common.machine(args.threads, args.device)}")
    print(f"# corpus {corpus}, teacher {teacher}, dump {dump}")
    print(f"# mapping {args.mapping} {params}, temperature {args.temperature:g}")
    base_spec = {"corpus": str(corpus), "teacher": str(teacher), "dump": str(dump), "out": str(args.workdir / "distill-cost"),
                 "mapping": args.mapping, "params": params, "temperature": args.temperature, "threads": args.threads,
                 "device": args.device, "batch_size": args.batch_size, "max_steps": args.max_steps}
    results = {m: [] for m in METHODS}
    for r in range(args.repeats):
        for method in METHODS[r % 3:] + METHODS[:r % 3]:
            result = common.run_child(__file__, {**base_spec, "method": method})
            results[method].append(result)
            print(f"  separate, repeat {r + 1}, {method}: epoch {result['epoch_s']:.1f} s ({result['epoch_cpu_s']:.1f} CPU s), "
                  f"stage {result['stage_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    paired = None
    if args.paired:
        start = time.perf_counter()
        paired = common.run_child(__file__, {**base_spec, "method": "paired"})
        print(f"  paired run: {time.perf_counter() - start:.0f} s", flush=True)

    if args.repeats:
        report_separate(results)
    if paired:
        rows = Corpus(corpus, verify="fast").num_rows("train")
        report_paired(paired, rows if args.max_steps is None else min(rows, args.max_steps * args.batch_size))
    print(f"\nreproduce: {common.command_line()}")


if __name__ == "__main__":
    if not common.child_entry(measure):
        main()
