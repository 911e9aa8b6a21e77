"""pipeline/evaluate.py: `cpfd evaluate` reports sklearn's metrics and writes a predictions file, reads
only the columns its model reads, and refuses a model of another corpus or a broken model folder."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from cpfd.pipeline.metrics import classification_metrics
from cpfd.storage.corpus import Corpus
from tests.factories import tiny_corpus
from tests.invoke import ok, run


def test_evaluate_reports_sklearn_metrics_and_writes_predictions(corpus, student, tmp_path):
    result = ok("evaluate", student, corpus.path, "--out", tmp_path / "pred.parquet", "--json", "--quiet")
    metrics = json.loads(result.output[: result.output.rindex("}") + 1])
    table = pq.read_table(tmp_path / "pred.parquet")
    assert table.column_names == ["sample_id", "label", "logits", "prob", "pred"]
    assert table.column("sample_id").to_pylist() == corpus.read_column("eval", "sample_id").to_pylist()
    logits = np.array(table.column("logits").to_pylist())
    expected = classification_metrics(table.column("label").to_numpy(), logits)
    for key in ("roc_auc", "pr_auc", "f1", "best_f1"):
        assert metrics[key] == pytest.approx(expected[key])
    assert np.allclose(table.column("prob").to_numpy(), np.exp(logits[:, 1]) / np.exp(logits).sum(1), atol=1e-6)


def test_student_evaluation_never_reads_privileged(corpus, student, teacher, monkeypatch):
    read = []
    original = Corpus.read_unit

    def spy(self, unit, columns):
        read.append(tuple(columns))
        return original(self, unit, columns)

    monkeypatch.setattr(Corpus, "read_unit", spy)
    ok("evaluate", student, corpus.path, "--quiet")
    assert read and all("privileged" not in c for c in read)
    read.clear()
    ok("evaluate", teacher, corpus.path, "--quiet")
    assert read and all("privileged" in c for c in read)


def test_evaluate_refuses_a_model_of_another_corpus(student, tmp_path):
    other = tiny_corpus(tmp_path / "other", classes=("a", "b", "c"))
    result = run("evaluate", student, other.path, "--quiet")
    assert result.exit_code == 1 and "does not fit corpus" in result.output


def test_corrupt_or_missing_weights_are_one_line_errors(student, corpus, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.json",):
        (broken / f).write_text((student / f).read_text())
    result = run("evaluate", broken, corpus.path)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "model.safetensors" in result.output
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    result = run("evaluate", broken, corpus.path)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("error:")
