"""Benchmark: samples/s and peak memory of one teacher and one student training epoch.

    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --repeats 3 --threads 2 --device cuda

The corpus is `cpfd synth --preset task1` at its default sizes (3,000 train + 3,000 eval videos,
4 frames of 32x32, title + OCR text, 3 features, 26 privileged features), written once into the
work dir. Each repeat runs, in a fresh subprocess each and alternating the order,

    teacher   teacher.train.train_teacher        DF-X-VLM, reads privileged too
    student   student.train.train_student        X-VLM (= `cpfd train-student`)

with the default ModelOptions and TrainOptions(epochs=1) (batch 32, AdamW, clipping, the eval
pass on the eval split, the best-epoch save and the checkpoint). It reports

    samples/s     training.json's samples_per_s: the training loop only (data loading, forward,
                  backward, step), not the eval pass
    loop s        train rows / samples/s
    loop CPU s    CPU seconds of the same loop (`common.LoopClock`): steadier than wall time when
                  other jobs share the box; samples per CPU s = train rows / loop CPU s
    stage s       the whole train_teacher / train_student call: tokenizer, model build, epoch, eval, saving
    peak RSS      the subprocess's own VmHWM (its ru_maxrss), and RSS after the imports
    CUDA peak     torch.cuda.max_memory_allocated, on a GPU

and the teacher/student ratios, from the median over repeats. Nothing is asserted: a shared
2-core box is noisy, read the numbers next to each other.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402


def measure(spec: dict) -> dict:
    """In a fresh process: one training epoch of `spec["role"]`."""
    common.set_threads(spec["threads"])
    from cpfd.pipeline.options import ModelOptions
    from cpfd.student.train import train_student
    from cpfd.teacher.train import train_teacher
    from cpfd.pipeline.options import TrainOptions
    from cpfd.storage.corpus import Corpus

    rss_after_import = common.peak_rss_mb()
    options = TrainOptions(epochs=1, max_steps=spec["max_steps"], batch_size=spec["batch_size"],
                           device=spec["device"], progress=False, seed=0)
    out = common.fresh_dir(Path(spec["out"]))
    clock = common.LoopClock()
    start = time.perf_counter()
    clock.start()
    train = train_teacher if spec["role"] == "teacher" else train_student
    record = train(spec["corpus"], out, model_options=ModelOptions(),
                         train_options=options, overwrite=True, command="benchmarks/train_throughput.py")
    loop = clock.stop()
    stage_s = time.perf_counter() - start
    epoch = record["epochs"][0]
    rows = min(epoch["step"] * options.batch_size, Corpus(spec["corpus"], verify="fast").num_rows("train"))
    return {
        "role": spec["role"], "device": record["device"], "parameters": record["num_parameters"],
        "rows": rows, "samples_per_s": epoch["samples_per_s"], "loop_s": rows / epoch["samples_per_s"],
        "loop_cpu_s": loop["loop_cpu_s"], "cpu_samples_per_s": rows / loop["loop_cpu_s"],
        "stage_s": stage_s, "peak_rss_mb": common.peak_rss_mb(), "rss_after_import_mb": rss_after_import,
        "cuda_peak_mb": common.cuda_peak_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="task1", help="cpfd synth preset of the corpus")
    parser.add_argument("--train-samples", type=int, default=None, help="train rows (default: the preset's)")
    parser.add_argument("--eval-samples", type=int, default=None, help="eval rows (default: the preset's)")
    parser.add_argument("--repeats", type=int, default=3, help="epochs per role, alternating; the median is shown")
    parser.add_argument("--batch-size", type=int, default=32, help="TrainOptions.batch_size")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many steps (quick runs)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR, help="cache of corpus and outputs")
    args = parser.parse_args()

    corpus = common.ensure_corpus(args.workdir, args.preset, args.train_samples, args.eval_samples)
    print(f"# {common.command_line()}")
    print(f"# {common.machine(args.threads, args.device)}")
    print(f"# corpus {corpus}")
    roles = ("teacher", "student")
    results = {role: [] for role in roles}
    for r in range(args.repeats):
        for role in roles if r % 2 == 0 else roles[::-1]:
            spec = {"role": role, "corpus": str(corpus), "out": str(args.workdir / f"train-{role}"),
                    "threads": args.threads, "device": args.device, "batch_size": args.batch_size,
                    "max_steps": args.max_steps}
            result = common.run_child(__file__, spec)
            results[role].append(result)
            print(f"  repeat {r + 1} {role}: {result['samples_per_s']:.1f} samples/s, "
                  f"{result['cpu_samples_per_s']:.1f} per CPU s, "
                  f"stage {result['stage_s']:.1f} s, peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)

    med = {role: {k: common.median([x[k] for x in results[role]])
                  for k in ("samples_per_s", "loop_s", "cpu_samples_per_s", "loop_cpu_s", "stage_s", "peak_rss_mb",
                            "rss_after_import_mb")}
           for role in roles}
    rows = []
    for role in roles:
        m, first = med[role], results[role][0]
        cuda = first["cuda_peak_mb"]
        rows.append([role, f"{first['parameters']:,}", first["device"], first["rows"], f"{m['samples_per_s']:.1f}",
                     f"{max(x['samples_per_s'] for x in results[role]):.1f}", f"{m['loop_s']:.1f}",
                     f"{m['cpu_samples_per_s']:.1f}", f"{m['loop_cpu_s']:.1f}",
                     f"{m['stage_s']:.1f}", f"{m['peak_rss_mb']:.0f}", f"{m['rss_after_import_mb']:.0f}",
                     "-" if cuda is None else f"{common.median([x['cuda_peak_mb'] for x in results[role]]):.0f}"])
    print()
    print(common.table(["role", "parameters", "device", "rows", "samples/s (median)", "samples/s (best)", "loop s",
                        "samples per CPU s", "loop CPU s",
                        "stage s", "peak RSS MB", "RSS after import MB", "CUDA peak MB"], rows))
    t, s = med["teacher"], med["student"]
    print()
    print(f"teacher / student: samples/s x{t['samples_per_s'] / s['samples_per_s']:.2f}, "
          f"loop time x{t['loop_s'] / s['loop_s']:.2f}, loop CPU time x{t['loop_cpu_s'] / s['loop_cpu_s']:.2f}, "
          f"peak RSS x{t['peak_rss_mb'] / s['peak_rss_mb']:.2f} "
          f"(median of {args.repeats})")
    print(f"reproduce: {common.command_line()}")


if __name__ == "__main__":
    if not common.child_entry(measure):
        main()
