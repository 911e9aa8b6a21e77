"""Where the teacher's confidence and the label part ways: the rows of a dump in four cells.

`cpfd inspect` shows it under the loss distribution. A row is **confident** when the teacher's
top class probability is at least CONFIDENT_PROBABILITY, else **unsure**; it **agrees** when
that class is the stored label. Per cell: rows, mean teacher loss, and the mean alpha the mapping
(exp-decay by default, calibrated on the dump as `distill` calibrates it) gives under each
confidence signal (`student.cpfd.CONFIDENCES`); on a synthetic corpus also the share of flipped
labels (from its truth file, passed in as `flipped`). `format_confidence_split` says what the
cells suggest in plain words, and only what the numbers show.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cpfd.storage.dump import read_dump_columns
from cpfd.student.cpfd import CONFIDENCES, alpha_from_loss
from cpfd.student.distill import read_confidence, resolve_mapping

CONFIDENT_PROBABILITY = 0.9
MIN_ROWS_TO_SAY = 20  # fewer rows in the deciding cell: the counts are shown, no reading of them
CELLS = (("confident", "agrees"), ("confident", "disagrees"), ("unsure", "agrees"), ("unsure", "disagrees"))


def confidence_split(dump_dir: Path, mapping: str = "exp-decay", flipped: dict | None = None) -> dict:
    """{"mapping", "confident_probability", "rows", "flipped_share" (None without a truth file),
    "cells": {"confident, agrees": {"rows", "share", "mean_loss", "mean_alpha": {signal: a},
    "flipped_share"}, ...}}."""
    table = read_dump_columns(dump_dir, ["sample_id", "label", "logits", "teacher_loss"])
    n = table.num_rows
    labels = table.column("label").to_numpy()
    logits = np.asarray(table.column("logits").combine_chunks().flatten().to_numpy(), dtype=np.float64).reshape(n, -1)
    losses = table.column("teacher_loss").to_numpy().astype(np.float64)
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    confident = probs.max(axis=1) >= CONFIDENT_PROBABILITY
    agrees = probs.argmax(axis=1) == labels
    alphas = {}
    for signal in CONFIDENCES:
        params = resolve_mapping(Path(dump_dir), mapping, {}, signal)[0]
        alphas[signal] = np.asarray(alpha_from_loss(read_confidence(Path(dump_dir), signal), mapping, **params),
                                    dtype=np.float64)
    flips = None
    if flipped is not None:
        ids = table.column("sample_id").to_pylist()
        flips = np.array([bool(flipped.get(i, False)) for i in ids])
    cells = {}
    for sure, agree in CELLS:
        rows = (confident == (sure == "confident")) & (agrees == (agree == "agrees"))
        count = int(rows.sum())
        cells[f"{sure}, {agree}"] = {
            "rows": count, "share": count / max(n, 1),
            "mean_loss": float(losses[rows].mean()) if count else None,
            "mean_alpha": {s: float(a[rows].mean()) if count else None for s, a in alphas.items()},
            "flipped_share": float(flips[rows].mean()) if flips is not None and count else None,
        }
    return {"mapping": mapping, "confident_probability": CONFIDENT_PROBABILITY, "rows": n, "cells": cells,
            "flipped_share": float(flips.mean()) if flips is not None and n else None}


def format_confidence_split(split: dict) -> str:
    """The four cells as a table, and what they suggest."""
    signals = list(next(iter(split["cells"].values()))["mean_alpha"])
    synthetic = split["flipped_share"] is not None
    head = (f"rows by teacher confidence (top probability >= {split['confident_probability']:g}) and agreement with "
            f"the label; mean alpha of {split['mapping']} (calibrated) under each signal:")
    columns = ["cell", "rows", "share", "mean loss", *(f"alpha ({s})" for s in signals)]
    columns += ["flipped"] if synthetic else []
    rows = []
    for name, c in split["cells"].items():
        cells = [name, str(c["rows"]), f"{c['share']:.1%}", "-" if c["mean_loss"] is None else f"{c['mean_loss']:.4f}"]
        cells += ["-" if c["mean_alpha"][s] is None else f"{c['mean_alpha'][s]:.3f}" for s in signals]
        cells += ["-" if c["flipped_share"] is None else f"{c['flipped_share']:.1%}"] if synthetic else []
        rows.append(cells)
    widths = [max(len(columns[i]), *(len(r[i]) for r in rows)) for i in range(len(columns))]
    lines = [head, "  " + "  ".join(h.ljust(w) for h, w in zip(columns, widths))]
    lines += ["  " + "  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows]
    return "\n".join(lines + [f"  {line}" for line in what_it_suggests(split)])


def what_it_suggests(split: dict) -> list[str]:
    """Plain words on the cell that decides between the signals: a confident teacher that disagrees
    with the label. Says what the loss and the label-free signals do there, and, with a truth file,
    whether those rows are mostly flipped labels; nothing when the cell is empty."""
    cell = split["cells"]["confident, disagrees"]
    if not cell["rows"]:
        return ["no row where a confident teacher disagrees with the label: the signals part ways nowhere that matters"]
    a = cell["mean_alpha"]
    lines = [f"{cell['rows']} row(s) ({cell['share']:.1%}) where a confident teacher disagrees with the label: the loss "
             f"signal hands them to the label (mean alpha {a['loss']:.2f}), entropy to the teacher ({a['entropy']:.2f})."]
    if cell["flipped_share"] is not None and split["flipped_share"] is not None:
        overall = split["flipped_share"]
        lift = cell["flipped_share"] / overall if overall else float("inf")
        flipped = round(cell["flipped_share"] * cell["rows"])
        if cell["rows"] < MIN_ROWS_TO_SAY:
            lines.append(f"{flipped} of them {'is a flipped label' if flipped == 1 else 'are flipped labels'} "
                         f"({overall:.1%} of all rows are): too few rows to tell which signal suits this corpus.")
        elif cell["flipped_share"] > 0.5:
            lines.append(f"Most of them ({cell['flipped_share']:.0%}) are flipped labels (against {overall:.1%} of all "
                         "rows): there the teacher is right and a label-free signal should help.")
        elif lift >= 2:
            lines.append(f"{cell['flipped_share']:.0%} of them are flipped labels, {lift:.1f}x the {overall:.1%} of all "
                         "rows, but not most: the teacher is wrong on the others.")
        else:
            lines.append(f"Only {cell['flipped_share']:.0%} of them are flipped labels ({overall:.1%} of all rows): "
                         "mostly the teacher is wrong there, which the loss signal handles.")
    else:
        lines.append("Without the true labels the split cannot say whether the teacher or the label is wrong there.")
    return lines
