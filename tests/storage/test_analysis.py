"""storage/analysis.py, DuckDB over a small dump: views, queries, inspect (quantiles, histograms,
Table 1) against numpy."""

import csv
import io
import json

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpfd.storage.analysis import (
    QUANTILES,
    connect,
    format_inspect,
    format_rows,
    inspect_dump,
    loss_quantiles,
    run_query,
    stream_rows,
)
from cpfd.storage.errors import CpfdError
from tests.factories import layout_corpus, run_dump


def query(*args, **kw):
    """run_query with every row fetched: (columns, rows)."""
    columns, batches = run_query(*args, **kw)
    return columns, [row for batch in batches for row in batch]


def dump_arrays(dump_dir):
    table = pq.read_table(sorted(dump_dir.glob("*.parquet")))
    num_classes = table.schema.field("logits").type.list_size
    return {
        "ids": np.array(table.column("sample_id").to_pylist()),
        "labels": table.column("label").to_numpy(),
        "logits": table.column("logits").combine_chunks().flatten().to_numpy().reshape(-1, num_classes),
        "loss": table.column("teacher_loss").to_numpy().astype(np.float64),
    }


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    root = tmp_path_factory.mktemp("binary")
    corpus = layout_corpus(root / "corpus", n_train=61, n_eval=9)
    run_dump(root / "dump", corpus)
    return corpus, root / "dump", dump_arrays(root / "dump")


@pytest.fixture(scope="module")
def predictions(tmp_path_factory, binary):
    """A student's predictions (docs/formats.md, "Predictions file") on the dumped rows, plus rows the dump lacks."""
    _, _, a = binary
    rng = np.random.default_rng(7)
    n = len(a["ids"])
    logits = rng.normal(size=(n + 3, 2)).astype(np.float32)
    prob = 1 / (1 + np.exp(logits[:, 0] - logits[:, 1]))
    table = pa.table({
        "sample_id": list(a["ids"]) + ["x1", "x2", "x3"],
        "label": pa.array(list(a["labels"]) + [0, 1, 1], pa.int32()),
        "logits": pa.FixedSizeListArray.from_arrays(pa.array(logits.reshape(-1)), 2),
        "prob": pa.array(prob, pa.float32()),
        "pred": pa.array((logits[:, 1] > logits[:, 0]).astype(np.int32)),
    })
    path = tmp_path_factory.mktemp("pred") / "predictions.parquet"
    pq.write_table(table, path)
    return path, (logits[:, 1] > logits[:, 0]).astype(int), np.array(list(a["labels"]) + [0, 1, 1])


def test_teacher_view_matches_numpy(binary):
    _, dump, a = binary
    columns, rows = query(dump, "SELECT sample_id, label, teacher_loss, teacher_pred, teacher_prob FROM teacher ORDER BY sample_id")
    assert columns == ["sample_id", "label", "teacher_loss", "teacher_pred", "teacher_prob"]
    order = np.argsort(a["ids"])
    assert [r[0] for r in rows] == list(a["ids"][order])
    np.testing.assert_allclose([r[2] for r in rows], a["loss"][order], rtol=1e-6)
    assert [r[3] for r in rows] == list(a["logits"].argmax(1)[order])
    x = a["logits"].astype(np.float64)
    p1 = np.exp(x[:, 1] - x.max(1)) / np.exp(x - x.max(1, keepdims=True)).sum(1)
    np.testing.assert_allclose([r[4] for r in rows], p1[order], rtol=1e-9)
    _, [(n, mean)] = query(dump, "SELECT count(*), avg(teacher_loss) FROM teacher")
    assert n == 61 and mean == pytest.approx(a["loss"].mean())


