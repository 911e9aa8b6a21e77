"""student/diagnose.py: the rows of a dump by teacher confidence and agreement with the label, with
the mean alpha under each confidence signal, and what `cpfd inspect` says about them."""

import numpy as np
import pytest

from cpfd.storage.dump import read_dump_columns
from cpfd.student.diagnose import CONFIDENT_PROBABILITY, confidence_split, what_it_suggests
from tests.invoke import ok


def test_the_cells_partition_the_rows_as_the_stored_logits_say(dump):
    split = confidence_split(dump)
    table = read_dump_columns(dump, ["label", "logits", "teacher_loss"])
    logits = np.asarray(table.column("logits").combine_chunks().flatten().to_numpy(), dtype=np.float64)
    logits = logits.reshape(table.num_rows, -1)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    labels, losses = table.column("label").to_numpy(), table.column("teacher_loss").to_numpy()
    sure, agree = probs.max(1) >= CONFIDENT_PROBABILITY, probs.argmax(1) == labels
    assert sum(c["rows"] for c in split["cells"].values()) == split["rows"] == table.num_rows
    for name, want in (("confident, agrees", sure & agree), ("unsure, disagrees", ~sure & ~agree)):
        cell = split["cells"][name]
        assert cell["rows"] == want.sum()
        if want.any():
            assert cell["mean_loss"] == pytest.approx(losses[want].mean(), rel=1e-5)
    for cell in split["cells"].values():
        if cell["rows"]:
            assert all(0 <= a <= 1 for a in cell["mean_alpha"].values())
    assert split["flipped_share"] is None  # no truth file given


def test_the_words_follow_the_numbers():
    cell = {"rows": 40, "share": 0.04, "mean_loss": 3.0, "mean_alpha": {"loss": 0.1, "entropy": 0.8, "margin": 0.8}}
    base = {"confident_probability": 0.9, "rows": 1000, "mapping": "exp-decay"}
    mostly = {**base, "flipped_share": 0.05, "cells": {"confident, disagrees": {**cell, "flipped_share": 0.75}}}
    assert "Most of them (75%) are flipped labels" in " ".join(what_it_suggests(mostly))
    few = {**base, "flipped_share": 0.05, "cells": {"confident, disagrees": {**cell, "rows": 3, "flipped_share": 2 / 3}}}
    assert "too few rows to tell" in " ".join(what_it_suggests(few))
    unknown = {**base, "flipped_share": None, "cells": {"confident, disagrees": {**cell, "flipped_share": None}}}
    assert "cannot say whether the teacher or the label is wrong" in " ".join(what_it_suggests(unknown))
    empty = {**base, "flipped_share": None, "cells": {"confident, disagrees": {**cell, "rows": 0}}}
    assert "nowhere" in what_it_suggests(empty)[0]


def test_inspect_shows_the_split_with_flipped_labels_on_a_synthetic_corpus(tmp_path):
    corpus = tmp_path / "c"
    ok("synth", corpus, "--preset", "task4", "--train-samples", "120", "--eval-samples", "20", "--label-noise", "0.2",
       "--quiet")
    ok("train-teacher", corpus, "--out", tmp_path / "t", "--epochs", "2", "--batch-size", "16", "--hidden-size", "32",
       "--num-layers", "1", "--quiet")
    ok("dump-teacher", tmp_path / "t", corpus, "--out", tmp_path / "d", "--quiet")
    shown = ok("inspect", tmp_path / "d").stdout
    assert "rows by teacher confidence (top probability >= 0.9) and agreement with the label" in shown
    assert "alpha (loss)  alpha (entropy)  alpha (margin)  flipped" in shown
    import json

    found = json.loads(ok("inspect", tmp_path / "d", "--json").stdout)["confidence_split"]
    assert 0.1 < found["flipped_share"] < 0.3  # --label-noise 0.2, read from the truth file
