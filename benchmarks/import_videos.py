"""Benchmark: `cpfd import` of a manifest of video files with `--workers 1` and `--workers 2`.

    .venv/bin/python benchmarks/import_videos.py
    .venv/bin/python benchmarks/import_videos.py --videos 200 --repeats 1 --workers 1,2,4

Generated once in the work dir (`$TMPDIR/cpfd-bench/import-videos-N`, reused by later runs; the
time generation took is printed): N H.264 MP4 files (libx264, yuv420p, PyAV's default settings),
each 2 s at 15 fps (30 frames) of 160x120 pixels: a colour gradient that drifts and a square that
moves across it, plus a little noise, different for every video (seeded by its index), about
11 KB a file; and `manifest.jsonl`, one line per video (`video`, `title`, a label 0/1).

Each import is `cpfd import MANIFEST OUT --quiet --workers W` at the default 4 frames of 64 px,
run through the CLI's own entry point in a fresh subprocess (so its memory is its own), the
worker counts side by side in one run, the order rotating between repeats. Reported per run:
wall s of the whole command (pass 1 probes every video, pass 2 decodes it; the spawn of the
workers included), videos/s = videos / wall s, CPU s of the command and its workers
(RUSAGE_SELF + RUSAGE_CHILDREN), and peak RSS: the main process's VmHWM, the largest VmHWM of a
worker (read from /proc every 0.1 s while the workers live; VmHWM is a high-water mark, so a late
read still sees the peak), and main + workers together (an upper bound: each process's own
peak, summed). Every run must write the same corpus: the fingerprint and the bytes of every
shard are compared, and the benchmark fails if they differ. Nothing is asserted on time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHILD_FLAG = "--child"
SECONDS, FPS, WIDTH, HEIGHT = 2, 15, 160, 120


# ---------------------------------------------------------------------------------------------
# The videos (made once)
# ---------------------------------------------------------------------------------------------

def make_video(path: Path, index: int) -> None:
    import av
    import numpy as np

    rng = np.random.default_rng(index)
    base = rng.integers(40, 200, 3)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for t in range(SECONDS * FPS):
            ramp = ((x + y + 4 * t) % 160) / 160.0  # (H, W), drifting
            a = (base[None, None, :] * (0.5 + ramp[..., None])).clip(0, 255)
            sx, sy = (8 * t + 13 * index) % (WIDTH - 24), (5 * t + 7 * index) % (HEIGHT - 24)
            a[sy:sy + 24, sx:sx + 24] = 255 - base
            a += rng.normal(0, 4, a.shape)
            frame = av.VideoFrame.from_ndarray(a.clip(0, 255).astype(np.uint8), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())


def ensure_videos(workdir: Path, n: int) -> tuple[Path, str]:
    """WORKDIR/import-videos-N/manifest.jsonl and its videos; made once. Returns the manifest and
    a sentence on how long making them took."""
    folder = workdir / f"import-videos-{n}"
    done = folder / "done.json"
    spec = {"videos": n, "seconds": SECONDS, "fps": FPS, "width": WIDTH, "height": HEIGHT, "codec": "libx264"}
    if done.exists() and json.loads(done.read_text()).get("spec") == spec:
        took = json.loads(done.read_text())["seconds_to_make"]
        return folder / "manifest.jsonl", f"reused from {folder} (making them took {took:.0f} s)"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "videos").mkdir(parents=True)
    start = time.perf_counter()
    lines = []
    for i in range(n):
        make_video(folder / "videos" / f"{i:05d}.mp4", i)
        lines.append(json.dumps({"id": f"v{i:05d}", "video": f"videos/{i:05d}.mp4", "title": f"clip {i}",
                                 "label": i % 2}))
    (folder / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    took = time.perf_counter() - start
    done.write_text(json.dumps({"spec": spec, "seconds_to_make": took}))
    return folder / "manifest.jsonl", f"made in {folder} in {took:.0f} s"


# ---------------------------------------------------------------------------------------------
# One import (child process)
# ---------------------------------------------------------------------------------------------

def vmhwm_mb(pid: int | str = "self") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def measure(spec: dict) -> dict:
    """`cpfd import ... --workers W` in this process, through the CLI's entry point."""
    import multiprocessing
    import resource

    from cpfd.cli import cpfd

    workers_peak: dict[int, float] = {}
    stop = threading.Event()

    def watch():  # the workers' own peaks, read while they live
        while not stop.wait(0.1):
            for child in multiprocessing.active_children():
                peak = vmhwm_mb(child.pid)
                if peak is not None:
                    workers_peak[child.pid] = max(peak, workers_peak.get(child.pid, 0.0))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    start = time.perf_counter()
    cpfd.main(["import", spec["manifest"], spec["out"], "--quiet", "--workers", str(spec["workers"])],
              standalone_mode=False)
    wall = time.perf_counter() - start
    stop.set()
    watcher.join()
    self_usage, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(u.ru_utime + u.ru_stime for u in (self_usage, children))
    meta = json.loads((Path(spec["out"]) / "corpus.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "main_rss_mb": vmhwm_mb(), "rows": sum(s["rows"] for s in meta["splits"].values()),
            "worker_rss_mb": max(workers_peak.values(), default=0.0), "workers_seen": len(workers_peak),
            "workers_rss_sum_mb": sum(workers_peak.values()), "fingerprint": meta["fingerprint"]}


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, json.dumps(spec)], cwd=REPO,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed with exit status {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])


