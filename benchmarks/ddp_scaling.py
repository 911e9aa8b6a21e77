"""Benchmark: samples/s of train-student and distill at 1 and N processes, side by side in one run.

    .venv/bin/python benchmarks/ddp_scaling.py                         # CPU: 1 vs 2 processes, gloo
    .venv/bin/python benchmarks/ddp_scaling.py --device cuda --nproc 1,8   # a GPU node: nccl

The corpus is `cpfd synth --preset task1` (3,000 train videos; 4 frames of 32x32, title and OCR
text, features) written with `--row-group-rows 64`, so every process x DataLoader worker has row
groups of its own (47 row groups), and the dump of a briefly trained teacher (`common`). Each repeat
runs, alternating the order,

    cpfd train-student CORPUS --out ... --epochs 1 --val-fraction 0.1            1 process
    torchrun --standalone --nproc-per-node N -m cpfd.cli train-student ...       N processes
    cpfd distill CORPUS DUMP --mapping exp-decay ...                             and the same for distill

at the same global --batch-size (so the same number of optimizer steps; 32, the default, and 128),
with --threads torch threads per process (OMP_NUM_THREADS; default 1). A small model's step has a
fixed cost that does not shrink with the batch, so splitting a batch of 32 into two of 16 gains
less than splitting 128 into two of 64: the table shows both. samples/s is training.json's `samples_per_s`:
the epoch's training rows over its wall time, every rank's rows counted, not the evaluation pass.
The scaling efficiency is (samples/s at N) / (N x samples/s at 1). The load average before and after
each run is printed: on a shared box, processes competing for the cores lower the N-process number
most. Nothing is asserted; read the numbers side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def run(command: list[str], threads: int) -> float:
    """Run one training command; its epoch's samples/s from training.json."""
    out = Path(command[command.index("--out") + 1])
    common.fresh_dir(out)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-3000:]}")
    record = json.loads((out / "training.json").read_text())
    return record["epochs"][0]["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR)
    parser.add_argument("--nproc", default="1,2", help="process counts to compare, e.g. 1,2 or 1,4,8")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--batch-sizes", default="32,128", help="global batch sizes to compare, e.g. 32,128")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    counts = [int(n) for n in args.nproc.split(",")]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    from cpfd.experiment.synth import write_synthetic_corpus

    corpus = args.workdir / "corpus-task1-rg64"
    if not (corpus / "corpus.json").exists():
        write_synthetic_corpus(corpus, preset="task1", row_group_rows=64, overwrite=True, progress=False)
    teacher = common.ensure_teacher(args.workdir, corpus, steps=40, threads=args.threads, device=args.device)
    dump = common.ensure_dump(args.workdir, teacher, corpus, threads=args.threads, device=args.device)

    same = ["--epochs", "1", "--val-fraction", "0.1", "--device", args.device, "--quiet"]
    stages = {"train-student": ["train-student", str(corpus)],
              "distill": ["distill", str(corpus), str(dump), "--mapping", "exp-decay"]}
    results: dict[tuple[str, int, int], list[float]] = {}
    print(f"# {common.command_line()}\n# {common.machine(args.threads, args.device)}; "
          f"{args.repeats} repeats, alternating order", flush=True)
    for repeat in range(args.repeats):
        order = counts if repeat % 2 == 0 else counts[::-1]
        for batch in batch_sizes:
            for stage, command in stages.items():
                for n in order:
                    out = args.workdir / f"ddp-{stage}-{n}"
                    launch = ([sys.executable, "-m", "cpfd.cli"] if n == 1 else
                              [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                               str(n), "-m", "cpfd.cli"])
                    load = os.getloadavg()[0]
                    start = time.perf_counter()
                    rate = run([*launch, *command, "--out", str(out), "--batch-size", str(batch), *same], args.threads)
                    results.setdefault((stage, batch, n), []).append(rate)
                    print(f"  repeat {repeat + 1}: {stage:<13} batch {batch:>4}, {n} process(es): {rate:7.1f} samples/s "
                          f"(command {time.perf_counter() - start:5.1f} s, load {load:.2f} -> {os.getloadavg()[0]:.2f})",
                          flush=True)

    rows = []
    for stage in stages:
        for batch in batch_sizes:
            one = common.median(results[(stage, batch, counts[0])])
            for n in counts:
                rate = common.median(results[(stage, batch, n)])
                spread = f"{min(results[(stage, batch, n)]):.0f}-{max(results[(stage, batch, n)]):.0f}"
                rows.append([stage, batch, n, f"{rate:.1f}", spread, f"x{rate / one:.2f}",
                             f"{rate / one / (n / counts[0]):.0%}"])
    print()
    print(common.table(["command", "global batch", "processes", "samples/s (median)", "range", f"vs {counts[0]}",
                        "scaling efficiency"], rows))


if __name__ == "__main__":
    main()
