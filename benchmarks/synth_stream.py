"""Does `cpfd synth` stream? Peak memory and speed of the synthetic corpus writer at two sizes.

Runs `cpfd synth` (cli.py, `--quiet`) in a fresh subprocess per size, so each peak RSS is that
process's alone (os.wait4's rusage of the child), and prints rows/s, peak RSS, the size on disk,
and the ratio of the two peaks. Constant memory means the ratio stays near 1 while the corpus
grows 10x (or 50x with --large 1000000). 10% of each size goes to the eval split.

Reproduce (from the repository root):

    .venv/bin/python benchmarks/synth_stream.py                      # 20k and 200k videos
    .venv/bin/python benchmarks/synth_stream.py --large 1000000      # 20k and 1M videos
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_synth(out: Path, rows: int, preset: str, seed: int, frames: int, image_size: int) -> dict:
    eval_rows = max(1, rows // 10)
    command = [
        sys.executable, "-m", "cpfd.cli", "synth", str(out), "--preset", preset, "--seed", str(seed),
        "--train-samples", str(rows - eval_rows), "--eval-samples", str(eval_rows),
        "--frames-per-video", str(frames), "--image-size", str(image_size), "--quiet",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait4 gives this child's own rusage (getrusage(RUSAGE_CHILDREN) would be the max over all).
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    stdout, stderr = process.stdout.read().decode(), process.stderr.read().decode()
    process.stdout.close()
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"cpfd synth failed ({' '.join(command)}):\n{stdout}{stderr}")
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {
        "rows": rows,
        "seconds": seconds,
        "rows_per_s": rows / seconds,
        "peak_rss_mib": usage.ru_maxrss / 1024,  # Linux reports KiB
        "disk_mib": disk / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=20_000, help="videos in the small corpus")
    parser.add_argument("--large", type=int, default=200_000, help="videos in the large corpus")
    parser.add_argument("--preset", default="task1")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames-per-video", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=None, help="where to write the corpora (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the corpora instead of deleting them")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="cpfd-synth-bench-", dir=args.workdir))
    results = []
    try:
        for rows in (args.small, args.large):
            results.append(run_synth(workdir / f"synth-{rows}", rows, args.preset, args.seed, args.frames_per_video, args.image_size))
            if not args.keep:
                shutil.rmtree(workdir / f"synth-{rows}")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"cpfd synth --preset {args.preset}, {args.frames_per_video} frames of {args.image_size}px, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print("| videos | wall s | videos/s | peak RSS MiB | on disk MiB |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['rows']:,} | {r['seconds']:.1f} | {r['rows_per_s']:,.0f} | {r['peak_rss_mib']:.0f} | {r['disk_mib']:.0f} |")
    small, large = results
    print(f"peak RSS ratio {large['rows']:,} / {small['rows']:,} videos: "
          f"{large['peak_rss_mib'] / small['peak_rss_mib']:.2f} (corpus {large['rows'] / small['rows']:.0f}x larger)")
    print("reproduce: .venv/bin/python benchmarks/synth_stream.py "
          + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("workdir", "keep")))


if __name__ == "__main__":
    main()
