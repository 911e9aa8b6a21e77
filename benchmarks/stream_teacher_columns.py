"""Benchmark: how fast the aligned reader streams a dump's `logits` + `teacher_loss`, and its peak memory.

    .venv/bin/python benchmarks/stream_teacher_columns.py
    .venv/bin/python benchmarks/stream_teacher_columns.py --rows 1000000,5000000 --compression mixed,none,zstd

For each size it builds, in a temp dir, a tabular corpus (2 classes, row groups of 65,536 rows,
shards of 262,144 rows as `CorpusWriter` makes them; the Parquet files and corpus.json are written
directly with pyarrow so generation is fast) and a teacher dump of it through `storage.dump`'s own
writer (plan_dump / write_dump_shard / finalize_dump). Then a fresh subprocess per (size,
codec) opens the dump with `open_dump` and reads every row group in these passes:

    open         open_dump: manifest and footers, each shard's id and label digests against
                 corpus.json's (what every DataLoader worker pays once per epoch)
    first pass   the first read of every row group in a fresh process (cold Parquet readers)
    steady pass  logits + teacher_loss only: the per-row-group cost of training (median of 5)
    checks       the steady pass with the read-time checks (page checksums verified, every row finite
                 with teacher_loss = CE of its logits) against the same reader with them off, the
                 two taking turns pass by pass (median of 5 each, and their ratio)
    extra() pass the same through `TeacherDump.extra` (writable copies, the CorpusBatches path)
    verify()     the full check `cpfd distill` runs once per run: file sha256, the sample_id and
                 label columns against the corpus's, every value finite
    rerun        what `dump-teacher` pays on a rerun: over a finished dump, every shard's sha256
                 against the manifest; after a crash, every kept shard read back (values digest,
                 finite, loss = CE of the logits; the manifest set aside for that pass)

and reports rows/s (open + first pass together, as a worker sees its first epoch) and the
subprocess's peak RSS (VmHWM). Targets (from the issue): >= 20 million rows/s, < 300 MB
peak RSS, and the same peak RSS for 1M and 5M rows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from cpfd.storage.corpus import (  # noqa: E402
    CORPUS_JSON,
    fingerprint_of,
    hash_ids,
    hash_labels,
    shard_name,
)
from cpfd.storage.dump import (  # noqa: E402
    DUMP_COMPRESSION,
    cross_entropy,
    dump_provenance,
    finalize_dump,
    plan_dump,
    write_dump_shard,
)
from cpfd.storage.schema import CORPUS_SCHEMA, SCHEMA_VERSION  # noqa: E402

ROW_GROUP_ROWS = 65_536
ROWS_PER_SHARD = 262_144  # CorpusWriter's default
CLASSES = ["negative", "positive"]
# "mixed" is what storage.dump writes: zstd for sample_id and label, none for the float columns.
CODECS = {"none": "none", "zstd": "zstd", "mixed": DUMP_COMPRESSION}
REPEATS = 5  # steady and extra() passes: median of this many (a 2-core box is noisy)


def _empty_lists(n: int, value_type: pa.DataType) -> pa.ListArray:
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], type=value_type))


def build_corpus(path: Path, rows: int, seed: int = 0) -> None:
    """A tabular corpus of `rows` train rows in CORPUS_SCHEMA (empty frames and text), no eval rows."""
    rng = np.random.default_rng(seed)
    (path / "train").mkdir(parents=True)
    shards = []
    for index, start in enumerate(range(0, rows, ROWS_PER_SHARD)):
        n = min(ROWS_PER_SHARD, rows - start)
        ids = pc.binary_join_element_wise("s", pc.cast(pa.array(np.arange(start, start + n)), pa.string()), "")
        labels = pa.array(rng.integers(0, 2, n, dtype=np.int32))
        table = pa.Table.from_arrays(
            [
                ids,
                labels,
                pa.repeat("", n),
                pa.repeat("", n),
                _empty_lists(n, pa.binary()),
                _empty_lists(n, pa.float32()),
                _empty_lists(n, pa.float32()),
            ],
            schema=CORPUS_SCHEMA,
        )
        file = path / "train" / shard_name(index)
        pq.write_table(table, file, row_group_size=ROW_GROUP_ROWS, compression="zstd", use_dictionary=["title", "ocr_text"])
        shards.append(
            {"file": file.name, "rows": n, "ids_sha256": hash_ids(ids), "labels_sha256": hash_labels(labels).hexdigest()}
        )
    splits = {"train": {"rows": rows, "shards": shards}, "eval": {"rows": 0, "shards": []}}
    meta = {
        "schema_version": SCHEMA_VERSION, "task": "bench", "classes": CLASSES, "num_classes": 2,
        "frames_per_video": 0, "image_size": 0, "has_text": False, "privileged_features": [], "features": [],
        "splits": splits, "fingerprint": fingerprint_of(splits), "created_by": "benchmarks/stream_teacher_columns.py",
    }
    (path / CORPUS_JSON).write_text(json.dumps(meta))


def build_dump(out: Path, corpus_path: Path, codec: str = "mixed", seed: int = 0) -> None:
    """A dump of the corpus through storage.dump's writer, with random (label-correlated) logits."""
    from cpfd.storage.corpus import Corpus

    corpus = Corpus(corpus_path, verify="fast")
    teacher = {"dir": "bench-teacher", "weights_sha256": "0" * 64, "config": {}}
    provenance = dump_provenance(corpus, "train", teacher)

    def row_groups(shard):
        pf = pq.ParquetFile(corpus.shard_paths("train")[shard])
        for g in range(pf.num_row_groups):
            rows = pf.read_row_group(g, columns=["sample_id", "label"])
            labels = rows.column("label").to_numpy()
            rng = np.random.default_rng([seed, shard, g])
            logits = rng.normal(size=(len(labels), 2)).astype(np.float32)
            logits[np.arange(len(labels)), labels] += 1.5
            yield rows.column("sample_id").combine_chunks(), labels, logits, cross_entropy(logits, labels).astype(np.float32)

    for shard in plan_dump(out, corpus, "train", teacher):
        write_dump_shard(out, corpus, "train", shard, row_groups(shard), provenance, compression=CODECS[codec])
    assert finalize_dump(out, corpus, "train", provenance)


