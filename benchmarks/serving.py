"""Benchmark: serving a student, PyTorch model folder against the exported serving folder (`cpfd export`).

    .venv/bin/python benchmarks/serving.py
    .venv/bin/python benchmarks/serving.py --repeats 5 --train-samples 2000

On the `cpfd synth --preset task1` corpus, a student (X-VLM) trained for a few steps (its weights
only need to exist) and the teacher (DF-X-VLM) of benchmarks/common.py, it prints, side by side in
one run:

    start-up     `cpfd predict MODEL MANIFEST` in a fresh process, from the command to its last
                 answer, on a manifest of 8 videos: the PyTorch model folder against the serving
                 folder (onnxruntime, neither torch nor transformers imported); median of --repeats,
                 the two taking turns
    batch 1      one video's latency: PyTorch student, PyTorch teacher, the ONNX student on
                 onnxruntime (float32 and int8), on the same rows (median and 10th-90th percentile)
    batch 256    rows/s over batches of 256, the same models and rows

and the ratios to the PyTorch student. CPU only here; with `--device cuda` the PyTorch rows run on
the GPU (onnxruntime stays on its CPU provider). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common

MANIFEST_ROWS = 8


def measure(spec: dict) -> dict:
    """In a fresh process: batch-1 latency and batch-256 throughput of each model on the same rows."""
    common.set_threads(spec["threads"])
    import numpy as np
    import onnxruntime as ort
    import torch

    from cpfd.pipeline.data import make_loader
    from cpfd.pipeline.scoring import resolve_device
    from cpfd.pipeline.stages import dataset_for
    from cpfd.storage.corpus import Corpus
    from cpfd.student.export import graph_inputs
    from cpfd.teacher.models import load_model

    corpus = Corpus(spec["corpus"])
    device = resolve_device(spec["device"])
    results = {}
    batches = {}
    for name in ("student", "teacher"):
        model, tokenizer = load_model(Path(spec[name]))
        model.eval().to(device)
        for size in (1, 256):
            batch = next(iter(make_loader(dataset_for(model, corpus, "eval", tokenizer, size))))
            batches[(name, size)] = batch
        results[f"PyTorch {name}"] = (model, None)
    sessions = {label: ort.InferenceSession(spec[key], providers=["CPUExecutionProvider"])
                for label, key in (("ONNX student (float32)", "onnx"), ("ONNX student (int8)", "onnx_int8"))}
    names = graph_inputs(results["PyTorch student"][0].config)

    def timed(call, repeats: int) -> list[float]:
        call()  # warm-up
        out = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            out.append(time.perf_counter() - start)
        return out

    rows = {}
    for label in ("PyTorch student", "PyTorch teacher", *sessions):
        per_size = {}
        for size, repeats in ((1, spec["latency_repeats"]), (256, spec["throughput_repeats"])):
            if label.startswith("PyTorch"):
                name = label.split()[1]
                model = results[label][0]
                batch = {k: v.to(device) for k, v in batches[(name, size)].items()}

                def call(model=model, batch=batch):
                    with torch.inference_mode():
                        model(batch)
            else:
                feed = {n: batches[("student", size)][n].numpy() for n in names}
                session = sessions[label]

                def call(session=session, feed=feed):
                    session.run(["probs"], feed)
            per_size[size] = timed(call, repeats)
        lat = np.array(per_size[1]) * 1e3
        rows[label] = {"latency_ms": float(np.median(lat)), "p10": float(np.percentile(lat, 10)),
                       "p90": float(np.percentile(lat, 90)),
                       "rows_per_s": 256 / statistics.median(per_size[256])}
    return rows


def startup(cpfd: Path, model: Path, manifest: Path) -> float:
    start = time.perf_counter()
    subprocess.run([str(cpfd), "predict", str(model), str(manifest), "--quiet"], check=True,
                   capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    if common.child_entry(measure):
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--eval-samples", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="start-up runs of each path")
    parser.add_argument("--latency-repeats", type=int, default=50)
    parser.add_argument("--throughput-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=common.DEFAULT_WORKDIR)
    args = parser.parse_args()
    cpfd = Path(sys.executable).with_name("cpfd")
    print(f"# {common.command_line()}\n# {common.machine(args.threads, args.device)}")
    corpus = common.ensure_corpus(args.workdir, "task1", args.train_samples, args.eval_samples, 0)
    teacher = common.ensure_teacher(args.workdir, corpus, 20, args.threads, args.device)
    student = args.workdir / "serving-student"
    if not (student / "model.safetensors").exists():
        subprocess.run([str(cpfd), "train-student", str(corpus), "--out", str(student), "--max-steps", "20",
                        "--overwrite", "--quiet"], check=True, capture_output=True)
    serve = args.workdir / "serving-onnx"
    serve_int8 = args.workdir / "serving-onnx-int8"
    for out, extra in ((serve, []), (serve_int8, ["--quantize", "int8"])):
        subprocess.run([str(cpfd), "export", str(student), "--out", str(out), "--overwrite", *extra],
                       check=True, capture_output=True)
    manifest_dir = common.fresh_dir(args.workdir / "serving-manifest")
    subprocess.run([str(cpfd), "export-manifest", str(corpus), str(manifest_dir), "--limit", str(MANIFEST_ROWS),
                    "--no-labels", "--overwrite"], check=True, capture_output=True)
    manifest = manifest_dir / "manifest.jsonl"

    times = {"PyTorch model folder": [], "serving folder (onnxruntime)": []}
    for r in range(args.repeats):  # the two paths take turns
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for label in order:
            times[label].append(startup(cpfd, student if label.startswith("PyTorch") else serve, manifest))
    torch_s = statistics.median(times["PyTorch model folder"])
    print(f"\n`cpfd predict` start-up to its last answer ({MANIFEST_ROWS} videos, a fresh process, median of "
          f"{args.repeats}):")
    print(common.table(["path", "seconds (median)", "range", "vs PyTorch"],
                       [[label, f"{statistics.median(v):.2f}", f"{min(v):.2f}-{max(v):.2f}",
                         f"x{torch_s / statistics.median(v):.1f}"] for label, v in times.items()]))

    rows = common.run_child(__file__, {"corpus": str(corpus), "student": str(student), "teacher": str(teacher),
                                       "onnx": str(serve / "model.onnx"), "onnx_int8": str(serve_int8 / "model.onnx"),
                                       "threads": args.threads, "device": args.device,
                                       "latency_repeats": args.latency_repeats,
                                       "throughput_repeats": args.throughput_repeats})
    base = rows["PyTorch student"]
    print(f"\nserving cost on the same eval rows (batch 1: median of {args.latency_repeats}; batch 256: median of "
          f"{args.throughput_repeats}):")
    print(common.table(["model", "batch-1 ms (median)", "p10-p90", "batch-1 vs PyTorch student",
                        "batch-256 rows/s", "vs PyTorch student"],
                       [[label, f"{r['latency_ms']:.2f}", f"{r['p10']:.2f}-{r['p90']:.2f}",
                         f"x{base['latency_ms'] / r['latency_ms']:.2f}", f"{r['rows_per_s']:.0f}",
                         f"x{r['rows_per_s'] / base['rows_per_s']:.2f}"] for label, r in rows.items()]))
    print(f"reproduce: {common.command_line()}")


if __name__ == "__main__":
    main()
