"""Benchmark: `cpfd inspect` (storage.analysis.inspect_dump) on a 10-million-row teacher dump.

    .venv/bin/python benchmarks/duckdb_inspect.py
    .venv/bin/python benchmarks/duckdb_inspect.py --rows 10000000 --repeats 3

Builds, in a temp dir, a tabular corpus and its dump the way benchmarks/stream_teacher_columns.py
does (2 classes, row groups of 65,536, the dump written by storage.dump's writer), plus a
predictions file (docs/formats.md, "Predictions file") for every row. Then, in a fresh subprocess each (so peak RSS
is the analysis's own), times:

    inspect            rows, label counts, accuracy, exact quantiles, 20-bin histograms, means
    inspect + Table 1  the same with --predictions (a join of 10M teacher rows with 10M predictions)
    loss_quantiles     what `cpfd calibrate` asks for

Target (issue): inspect under 5 s on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import duckdb  # noqa: E402

from stream_teacher_columns import build_corpus, build_dump, peak_rss_mb  # noqa: E402


def build_predictions(path: Path, dump_dir: Path, seed: int = 1) -> None:
    """A student's predictions for every dumped row, written row group by row group."""
    rng = np.random.default_rng(seed)
    writer = None
    for file in sorted(dump_dir.glob("*.parquet")):
        pf = pq.ParquetFile(file)
        for g in range(pf.num_row_groups):
            rows = pf.read_row_group(g, columns=["sample_id", "label"])
            labels = rows.column("label").to_numpy()
            logits = rng.normal(size=(len(labels), 2)).astype(np.float32)
            logits[np.arange(len(labels)), labels] += 1.0
            prob = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
            table = pa.table({
                "sample_id": rows.column("sample_id"),
                "label": rows.column("label"),
                "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), 2),
                "prob": pa.array(prob.astype(np.float32)),
                "pred": pa.array((logits[:, 1] > logits[:, 0]).astype(np.int32)),
            })
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
    writer.close()


def measure(what: str, dump_dir: str, predictions: str, repeats: int) -> dict:
    from cpfd.storage.analysis import inspect_dump, loss_quantiles

    calls = {
        "inspect": lambda: inspect_dump(dump_dir),
        "inspect + Table 1": lambda: inspect_dump(dump_dir, predictions=predictions),
        "loss_quantiles": lambda: loss_quantiles(dump_dir, [0.1, 0.5, 0.9]),
    }
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        calls[what]()
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "best_s": min(times), "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", nargs=3, metavar=("WHAT", "DUMP", "PREDICTIONS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure, repeats=args.repeats)))
        return

    print(f"# {' '.join(sys.argv)}   ({os.cpu_count()} CPUs, duckdb {duckdb.__version__}, {args.rows:,} rows)")
    with tempfile.TemporaryDirectory(prefix="cpfd-bench-") as tmp:
        start = time.perf_counter()
        build_corpus(Path(tmp) / "corpus", args.rows)
        build_dump(Path(tmp) / "dump", Path(tmp) / "corpus")
        build_predictions(Path(tmp) / "predictions.parquet", Path(tmp) / "dump")
        print(f"# built corpus, dump and predictions in {time.perf_counter() - start:.1f} s")
        header = f"{'call':<20} {'median s':>9} {'best s':>8} {'M rows/s':>9} {'peak RSS':>9}"
        print(header)
        print("-" * len(header))
        for what in ("inspect", "inspect + Table 1", "loss_quantiles"):
            out = subprocess.run(
                [sys.executable, __file__, "--repeats", str(args.repeats), "--measure", what,
                 str(Path(tmp) / "dump"), str(Path(tmp) / "predictions.parquet")],
                check=True, capture_output=True, text=True,
            )
            r = json.loads(out.stdout)
            print(f"{what:<20} {r['median_s']:>9.2f} {r['best_s']:>8.2f} {args.rows / r['median_s'] / 1e6:>9.1f} {r['peak_rss_mb']:>6} MB")


if __name__ == "__main__":
    main()