def peak_rss_mb() -> int:
    """VmHWM: this process's peak RSS. (ru_maxrss would also count the parent's peak: Linux keeps
    it across fork + exec, and the parent has just built the dump.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


def measure(dump_dir: str, corpus_dir: str) -> dict:
    """Runs in a fresh subprocess: open, first pass, steady passes, extra() passes, verify; peak RSS."""
    from cpfd.storage.corpus import Corpus
    from cpfd.storage.dump import DUMP_MANIFEST, TeacherDump, open_dump, plan_dump

    rss_after_import = peak_rss_mb()
    corpus = Corpus(corpus_dir, verify="fast")

    def timed(read_all) -> float:
        start = time.perf_counter()
        read_all()
        return time.perf_counter() - start

    opened = []
    open_s = timed(lambda: opened.append(open_dump(dump_dir, corpus)))
    dump = opened[0]
    result = {"rss_after_import_mb": rss_after_import, "rows": dump.num_rows, "open_s": open_s}

    def stream() -> None:
        for logits, loss in dump.iter_teacher_columns():
            pass

    def extra() -> None:
        for unit in corpus.work_units("train"):
            dump.extra(unit)

    result["first_s"] = timed(stream)
    result["steady_s"] = statistics.median(timed(stream) for _ in range(REPEATS))
    readers = {"checked": dump, "unchecked": TeacherDump(dump_dir, corpus, check_reads=False)}
    passes = {name: [] for name in readers}
    for r in range(REPEATS):  # side by side: the two readers take turns, in alternating order
        for name in (list(readers) if r % 2 == 0 else list(readers)[::-1]):
            passes[name].append(timed(lambda: [None for _ in readers[name].iter_teacher_columns()]))
    result["checked_s"], result["unchecked_s"] = (statistics.median(passes[n]) for n in ("checked", "unchecked"))
    result["extra_s"] = statistics.median(timed(extra) for _ in range(REPEATS))
    result["peak_rss_mb"] = peak_rss_mb()  # before verify(): the streaming path's peak
    result["verify_s"] = timed(dump.verify)
    result["verify_peak_rss_mb"] = peak_rss_mb()
    teacher = dump.manifest["teacher"]
    result["rerun_finished_s"] = timed(lambda: plan_dump(dump_dir, corpus, "train", teacher))
    manifest = Path(dump_dir) / DUMP_MANIFEST
    manifest.rename(manifest.with_name("set-aside.json"))
    try:
        result["rerun_kept_s"] = timed(lambda: plan_dump(dump_dir, corpus, "train", teacher))
    finally:
        manifest.with_name("set-aside.json").rename(manifest)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,5000000", help="comma-separated dump sizes")
    parser.add_argument("--compression", default="mixed,none,zstd", help="comma-separated codecs to compare: mixed (the default writer's), none, zstd")
    parser.add_argument("--measure", nargs=2, metavar=("DUMP", "CORPUS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    sizes = [int(s) for s in args.rows.split(",")]
    codecs = args.compression.split(",")
    print(f"# {' '.join(sys.argv)}   ({os.cpu_count()} CPUs, pyarrow {pa.__version__}, numpy {np.__version__})")
    header = (
        f"{'rows':>10} {'codec':>6} {'dump MB':>8} {'build s':>8} {'open ms':>8} {'open + first pass':>18} "
        f"{'steady pass':>16} {'extra() pass':>16} {'peak RSS':>9} {'after import':>12} {'verify() s':>10} {'its peak':>8}"
        f" {'rerun: finished':>16} {'rerun: kept':>16}"
    )
    print(header)
    print("-" * len(header))
    checks = []
    with tempfile.TemporaryDirectory(prefix="cpfd-bench-") as tmp:
        for rows in sizes:
            corpus = Path(tmp) / f"corpus-{rows}"
            build_corpus(corpus, rows)
            for codec in codecs:
                dump = Path(tmp) / f"dump-{rows}-{codec}"
                start = time.perf_counter()
                build_dump(dump, corpus, codec)
                build_s = time.perf_counter() - start
                size_mb = sum(p.stat().st_size for p in dump.glob("*.parquet")) / 1e6
                out = subprocess.run(
                    [sys.executable, __file__, "--measure", str(dump), str(corpus)],
                    check=True, capture_output=True, text=True,
                )
                r = json.loads(out.stdout)
                first = f"{r['rows'] / (r['open_s'] + r['first_s']) / 1e6:6.1f} M rows/s"
                steady = f"{r['rows'] / r['steady_s'] / 1e6:6.1f} M rows/s"
                extra = f"{r['rows'] / r['extra_s'] / 1e6:6.1f} M rows/s"
                print(
                    f"{rows:>10,} {codec:>6} {size_mb:>8.1f} {build_s:>8.1f} {r['open_s'] * 1e3:>8.0f} {first:>18} "
                    f"{steady:>16} {extra:>16} {r['peak_rss_mb']:>6} MB {r['rss_after_import_mb']:>9} MB "
                    f"{r['verify_s']:>10.2f} {r['verify_peak_rss_mb']:>5} MB"
                    f" {r['rows'] / r['rerun_finished_s'] / 1e6:>9.1f} M rows/s {r['rows'] / r['rerun_kept_s'] / 1e6:>9.1f} M rows/s"
                )
                checks.append((rows, codec, r))
                shutil.rmtree(dump)
    print("\nread-time checks (page checksums; each row finite, teacher_loss = CE of its logits), "
          f"steady pass, median of {REPEATS} each, the two readers taking turns:")
    print(f"{'rows':>10} {'codec':>6} {'with checks':>16} {'without':>16} {'time ratio':>10}")
    for rows, codec, r in checks:
        print(f"{rows:>10,} {codec:>6} {r['rows'] / r['checked_s'] / 1e6:>9.1f} M rows/s "
              f"{r['rows'] / r['unchecked_s'] / 1e6:>9.1f} M rows/s {r['checked_s'] / r['unchecked_s']:>10.2f}")


if __name__ == "__main__":
    main()
