"""`cpfd distill`: train X-VLM from the corpus and the stored teacher columns (PFD or CPFD).

The teacher model is never built, imported or loaded here: its knowledge arrives as two columns
of the teacher dump, `logits` and `teacher_loss`, streamed next to the corpus rows by
`storage.dump` (checked against the corpus before the first step). Per sample,

    alpha_i = alpha_from_loss(teacher_loss_i, mapping, **params)          (paper Table 2)
    loss    = mean_i[(1 - alpha_i) CE(s_i, y_i) + alpha_i T^2 KL(q_t,i || q_s,i)]

`--mapping constant --alpha A` is vanilla PFD. Parameters not given are calibrated from the
dump's loss quantiles (`student.cpfd.calibrate_params`; the same exact quantiles `cpfd calibrate`
gets from DuckDB) and recorded in training.json with everything else. The set-up is the one of
every training stage (`pipeline.stages.prepare_stage`); only the loss and the dump columns differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpfd.pipeline import distributed
from cpfd.pipeline.options import ModelOptions, TrainOptions
from cpfd.pipeline.stages import model_inputs, model_output, prepare_stage
from cpfd.pipeline.train import train
from cpfd.storage.atomic import atomic_file
from cpfd.storage.corpus import Corpus
from cpfd.storage.dump import TeacherDump, open_dump, read_dump_columns, read_teacher_losses
from cpfd.storage.errors import CpfdError, warn
from cpfd.storage.model_folder import MODEL_FILES
from cpfd.storage.outputs import check_file_output
from cpfd.student.train import build_student
from cpfd.student.cpfd import (
    CONFIDENCES,
    MAPPING_DEFAULTS,
    MAPPING_PARAMS,
    alpha_from_loss,
    alpha_function,
    confidence_signal,
    cpfd_loss_terms,
    quantiles_of,
    resolve_params,
    weigh_terms,
)


# Below this ROC AUC on its own dumped rows, a teacher's losses are treated as carrying no information.
UNINFORMATIVE_AUC = 0.55


def cpfd_objective(mapping: str, params: dict, temperature: float, confidence: str = "loss"):
    """The per-sample loss for the training loop (`student.cpfd.cpfd_loss`'s, from its terms); shows each
    sample's alpha, cross-entropy, raw and alpha-weighted distillation term and teacher loss
    (tensors: no sync), which metrics.jsonl logs."""
    alpha_of = alpha_function(mapping, **params)

    def loss_fn(output, batch: dict):
        alpha = alpha_of(confidence_signal(confidence, batch["teacher_loss"], batch["teacher_logits"]))  # (B,)
        ce, kl = cpfd_loss_terms(output.logits, batch["teacher_logits"], batch["labels"], temperature)
        kd = temperature * temperature * kl  # the raw distillation term
        alpha = alpha.detach().to(ce.dtype)
        return weigh_terms(ce, kl, alpha, temperature), {"alpha": alpha, "ce": ce, "kd": kd, "kd_weighted": alpha * kd,
                                                         "teacher_loss": batch["teacher_loss"]}

    return loss_fn


def read_confidence(dump_dir: Path, confidence: str = "loss") -> np.ndarray:
    """The signal `confidence` (`student.cpfd.confidence_signal`) of every row of a finished dump, in
    corpus order, float32: the stored losses, or computed from the stored logits."""
    if confidence == "loss":
        return read_teacher_losses(dump_dir)
    table = read_dump_columns(dump_dir, ["logits"])
    logits = np.asarray(table.column("logits").combine_chunks().flatten().to_numpy()).reshape(table.num_rows, -1)
    return confidence_signal(confidence, None, logits)


def resolve_mapping(dump_dir: Path, mapping: str, given: dict, confidence: str = "loss") -> tuple[dict, list[str]]:
    """The mapping's parameters: the given ones, defaults, the rest calibrated from the dump's
    `confidence` signal. Also the names that were calibrated. A parameter of another mapping is
    refused by `student.cpfd.resolve_params`."""
    missing = [k for k in MAPPING_PARAMS.get(mapping, ()) if given.get(k) is None]
    calibrated = [k for k in missing if k not in MAPPING_DEFAULTS.get(mapping, {})]
    # numpy quantiles of every stored loss (4 bytes a row): a DuckDB connection would keep ~30 MB
    # in the training process after it closes (docs/benchmarks.md)
    quantiles = quantiles_of(read_confidence(dump_dir, confidence)) if calibrated and mapping != "constant" else None
    return resolve_params(mapping, given, quantiles), calibrated


def warn_if_uninformative(dump_dir: Path) -> float | None:
    """Warn when the teacher's scores barely rank the labels of the rows it was dumped on: its
    losses then carry no information about where to trust it, and alphas calibrated from them are
    noise. Returns the teacher's ROC AUC on those rows (macro one-vs-rest; None if undefined)."""
    from cpfd.pipeline.metrics import classification_metrics

    table = read_dump_columns(dump_dir, ["label", "logits"])
    labels = table.column("label").to_numpy()
    logits = np.asarray(table.column("logits").combine_chunks().flatten().to_numpy()).reshape(len(labels), -1)
    auc = classification_metrics(labels, logits)["roc_auc"]
    if auc != auc:
        warn(f"{dump_dir}: its rows hold one class, so the teacher's losses cannot tell where to trust it")
        return None
    if auc < UNINFORMATIVE_AUC:
        warn(f"{dump_dir}: the teacher ranks the labels of its own dumped rows at ROC AUC {auc:.3f}, no better than "
             "chance: its losses carry no information, and alphas calibrated from them are noise (train the teacher "
             "longer, or on more rows)")
    return float(auc)


def calibrate_dump(dump_dir: Path, mapping: str | None = None, confidence: str = "loss") -> dict:
    """`cpfd calibrate`: the quantiles of the dump's `confidence` signal (the loss's exact, from
    DuckDB; the others' from the stored logits) and every mapping's calibrated parameters."""
    from cpfd.storage.analysis import loss_quantiles
    from cpfd.student.cpfd import MAPPINGS, QUANTILES, calibrate_params

    if confidence == "loss":
        quantiles = loss_quantiles(dump_dir, QUANTILES)
    else:
        quantiles = quantiles_of(read_confidence(dump_dir, confidence))
    warn_if_uninformative(dump_dir)
    return {"confidence": confidence, "quantiles": quantiles,
            "params": {m: calibrate_params(quantiles, m) for m in ([mapping] if mapping else MAPPINGS)}}


def format_calibration(result: dict) -> str:
    """What `cpfd calibrate` prints: the quantiles, then each mapping's options as `cpfd distill` takes them."""
    signal = {"loss": "teacher-loss", "entropy": "teacher-entropy", "margin": "teacher-margin"}[result.get("confidence", "loss")]
    lines = [f"{signal} quantiles: " + ", ".join(f"q{round(q * 100):02d} {v:.4g}" for q, v in result["quantiles"].items())]
    lines += [f"{m:<12}" + " ".join(f"--{k.replace('_', '-')} {v:.4g}" for k, v in params.items())
              for m, params in result["params"].items()]
    return "\n".join(lines)


def write_alpha_log(dump: TeacherDump, mapping: str, params: dict, path: Path, confidence: str = "loss") -> int:
    """Parquet `sample_id, teacher_loss, alpha` for every dumped train-split row (the training rows and
    the validation rows held out of them); with another `confidence` than the loss, its signal too,
    as a `confidence` column before `alpha`."""
    tables = []
    if confidence == "loss":
        for ids, loss in dump.iter_ids_and_losses():
            alpha = alpha_from_loss(loss, mapping, **params).astype(np.float32)
            tables.append(pa.table({"sample_id": ids, "teacher_loss": pa.array(loss), "alpha": pa.array(alpha)}))
    else:
        rows = read_dump_columns(dump.path, ["sample_id", "teacher_loss"])
        signal = read_confidence(dump.path, confidence)
        alpha = alpha_from_loss(signal, mapping, **params).astype(np.float32)
        tables.append(pa.table({"sample_id": rows.column("sample_id"), "teacher_loss": rows.column("teacher_loss"),
                                "confidence": pa.array(signal), "alpha": pa.array(alpha)}))
    table = pa.concat_tables(tables)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)
    return table.num_rows


