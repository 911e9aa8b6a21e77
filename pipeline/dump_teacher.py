"""`cpfd dump-teacher`: run the teacher once over a corpus split and store its logits and losses.

The teacher runs in eval mode under `torch.inference_mode`, one corpus row group at a time, so
every dump shard has the rows and row groups of its corpus shard (`storage.dump` writes and
checks them). Work is split by corpus shard: `--num-shards N --shard-index I` for a job array,
or, under `torchrun`, by RANK / WORLD_SIZE with no flags. A crash at any moment loses at most the
shard in progress: a rerun skips committed shards and ends with the same dump.

    cpfd dump-teacher runs/teacher runs/corpus --out runs/dump                 # one process
    cpfd dump-teacher T C --out D --num-shards 8 --shard-index $SLURM_ARRAY_TASK_ID
    torchrun --nproc-per-node 8 -m cli dump-teacher T C --out D                # one node, 8 GPUs
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.data import Inputs, collate
from pipeline.stages import check_model_fits_corpus, is_teacher, load_model
from pipeline.train import autocast, resolve_device
from storage.corpus import Corpus
from storage.dump import (
    cross_entropy,
    dump_provenance,
    finalize_dump,
    open_dump,
    plan_dump,
    write_dump_shard,
)
from storage.errors import CpfdError


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def torchrun_share() -> tuple[int, int] | None:
    """(num_shards, shard_index) from torchrun's environment, or None outside torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (world, int(os.environ.get("RANK", "0"))) if world > 1 else None


class TeacherScorer:
    """The teacher and what it needs to score corpus rows: logits (n, C) float32 per table."""

    def __init__(self, teacher_dir: Path, corpus: Corpus, device: str, batch_size: int):
        self.model, self.tokenizer = load_model(teacher_dir)
        if not is_teacher(self.model):
            raise CpfdError(f"{teacher_dir}: is a {self.model.config.architecture}, dump-teacher needs a "
                            "teacher (DF-X-VLM, from `cpfd train-teacher`)")
        check_model_fits_corpus(self.model, teacher_dir, corpus)
        self.device = resolve_device(device)
        if self.device.type == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: one GPU per process
            self.device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        self.model.to(self.device).eval()
        self.inputs = Inputs.for_corpus(corpus, privileged=True)
        self.widths = {"features": len(corpus.features), "privileged": len(corpus.privileged_features)}
        self.batch_size = batch_size

    @torch.inference_mode()
    def logits(self, table) -> np.ndarray:
        out = []
        for start in range(0, table.num_rows, self.batch_size):
            batch = collate(table.slice(start, self.batch_size), self.inputs, self.tokenizer,
                            self.model.config.max_length, self.widths)
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast(self.device):
                out.append(self.model(batch).logits.float().cpu().numpy())
        num_classes = self.model.config.num_classes
        return np.concatenate(out) if out else np.zeros((0, num_classes), np.float32)


def dump_teacher(teacher_dir, corpus_path, out, *, split: str = "train", batch_size: int = 256,
                 num_shards: int | None = None, shard_index: int | None = None, overwrite: bool = False,
                 device: str = "auto", progress: bool = True) -> dict:
    """Dump this worker's share of the split; write `_manifest.json` if the dump is then complete."""
    teacher_dir, out = Path(teacher_dir), Path(out)
    corpus = Corpus(corpus_path)
    if (num_shards is None) != (shard_index is None):
        raise CpfdError("--num-shards and --shard-index go together")
    if num_shards is None:
        num_shards, shard_index = torchrun_share() or (1, 0)
    if not 0 <= shard_index < num_shards:
        raise CpfdError(f"--shard-index must be in [0, {num_shards}), got {shard_index}")
    scorer = TeacherScorer(teacher_dir, corpus, device, batch_size)
    weights = teacher_dir / "model.safetensors"
    teacher = {"dir": str(teacher_dir), "weights_sha256": file_sha256(weights), "config": scorer.model.config.to_dict()}
    provenance = dump_provenance(corpus, split, teacher)
    todo = plan_dump(out, corpus, split, teacher, overwrite, num_shards, shard_index)

    columns = ["sample_id", *scorer.inputs.columns()]
    units = [u for u in corpus.work_units(split) if u.shard in set(todo)]
    bar = tqdm(total=sum(u.rows for u in units), unit="rows", desc="dump-teacher", disable=not progress)

    def row_groups(shard: int):
        for unit in (u for u in units if u.shard == shard):
            table = corpus.read_unit(unit, columns)
            labels = table.column("label").to_numpy()
            logits = scorer.logits(table)
            bar.update(table.num_rows)
            yield table.column("sample_id"), labels, logits, cross_entropy(logits, labels).astype(np.float32)

    for shard in todo:
        write_dump_shard(out, corpus, split, shard, row_groups(shard), provenance)
    bar.close()
    finished = finalize_dump(out, corpus, split, provenance)
    return {"out": str(out), "split": split, "shards_written": len(todo), "rows_written": sum(u.rows for u in units),
            "finished": finished, "num_shards": num_shards, "shard_index": shard_index}


def verify_dump(teacher_dir, corpus_path, dump_dir, *, rows: int, seed: int = 0, device: str = "auto",
                batch_size: int = 256) -> dict:
    """Recompute the teacher on `rows` random committed rows; largest |difference| of logits and loss."""
    corpus = Corpus(corpus_path)
    dump = open_dump(dump_dir, corpus)
    split = dump.split
    scorer = TeacherScorer(Path(teacher_dir), corpus, device, batch_size)
    units = corpus.work_units(split)
    total = sum(u.rows for u in units)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(rows, total), replace=False))
    worst_logits = worst_loss = 0.0
    columns = scorer.inputs.columns()
    for unit in units:
        local = picked[(picked >= unit.offset) & (picked < unit.offset + unit.rows)] - unit.offset
        if not len(local):
            continue
        table = corpus.read_unit(unit, columns).take(local)
        logits = scorer.logits(table)
        loss = cross_entropy(logits, table.column("label").to_numpy())
        stored_logits, stored_loss = dump.read(unit)
        worst_logits = max(worst_logits, float(np.abs(logits - stored_logits[local]).max()))
        worst_loss = max(worst_loss, float(np.abs(loss - stored_loss[local]).max()))
    return {"rows": int(len(picked)), "max_abs_diff_logits": worst_logits, "max_abs_diff_loss": worst_loss}
