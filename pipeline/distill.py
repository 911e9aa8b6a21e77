"""`cpfd distill`: train X-VLM from the corpus and the stored teacher columns (PFD or CPFD).

The teacher model is never built, imported or loaded here: its knowledge arrives as two columns
of the teacher dump, `logits` and `teacher_loss`, streamed next to the corpus rows by
`storage.dump` (checked against the corpus before the first step). Per sample,

    alpha_i = alpha_from_loss(teacher_loss_i, mapping, **params)          (paper Table 2)
    loss    = mean_i[(1 - alpha_i) CE(s_i, y_i) + alpha_i T^2 KL(q_t,i || q_s,i)]

`--mapping constant --alpha A` is vanilla PFD. Parameters not given are calibrated from the
dump's loss quantiles (`student.cpfd.calibrate_params`; the same exact quantiles `cpfd calibrate`
gets from DuckDB) and recorded in training.json with everything else.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpfd.pipeline.stages import (
    ModelOptions,
    build_model,
    dataset_for,
    prepare_model_dir,
    prepare_tokenizer,
)
from cpfd.pipeline.train import TrainOptions, set_seed, train
from cpfd.storage.atomic import commit, temp_path_for
from cpfd.storage.corpus import Corpus
from cpfd.storage.dump import open_dump
from cpfd.storage.errors import CpfdError
from cpfd.student.cpfd import MAPPING_DEFAULTS, MAPPING_PARAMS, alpha_from_loss, cpfd_loss, quantiles_of, resolve_params


def cpfd_objective(mapping: str, params: dict, temperature: float):
    """The per-batch loss for the training loop; shows the batch's mean alpha on the progress bar."""

    def loss_fn(output, batch: dict):
        alpha = alpha_from_loss(batch["teacher_loss"], mapping, **params)  # (B,)
        loss = cpfd_loss(output.logits, batch["teacher_logits"], batch["labels"], alpha, temperature)
        return loss, {"alpha": alpha.mean().item()}

    return loss_fn


def resolve_mapping(dump_dir: Path, mapping: str, given: dict) -> tuple[dict, list[str]]:
    """The mapping's parameters: the given ones, defaults, the rest calibrated from the dump.
    Also the names that were calibrated."""
    unknown = [k for k, v in given.items() if v is not None and k not in MAPPING_PARAMS.get(mapping, ())]
    if unknown:
        raise CpfdError(f"--{unknown[0].replace('_', '-')} does not apply to --mapping {mapping}")
    missing = [k for k in MAPPING_PARAMS.get(mapping, ()) if given.get(k) is None]
    calibrated = [k for k in missing if k not in MAPPING_DEFAULTS.get(mapping, {})]
    quantiles = quantiles_of(dump_losses(dump_dir)) if calibrated and mapping != "constant" else None
    return resolve_params(mapping, given, quantiles), calibrated


def dump_losses(dump_dir: Path) -> np.ndarray:
    """Every stored teacher loss (4 bytes a row), for the exact quantiles of the calibration rule.

    `cpfd calibrate` asks DuckDB for the same quantiles; here numpy does it, because a DuckDB
    connection keeps ~30 MB in the training process after it closes (docs/benchmarks.md)."""
    files = sorted(Path(dump_dir).glob("part-*.parquet"))
    return np.concatenate([pq.read_table(f, columns=["teacher_loss"]).column(0).to_numpy() for f in files])


def write_alpha_log(dump, mapping: str, params: dict, path: Path) -> int:
    """Parquet `sample_id, teacher_loss, alpha` for every training row (what one epoch sees)."""
    tables = []
    for file in dump.files:
        t = pq.read_table(file, columns=["sample_id", "teacher_loss"])
        alpha = alpha_from_loss(t.column("teacher_loss").to_numpy(), mapping, **params).astype(np.float32)
        tables.append(t.append_column("alpha", pa.array(alpha)))
    table = pa.concat_tables(tables)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    pq.write_table(table, tmp)
    commit(tmp, path)
    return table.num_rows


def distill(corpus_path, dump_dir, out, *, mapping: str, params: dict, temperature: float = 1.0,
            alpha_log=None, model_options: ModelOptions, train_options: TrainOptions,
            overwrite: bool = False, resume: bool = False, command: str = "", announce=print) -> dict:
    """Train a student with the CPFD loss from `dump_dir`; returns the training record."""
    if not temperature > 0:
        raise CpfdError(f"--temperature must be positive, got {temperature}")
    corpus = Corpus(corpus_path)
    dump = open_dump(dump_dir, corpus, split="train")
    dump.verify()  # ids, row counts, hashes, finite values: all before the first step
    params_given = dict(params)
    params, calibrated = resolve_mapping(Path(dump_dir), mapping, params)
    defaults = [k for k in MAPPING_DEFAULTS.get(mapping, {}) if params_given.get(k) is None]
    shown = ", ".join(f"{k}={v:.4g}" + (" (calibrated)" if k in calibrated else " (default)" if k in defaults else "")
                      for k, v in params.items())
    announce(f"mapping {mapping}: {shown}; temperature {temperature:g}")

    out = Path(out)
    prepare_model_dir(out, overwrite, resume)
    tokenizer = prepare_tokenizer(corpus, model_options)
    set_seed(train_options.seed)
    model = build_model("student", corpus, tokenizer, model_options)
    if tokenizer is not None:
        from cpfd.pipeline.tokenization import save_tokenizer

        save_tokenizer(tokenizer, out / "tokenizer")
    if alpha_log is not None:
        rows = write_alpha_log(dump, mapping, params, alpha_log)
        announce(f"wrote alpha for {rows} training rows to {alpha_log}")

    train_set = dataset_for(model, corpus, "train", tokenizer, train_options.batch_size, shuffle=True,
                            seed=train_options.seed, extra_open=dump.extra_for_corpus_batches())
    eval_set = (dataset_for(model, corpus, "eval", tokenizer, train_options.batch_size)
                if corpus.num_rows("eval") else None)
    record = {
        "stage": "distill",
        "command": command,
        "architecture": model.config.architecture,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "corpus": {"path": str(corpus.path), "fingerprint": corpus.fingerprint},
        "dump": {"path": str(dump_dir), "teacher_weights_sha256": dump.manifest["teacher"]["weights_sha256"],
                 "teacher_dir": dump.manifest["teacher"]["dir"]},
        "distillation": {"mapping": mapping, "params": params, "calibrated": calibrated,
                         "temperature": temperature},
        "options": {"model": vars(model_options).copy()},
    }
    objective = cpfd_objective(mapping, params, temperature)
    return train(model, train_set, eval_set, objective, out, train_options, record, resume=resume)
