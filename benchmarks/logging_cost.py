"""What metrics.jsonl costs a training: distill with logging at the default interval against none.

    .venv/bin/python benchmarks/logging_cost.py                 # 3 repeats of each, 2 epochs on task1
    .venv/bin/python benchmarks/logging_cost.py --repeats 5 --epochs 1 --tensorboard

Each repeat runs `student.distill.distill` (exp-decay, calibrated; the default model and batch)
twice, in a fresh process each, the order alternating between repeats: once with `log_every` at
its default (`TrainOptions.log_every`, a metrics.jsonl line every 20 steps with alpha's histogram,
a host read of the sums and a JSON line; plus TensorBoard events with --tensorboard) and once with
`log_every=0` (no file, no histogram; the progress bar is off in both). Both sum the loss's parts
on the device every step, since training.json's epoch lines hold them. It prints per variant the
median training samples/s (training.json's, the loop only) and the CPU seconds of the whole call
(steadier than wall time on a shared machine), and the ratios logged / not logged, repeat by
repeat and of the medians. Target: logging costs no more than 2%.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def measure(spec: dict) -> dict:
    """In a fresh process: one distillation, logged or not."""
    common.set_threads(spec["threads"])
    from cpfd.pipeline.options import ModelOptions, TrainOptions
    from cpfd.student.distill import distill

    options = TrainOptions(epochs=spec["epochs"], log_every=spec["log_every"], tensorboard=spec["tensorboard"],
                           device=spec["device"], progress=False, seed=0)
    out = common.fresh_dir(Path(spec["out"]))
    cpu, wall = time.process_time(), time.perf_counter()
    record = distill(spec["corpus"], spec["dump"], out, mapping="exp-decay", params={}, model_options=ModelOptions(),
                     train_options=options, overwrite=True, command="benchmarks/logging_cost.py", announce=lambda _: None)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").exists() else []
    return {"samples_per_s": statistics.mean(e["samples_per_s"] for e in record["epochs"]), "cpu_s": cpu,
            "wall_s": wall, "lines": len(lines)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tensorboard", action="store_true", help="also TensorBoard events in the logged runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR)
    args = parser.parse_args()

    from cpfd.pipeline.options import TrainOptions

    corpus = common.ensure_corpus(args.workdir, "task1")
    teacher = common.ensure_teacher(args.workdir, corpus, 20, args.threads, args.device)
    dump = common.ensure_dump(args.workdir, teacher, corpus, args.threads, args.device)
    every = TrainOptions().log_every
    variants = {f"logged (every {every} steps)": every, "not logged (--log-every 0)": 0}
    base = {"corpus": str(corpus), "dump": str(dump), "epochs": args.epochs, "threads": args.threads,
            "device": args.device, "tensorboard": args.tensorboard}
    results = {name: [] for name in variants}
    for r in range(args.repeats):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            spec = {**base, "log_every": variants[name], "out": str(args.workdir / "logging-cost" / str(variants[name]))}
            result = common.run_child(__file__, spec)
            results[name].append(result)
            print(f"  repeat {r + 1}, {name}: {result['samples_per_s']:.0f} samples/s, {result['cpu_s']:.1f} CPU s, "
                  f"{result['lines']} metrics.jsonl lines", file=sys.stderr, flush=True)

    logged, plain = (results[name] for name in variants)
    print(f"# metrics.jsonl's cost: distill exp-decay, {args.epochs} epoch(s) of task1, {args.repeats} repeats"
          + (", TensorBoard on" if args.tensorboard else ""))
    print(f"machine: {common.machine(args.threads, args.device)}")
    print(f"command: {common.command_line()}\n")
    rows = [[name, f"{statistics.median(r['samples_per_s'] for r in res):.0f}",
             f"{statistics.median(r['cpu_s'] for r in res):.1f}", str(res[0]["lines"])] for name, res in results.items()]
    print(common.table(["variant", "samples/s (median)", "CPU s (median)", "lines"], rows))
    speed = [a["samples_per_s"] / b["samples_per_s"] for a, b in zip(logged, plain)]
    cpu = [a["cpu_s"] / b["cpu_s"] for a, b in zip(logged, plain)]
    print(f"\nlogged / not logged, repeat by repeat: samples/s {', '.join(f'{x:.3f}' for x in speed)}; "
          f"CPU s {', '.join(f'{x:.3f}' for x in cpu)}")
    print(f"median: samples/s {statistics.median(speed):.3f}x, CPU s {statistics.median(cpu):.3f}x "
          f"(target: samples/s >= 0.98x)")
    print(json.dumps({"speed_ratios": speed, "cpu_ratios": cpu}))


if __name__ == "__main__":
    if not common.child_entry(measure):
        main()