ALPHA_LOG_COLUMNS = ["sample_id", "teacher_loss", "alpha"]
ALPHA_LOG_WITH_SIGNAL = ["sample_id", "teacher_loss", "confidence", "alpha"]


def is_alpha_log(path: Path) -> bool:
    """Whether `path` is a Parquet file of exactly the alpha log's columns (`write_alpha_log`)."""
    try:
        return pq.read_schema(path).names in (ALPHA_LOG_COLUMNS, ALPHA_LOG_WITH_SIGNAL)
    except (pa.ArrowException, OSError):
        return False


def distill(corpus_path, dump_dir, out, *, mapping: str, params: dict, temperature: float = 1.0,
            confidence: str = "loss", alpha_log=None, model_options: ModelOptions, train_options: TrainOptions,
            overwrite: bool = False, resume: bool = False, command: str = "", announce=print) -> dict:
    """Train a student with the CPFD loss from `dump_dir`, alpha a mapping of each row's `confidence`
    signal (`student.cpfd.confidence_signal`: the teacher's loss by default); returns the record."""
    if not temperature > 0 or temperature == float("inf"):
        raise CpfdError(f"--temperature must be a positive finite number, got {temperature}")
    if confidence not in CONFIDENCES:
        raise CpfdError(f"--confidence must be one of {', '.join(CONFIDENCES)}, got {confidence!r}")
    corpus = Corpus(corpus_path)
    dump = open_dump(dump_dir, corpus, split="train")
    out = Path(out)
    inputs = {**model_inputs(corpus, model_options), "DUMP": Path(dump_dir)}
    teacher = dump.manifest["teacher"]["dir"]
    # a resumed run writes its alpha log again over the interrupted run's (and over nothing else)
    replaces = overwrite or (resume and alpha_log is not None and is_alpha_log(Path(alpha_log)))
    check_file_output("--alpha-log", alpha_log, overwrite=replaces, inputs=inputs, own=out,
                      referenced={"the teacher the dump was made from": [Path(teacher)] if teacher else []})
    if alpha_log is not None and Path(alpha_log).resolve().is_relative_to(out.resolve()):
        inner = Path(alpha_log).resolve().relative_to(out.resolve()).parts
        if not inner or inner[0] in MODEL_FILES:
            raise CpfdError(f"--alpha-log {alpha_log} would overwrite the model folder's own "
                            f"{inner[0] if inner else 'folder'}; choose another name")
    params_given = dict(params)

    def checked_mapping():  # under torchrun, rank 0 checks and calibrates once, for every rank
        dump.verify()  # ids, row counts, hashes, finite values: all before the first step
        if mapping != "constant":
            warn_if_uninformative(Path(dump_dir))
        return resolve_mapping(Path(dump_dir), mapping, params, confidence)

    params, calibrated = distributed.on_main(checked_mapping)
    defaults = [k for k in MAPPING_DEFAULTS.get(mapping, {}) if params_given.get(k) is None]
    shown = ", ".join(f"{k}={v:.4g}" + (" (calibrated)" if k in calibrated else " (default)" if k in defaults else "")
                      for k, v in params.items())
    announce(f"mapping {mapping}: {shown}; temperature {temperature:g}"
             + (f"; alpha from the teacher's {confidence}" if confidence != "loss" else ""))

    record = {
        "dump": {"path": str(dump_dir), "teacher_weights_sha256": dump.manifest["teacher"]["weights_sha256"],
                 "teacher_dir": dump.manifest["teacher"]["dir"]},
        "distillation": {"mapping": mapping, "params": params, "calibrated": calibrated, "temperature": temperature,
                         **({"confidence": confidence} if confidence != "loss" else {})},  # absent: the loss
    }
    with model_output(out, overwrite=overwrite, resume=resume, inputs=inputs) as target:
        stage = prepare_stage(corpus, target, build=build_student, stage="distill", model_options=model_options,
                              train_options=train_options, overwrite=overwrite, resume=resume, command=command,
                              record=record, extra_open=dump.extra_for_corpus_batches())
        if alpha_log is not None:
            alpha_log = Path(alpha_log)
            inside = alpha_log.resolve().is_relative_to(out.resolve())  # a staged OUT takes it along
            rows = distributed.on_main(lambda: write_alpha_log(
                dump, mapping, params, target / alpha_log.resolve().relative_to(out.resolve()) if inside else alpha_log,
                confidence))
            announce(f"wrote alpha for {rows} train-split rows to {alpha_log}")
        return train(stage.model, stage.train_set, stage.val_set, cpfd_objective(mapping, params, temperature, confidence),
                     target,
                     train_options, stage.record, resume=resume)
