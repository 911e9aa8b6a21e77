"""Shared pieces of the model benchmarks (train_throughput, dump_overhead, distill_cost).

- `workdir` fixtures, cached between runs and shared by the benchmarks (none of this is timed):
  `ensure_corpus` (the `cpfd synth` corpus, preset task1 by default), `ensure_teacher` (a briefly
  trained DF-X-VLM: its weights only need to exist, not to be good, to time it) and
  `ensure_dump` (its `dump-teacher` output).
- `run_child`: run one measurement in a fresh Python process and read back its JSON result, so
  every peak-memory number is that process's own (`peak_rss_mb`, VmHWM: ru_maxrss of the child's
  own address space; plus torch.cuda.max_memory_allocated on CUDA).
- `set_threads`: the torch thread count of a measuring process. The default is 1. On a shared
  2-core box, OpenMP's 2 threads wait for each other at every op while other jobs hold a core:
  a 1024x64 @ 64x64 matmul took 5.8 ms with 2 threads and 0.27 ms with 1 (docs/benchmarks.md).
- `table`, `median`, `machine`: printing.

Run the benchmarks from the repository root, e.g. `.venv/bin/python benchmarks/train_throughput.py`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_WORKDIR = Path(tempfile.gettempdir()) / "cpfd-bench"
CHILD_FLAG = "--child"


# ---------------------------------------------------------------------------------------------
# Measuring processes
# ---------------------------------------------------------------------------------------------

def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB.

    Not getrusage(RUSAGE_CHILDREN) in the parent: Linux folds the parent's own peak into a child's
    ru_maxrss across fork + exec, and the parent here has built corpora and models.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def set_threads(threads: int) -> None:
    """Torch intra-op threads for this process (call before any torch work)."""
    import torch

    torch.set_num_threads(threads)


def cuda_peak_mb() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.max_memory_allocated() / 2**20


class LoopClock:
    """Wall and CPU seconds of the training loop inside `pipeline.train.train`, from outside it.

    `train()` makes the epoch's DataLoader (`make_loader`) right before the first batch and calls
    `predict_logits` for the eval pass right after the last step; both are looked up as globals
    of `pipeline.train`, so wrapping them there timestamps the loop without touching the library.
    CPU seconds (`time.process_time`, all threads of this process) barely move when other jobs
    share the box, unlike wall seconds; with one torch thread they are the work done.
    Use for one-epoch runs: `start()` before `train`, `stop()` after it.
    """

    def __init__(self):
        self.marks: dict[str, tuple[float, float]] = {}

    @staticmethod
    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def start(self) -> None:
        import cpfd.pipeline.train as train_module

        self._saved = (train_module.make_loader, train_module.predict_logits)
        make_loader, predict_logits = self._saved

        def timed_make_loader(*args, **kwargs):
            self.marks.setdefault("loop_start", self.now())
            return make_loader(*args, **kwargs)

        def timed_predict_logits(*args, **kwargs):
            self.marks.setdefault("loop_end", self.now())
            return predict_logits(*args, **kwargs)

        train_module.make_loader, train_module.predict_logits = timed_make_loader, timed_predict_logits

    def stop(self) -> dict:
        """{"loop_wall_s", "loop_cpu_s"}; without an eval pass the loop ends when train() returns."""
        import cpfd.pipeline.train as train_module

        self.marks.setdefault("loop_end", self.now())
        train_module.make_loader, train_module.predict_logits = self._saved
        (w0, c0), (w1, c1) = self.marks["loop_start"], self.marks["loop_end"]
        return {"loop_wall_s": w1 - w0, "loop_cpu_s": c1 - c0}


def run_child(script: str | Path, spec: dict, timeout: float | None = None) -> dict:
    """Run `python SCRIPT --child JSON` from the repo root; return the JSON its last stdout line holds."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    threads = spec.get("threads")
    if threads:  # also for libraries that read these before torch.set_num_threads runs
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, str(script), CHILD_FLAG, json.dumps(spec)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec} failed with exit status {proc.returncode}:\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {spec} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def child_entry(measure) -> bool:
    """In a child process (`--child JSON` in argv): run `measure(spec)`, print its JSON, return True."""
    if CHILD_FLAG not in sys.argv:
        return False
    spec = json.loads(sys.argv[sys.argv.index(CHILD_FLAG) + 1])
    result = measure(spec)
    print(json.dumps(result), flush=True)
    return True


# ---------------------------------------------------------------------------------------------
# Fixtures (cached in the work dir; not timed)
# ---------------------------------------------------------------------------------------------

def corpus_name(preset: str, train_samples: int | None, eval_samples: int | None, seed: int) -> str:
    return f"corpus-{preset}-{train_samples or 'default'}-{eval_samples or 'default'}-s{seed}"


def ensure_corpus(workdir: Path, preset: str = "task1", train_samples: int | None = None,
                  eval_samples: int | None = None, seed: int = 0) -> Path:
    """`cpfd synth WORKDIR/corpus-... --preset P [--train-samples N] [--eval-samples N] --seed S`, once."""
    from cpfd.experiment.synth import write_synthetic_corpus

    path = Path(workdir) / corpus_name(preset, train_samples, eval_samples, seed)
    if not (path / "corpus.json").exists():
        write_synthetic_corpus(path, preset=preset, train_samples=train_samples, eval_samples=eval_samples,
                               seed=seed, overwrite=True, progress=False)
    return path


def ensure_teacher(workdir: Path, corpus: Path, steps: int, threads: int, device: str = "auto") -> Path:
    """A DF-X-VLM trained for `steps` optimizer steps on `corpus` (default model options), once."""
    from cpfd.pipeline.options import ModelOptions
    from cpfd.teacher.train import train_teacher
    from cpfd.pipeline.options import TrainOptions
    from cpfd.storage.corpus import Corpus

    fingerprint = Corpus(corpus, verify="fast").fingerprint
    path = Path(workdir) / f"teacher-{fingerprint[:12]}-{steps}steps"
    if not (path / "config.json").exists():
        set_threads(threads)
        train_teacher(corpus, path, model_options=ModelOptions(),
                    train_options=TrainOptions(epochs=1, max_steps=steps, device=device, progress=False),
                    overwrite=True, command="benchmarks (fixture)")
    return path


def ensure_dump(workdir: Path, teacher: Path, corpus: Path, threads: int, device: str = "auto") -> Path:
    """`cpfd dump-teacher TEACHER CORPUS --out WORKDIR/dump-...` (train split), once."""
    from cpfd.teacher.dump import dump_teacher

    path = Path(workdir) / f"dump-{teacher.name}"
    if not (path / "_manifest.json").exists():
        set_threads(threads)
        dump_teacher(teacher, corpus, path, overwrite=True, device=device, progress=False)
    return path


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    return path


# ---------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------

def median(values) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list]) -> str:
    """A GitHub-markdown table (pastes straight into docs/benchmarks.md)."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "| " + " | ".join("-" * (w - 1) + ":" for w in widths) + " |", *map(line, cells)])


def machine(threads: int, device: str = "auto") -> str:
    import torch

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and device != "cpu" else "no GPU"
    return (f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {gpu}, torch {torch.__version__}, "
            f"{threads} torch thread(s) per process, load average {load} at {time.strftime('%Y-%m-%d %H:%M')}")


def command_line() -> str:
    return " ".join([".venv/bin/python", *[a if " " not in a else repr(a) for a in sys.argv]])