def shard_digests(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.parquet"))}


def table(headers: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |", *map(line, cells)])


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--workers", default="1,2", help="Comma-separated worker counts to compare.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs of each worker count, the order rotating.")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "cpfd-bench")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]

    began = time.perf_counter()
    manifest, made = ensure_videos(args.workdir, args.videos)
    size = sum(p.stat().st_size for p in (manifest.parent / "videos").iterdir())
    print(f"videos: {args.videos:,} H.264 MP4, {SECONDS} s at {FPS} fps, {WIDTH}x{HEIGHT}, "
          f"{size / args.videos / 1e3:.0f} KB each on average; {made}")
    print(f"{os.cpu_count()} CPUs ({platform.machine()}), Python {platform.python_version()}, "
          f"load average {load()} at the start ({time.strftime('%Y-%m-%d %H:%M')})")

    results: dict[int, list[dict]] = {w: [] for w in counts}
    reference = None
    for r in range(args.repeats):
        order = counts[r % len(counts):] + counts[:r % len(counts)]
        for w in order:
            out = args.workdir / f"import-videos-out-w{w}"
            shutil.rmtree(out, ignore_errors=True)
            result = run_child({"manifest": str(manifest), "out": str(out), "workers": w})
            result["load"] = os.getloadavg()[0]
            digests = (result["fingerprint"], shard_digests(out))
            if reference is None:
                reference = digests
            elif digests != reference:
                raise SystemExit(f"--workers {w} wrote another corpus than the first run: not the same bytes")
            results[w].append(result)
            print(f"  repeat {r + 1}, --workers {w}: {result['wall_s']:.1f} s, "
                  f"{result['rows'] / result['wall_s']:.1f} videos/s, load {result['load']:.1f}", flush=True)
            shutil.rmtree(out, ignore_errors=True)

    rows = []
    for w in counts:
        runs = results[w]
        rates = [x["rows"] / x["wall_s"] for x in runs]
        main_rss = max(x["main_rss_mb"] for x in runs)
        worker_rss = max(x["worker_rss_mb"] for x in runs)
        total = max(x["main_rss_mb"] + x["workers_rss_sum_mb"] for x in runs)
        rows.append([w, len(runs), f"{statistics.median(rates):.1f}", f"{max(rates):.1f}",
                     f"{statistics.median(x['wall_s'] for x in runs):.1f}", f"{statistics.median(x['cpu_s'] for x in runs):.1f}",
                     f"{main_rss:.0f}", f"{worker_rss:.0f}" if w > 1 else "-", f"{total:.0f}"])
    print()
    print(table(["workers", "runs", "videos/s (median)", "videos/s (best)", "wall s (median)", "CPU s (median)",
                 "main peak RSS MB", "worker peak RSS MB", "total peak RSS MB"], rows))
    base = statistics.median(x["rows"] / x["wall_s"] for x in results[counts[0]])
    for w in counts[1:]:
        rate = statistics.median(x["rows"] / x["wall_s"] for x in results[w])
        print(f"--workers {w} / --workers {counts[0]}: videos/s x{rate / base:.2f} (median of {len(results[w])})")
    print(f"same corpus in every run: yes (fingerprint {reference[0][:12]}, {len(reference[1])} shards byte-identical)")
    print(f"load average {load()} at the end; {time.perf_counter() - began:.0f} s in all")
    print("command: " + " ".join([".venv/bin/python", *sys.argv]))


if __name__ == "__main__":
    if CHILD_FLAG in sys.argv:
        print(json.dumps(measure(json.loads(sys.argv[sys.argv.index(CHILD_FLAG) + 1]))), flush=True)
    else:
        main()