def test_multiclass_pred_and_prob(tmp_path):
    corpus = layout_corpus(tmp_path / "corpus", n_train=20, n_eval=2, classes=("a", "b", "c"))
    run_dump(tmp_path / "dump", corpus)
    a = dump_arrays(tmp_path / "dump")
    _, rows = query(tmp_path / "dump", "SELECT teacher_pred, teacher_prob FROM teacher ORDER BY sample_id")
    x = a["logits"][np.argsort(a["ids"])].astype(np.float64)
    assert [r[0] for r in rows] == list(x.argmax(1))
    softmax = np.exp(x - x.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    np.testing.assert_allclose([r[1] for r in rows], softmax.max(1), rtol=1e-6)
    d = inspect_dump(tmp_path / "dump")
    assert d["teacher_accuracy"] == pytest.approx((a["logits"].argmax(1) == a["labels"]).mean())
    assert list(d["mean_loss_by_label"]) == ["a", "b", "c"]


def test_corpus_view_has_both_splits_and_no_frames(binary):
    corpus, dump, _ = binary
    con = connect(dump, corpus.path)
    columns = [r[0] for r in con.execute("DESCRIBE corpus").fetchall()]
    assert columns == ["sample_id", "label", "split", "title", "ocr_text", "privileged", "features"]
    assert con.execute("SELECT split, count(*) FROM corpus GROUP BY split ORDER BY split").fetchall() == [("eval", 9), ("train", 61)]
    joined = con.execute("SELECT count(*) FROM teacher JOIN corpus USING (sample_id) WHERE corpus.label = teacher.label").fetchone()[0]
    assert joined == 61
    # Without --corpus, the dump's own corpus (still where the manifest says) gives the view.
    assert query(dump, "SELECT count(*) FROM corpus")[1] == [(70,)]


def test_another_corpus_is_refused_for_the_corpus_view(tmp_path, binary):
    _, dump, _ = binary
    other = layout_corpus(tmp_path / "other", prefix="w")
    with pytest.raises(CpfdError, match="not the dump's corpus"):
        connect(dump, other.path)


def test_sql_error_is_a_one_line_cpfd_error(binary):
    _, dump, _ = binary
    for sql in ["SELEC 1", "SELECT nope FROM teacher", "SELECT * FROM predictions"]:
        with pytest.raises(CpfdError, match="^query failed: ") as info:
            query(dump, sql)
        assert "\n" not in str(info.value)


def test_unfinished_dump_is_refused(tmp_path, binary):
    corpus, _, _ = binary
    run_dump(tmp_path / "dump", corpus, stop_after=2)
    with pytest.raises(CpfdError, match="no _manifest.json"):
        query(tmp_path / "dump", "SELECT 1")


def test_inspect_agrees_with_numpy(binary):
    _, dump, a = binary
    d = inspect_dump(dump)
    loss, labels = a["loss"], a["labels"]
    assert d["rows"] == 61
    assert d["label_counts"] == {"neg": int((labels == 0).sum()), "pos": int((labels == 1).sum())}
    assert d["teacher_accuracy"] == pytest.approx((a["logits"].argmax(1) == labels).mean())
    assert list(d["loss_quantiles"]) == list(QUANTILES)
    np.testing.assert_allclose(list(d["loss_quantiles"].values()), np.quantile(loss, QUANTILES), rtol=1e-12)
    assert d["loss_mean"] == pytest.approx(loss.mean())
    assert (d["loss_min"], d["loss_max"]) == (loss.min(), loss.max())
    for label, name in enumerate(["neg", "pos"]):
        assert d["mean_loss_by_label"][name] == pytest.approx(loss[labels == label].mean())
        counts, edges = np.histogram(loss[labels == label], bins=20, range=(loss.min(), loss.max()))
        assert d["loss_histogram"]["counts"][name] == counts.tolist()
        np.testing.assert_allclose(d["loss_histogram"]["edges"], edges, rtol=1e-12)
    assert d["table1"] is None
    text = format_inspect(d)
    assert "teacher accuracy" in text and "p50" in text and "Table 1" not in text
    json.dumps(d)  # --json must work


def test_loss_quantiles_for_calibrate(binary):
    _, dump, a = binary
    q = loss_quantiles(dump, [0.1, 0.5, 0.9])
    assert list(q) == [0.1, 0.5, 0.9]
    np.testing.assert_allclose(list(q.values()), np.quantile(a["loss"], [0.1, 0.5, 0.9]), rtol=1e-12)
    with pytest.raises(CpfdError, match="quantiles must be in \\[0, 1\\]"):
        loss_quantiles(dump, [50])


def test_table1_with_a_predictions_file(binary, predictions):
    _, dump, a = binary
    path, all_pred, all_labels = predictions
    student_pred = all_pred[: len(a["ids"])]
    d = inspect_dump(dump, predictions=path)
    t = d["table1"]
    assert (t["matched"], t["predictions_rows"]) == (61, 64)
    assert t["groups"] == ["negative", "positive", "overall"]
    correct = student_pred == a["labels"]
    for outcome, mask in (("correct", correct), ("incorrect", ~correct)):
        for group, sel in (("negative", a["labels"] == 0), ("positive", a["labels"] == 1), ("overall", np.ones_like(mask))):
            cell = t[outcome][group]
            assert cell["count"] == int((mask & sel).sum())
            assert cell["mean_teacher_loss"] == pytest.approx(a["loss"][mask & sel].mean())
    assert "Table 1" in format_inspect(d)
    # The predictions view itself.
    _, rows = query(dump, "SELECT count(*) FROM predictions WHERE pred = label", predictions=path)
    assert rows[0][0] == int((all_pred == all_labels).sum())


def test_a_predictions_file_without_the_columns_is_refused(tmp_path, binary):
    _, dump, _ = binary
    pq.write_table(pa.table({"sample_id": ["v0000"], "score": [0.5]}), tmp_path / "p.parquet")
    with pytest.raises(CpfdError, match="p.parquet: .*") as info:
        connect(dump, predictions=tmp_path / "p.parquet")
    assert "\n" not in str(info.value)
    with pytest.raises(CpfdError, match="no such predictions file"):
        connect(dump, predictions=tmp_path / "missing.parquet")


def test_format_rows_table_csv_json():
    columns = ["sample_id", "teacher_loss", "logits", "note"]
    rows = [("a", 0.25, [1.0, -1.0], None), ("b", 1.5, [0.0, 2.0], "x,y")]
    table = format_rows(columns, rows, "table").splitlines()
    assert table[0].split() == columns and table[-1] == "(2 rows)"
    assert [r for r in csv.reader(io.StringIO(format_rows(columns, rows, "csv")))] == [
        columns, ["a", "0.25", "[1, -1]", ""], ["b", "1.5", "[0, 2]", "x,y"],
    ]
    assert json.loads(format_rows(columns, rows, "json")) == [
        {"sample_id": "a", "teacher_loss": 0.25, "logits": [1.0, -1.0], "note": None},
        {"sample_id": "b", "teacher_loss": 1.5, "logits": [0.0, 2.0], "note": "x,y"},
    ]
    with pytest.raises(ValueError, match="format must be"):
        format_rows(columns, rows, "xml")


@pytest.mark.parametrize("sql, message", [
    ("COPY (SELECT 1 AS x) TO '{dump}/part-00000.parquet'", "reading statements"),
    ("SELECT * FROM read_csv('/etc/passwd')", "query failed: Permission Error"),
    ("ATTACH '{dump}/x.db'", "reading statements"),
    ("EXPORT DATABASE '{dump}/exported'", "reading statements"),
    ("INSTALL httpfs", "reading statements"),
    ("SET enable_external_access = true", "reading statements"),
    ("SELECT * FROM read_parquet('{dump}/../**/*.parquet')", "query failed: Permission Error"),
    ("SELECT 1; SELECT 2", "one SQL statement, got 2"),
    ("   ", "the SQL statement is empty"),
])
def test_query_is_read_only_and_one_statement(tmp_path, binary, sql, message):
    corpus, dump, _ = binary
    before = {p.name: p.read_bytes() for p in dump.iterdir()}
    with pytest.raises(CpfdError, match=message) as info:
        query(dump, sql.format(dump=dump))
    assert "\n" not in str(info.value)
    assert {p.name: p.read_bytes() for p in dump.iterdir()} == before


WRITES = [  # every way a statement could touch a file, EXPLAIN and nested statements included
    "EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet, USE_TMP_FILE false)",
    "COPY (SELECT 1 AS x) TO '{target}' (FORMAT parquet)",
    "COPY teacher TO '{folder}/new.csv'",
    "EXPLAIN ANALYZE SELECT * FROM read_parquet('{target}')",
    "ATTACH '{folder}/x.duckdb' AS x",
    "EXPORT DATABASE '{folder}/exported'",
    "PRAGMA enable_profiling = 'json'",
    "SET profiling_output = '{folder}/profile.json'",
    "SET enable_external_access = true",
    "SELECT * FROM (SELECT * FROM read_parquet('{target}'))",
    "WITH t AS (SELECT * FROM read_csv('{folder}/../*')) SELECT count(*) FROM t",
    "CALL pragma_version()",  # harmless, and allowed: the sandbox is about files
]


@pytest.mark.parametrize("sql", WRITES)
@pytest.mark.parametrize("where", ["dump", "corpus"])
def test_the_sandbox_refuses_every_file_access_whatever_the_statement(binary, sql, where):
    """The read-only guarantee is DuckDB's own configuration (no file access, locked), not a check of
    the statement's kind: every statement is run on the sandboxed connection itself, and no file of
    the dump or the corpus changes, and none is added."""
    corpus, dump, _ = binary
    folder = dump if where == "dump" else corpus.path / "train"
    target = folder / "part-00000.parquet"
    before = {p: p.read_bytes() for root in (dump, corpus.path) for p in root.rglob("*") if p.is_file()}
    con = connect(dump, corpus.path, sandbox=True)
    try:
        if sql.startswith("CALL"):
            con.execute(sql)
        else:
            with pytest.raises(duckdb.Error, match="Permission Error|Cannot change configuration"):
                con.execute(sql.format(target=target, folder=folder)).fetchall()
    finally:
        con.close()
    assert {p: p.read_bytes() for root in (dump, corpus.path) for p in root.rglob("*") if p.is_file()} == before


def test_query_explain_analyze_copy_over_a_shard_is_one_line_and_changes_nothing(binary):
    corpus, dump, _ = binary
    before = {p.name: p.read_bytes() for p in dump.iterdir()}
    sql = f"EXPLAIN ANALYZE COPY (SELECT 1 AS x) TO '{dump}/part-00000.parquet' (FORMAT parquet, USE_TMP_FILE false)"
    with pytest.raises(CpfdError, match="query failed: Permission Error"):
        query(dump, sql, corpus=corpus.path)
    assert {p.name: p.read_bytes() for p in dump.iterdir()} == before


def test_query_with_write_may_write_elsewhere(tmp_path, binary):
    _, dump, _ = binary
    out = tmp_path / "labels.parquet"
    query(dump, f"COPY (SELECT label FROM teacher) TO '{out}'", write=True)
    assert pq.read_table(out).num_rows == 61


def test_query_results_stream_in_batches(binary):
    _, dump, _ = binary
    columns, batches = run_query(dump, "SELECT sample_id FROM teacher ORDER BY sample_id", batch_rows=10)
    sizes = [len(b) for b in batches]
    assert columns == ["sample_id"] and sizes == [10] * 6 + [1]
    columns, batches = run_query(dump, "SELECT sample_id, teacher_loss FROM teacher ORDER BY sample_id", batch_rows=7)
    lines = list(stream_rows(columns, batches, "json"))
    assert len(json.loads("\n".join(lines))) == 61


def test_analyses_warn_about_a_shard_that_changed(tmp_path, binary):
    import shutil

    corpus, dump, _ = binary
    copy = tmp_path / "dump"
    shutil.copytree(dump, copy)
    table = pq.read_table(copy / "part-00000.parquet")
    pq.write_table(table, copy / "part-00000.parquet")  # same rows, other bytes
    said = []
    inspect_dump(copy, warn=said.append)
    assert len(said) == 1 and "part-00000.parquet changed since the dump was written" in said[0]
    said.clear()
    inspect_dump(dump, warn=said.append)
    assert said == []
