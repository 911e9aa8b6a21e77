"""DuckDB over the stored teacher outputs: `cpfd query`, `cpfd inspect` and the numbers `calibrate` needs.

DuckDB scans the Parquet files itself (`read_parquet([...files])`, column projection and
streaming aggregation), so memory stays flat whatever the dump's size: nothing is loaded into
pandas. Views on a connection from `connect(dump_dir, corpus_dir, predictions)`:

    teacher      sample_id, label, teacher_loss, logits, [fold: a cross-fitted dump's], teacher_pred (argmax of logits),
                 teacher_prob (softmax probability of class 1 for binary tasks, of the predicted
                 class otherwise)
    corpus       sample_id, label, split, title, ocr_text, privileged, features (both splits;
                 never `frames`) -- when a corpus is given, or the dump's own corpus is where the
                 manifest says and has the dump's fingerprint
    predictions  sample_id, label, logits, prob, pred (the `cpfd evaluate` file, docs/formats.md "Predictions file")

Example:
    run_query("dump", "SELECT label, avg(teacher_loss) FROM teacher GROUP BY label")
    inspect_dump("dump", predictions="pred.parquet")  # the paper's Table 1 with a predictions file
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import duckdb
import pyarrow.dataset as pads

from cpfd.storage.corpus import CORPUS_JSON, Corpus
from cpfd.storage.dump import DUMP_MANIFEST, file_sha256, read_manifest, shard_files
from cpfd.storage.errors import CpfdError
from cpfd.storage.errors import warn as cpfd_warn
from cpfd.storage.schema import SPLITS

QUANTILES = (0.01, 0.05, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99)
HISTOGRAM_BINS = 20
CORPUS_VIEW_COLUMNS = ("sample_id", "label", "split", "title", "ocr_text", "privileged", "features")


def _literal(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _file_list(files: Sequence[Path]) -> str:
    return "[" + ", ".join(_literal(f) for f in files) + "]"


def _lambda(param: str, body: str) -> str:
    # DuckDB 1.3 introduced `lambda x: ...` and deprecated `x -> ...`; pyproject allows >= 1.0.
    major, minor = (int(p) for p in duckdb.__version__.split(".")[:2])
    return f"lambda {param}: {body}" if (major, minor) >= (1, 3) else f"{param} -> {body}"


def _one_line(e: Exception) -> str:
    lines = [line for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else type(e).__name__


def _teacher_view(source: str, num_classes: int, folds: bool = False) -> str:
    if num_classes == 2:
        # Array indexing is 1-based; ties go to class 0, like list_position of the first max.
        pred = "CAST(logits[2] > logits[1] AS INTEGER)"
        prob = (
            "exp(logits[2]::DOUBLE - greatest(logits[1], logits[2])) / "
            "(exp(logits[1]::DOUBLE - greatest(logits[1], logits[2])) + exp(logits[2]::DOUBLE - greatest(logits[1], logits[2])))"
        )
    else:
        pred = "CAST(list_position(logits, list_max(logits)) - 1 AS INTEGER)"
        # p(argmax) = exp(max - max) / sum exp(x - max) = 1 / sum exp(x - max): no overflow.
        prob = f"1.0 / list_sum(list_transform(logits, {_lambda('x', 'exp(x::DOUBLE - list_max(logits))')}))"
    return (
        "CREATE VIEW teacher AS SELECT sample_id, label, teacher_loss, logits, " + ("fold, " if folds else "")
        + f"{pred} AS teacher_pred, {prob} AS teacher_prob FROM {source}"
    )


def _corpus_view(sources: dict[str, str]) -> str:
    """The corpus view over each split's source (`{split: FROM expression}`), frames never read."""
    columns = "sample_id, label, {split} AS split, title, ocr_text, privileged, features"
    parts = [f"SELECT {columns.format(split=_literal(split))} FROM {source}" for split, source in sources.items()]
    return "CREATE VIEW corpus AS " + " UNION ALL ".join(parts)


def _source(con: duckdb.DuckDBPyConnection, name: str, files: Sequence[Path], sandbox: bool) -> str:
    """What a view reads `files` through: DuckDB's own Parquet reader (`read_parquet`), or, in a
    sandbox, an Arrow dataset registered as `name`, which pyarrow scans for DuckDB (with column
    projection) so that DuckDB itself never needs a file: its file access can then be switched off
    whole. (The Arrow scan costs about 1.4x the time and 1.8x the memory of `read_parquet` on
    `cpfd inspect`'s queries, benchmarks/duckdb_inspect.py: only SQL a user wrote pays it.)"""
    if not sandbox:
        return f"read_parquet({_file_list(files)})"
    con.register(name, pads.dataset([str(f) for f in files], format="parquet"))
    return name


def _find_corpus(manifest: dict, corpus_dir: str | Path | None) -> Corpus | None:
    """The corpus given (it must be the dump's), else the dump's own one if it is still there."""
    fingerprint = manifest["corpus"].get("fingerprint")
    if corpus_dir is None:
        recorded = manifest["corpus"].get("path")
        if not recorded or not (Path(recorded) / CORPUS_JSON).exists():
            return None
        try:
            corpus = Corpus(recorded, verify="fast")
        except CpfdError:
            return None
        return corpus if corpus.fingerprint == fingerprint else None
    corpus = Corpus(corpus_dir, verify="fast")
    if corpus.fingerprint != fingerprint:
        raise CpfdError(
            f"{corpus.path}: not the dump's corpus (fingerprint {corpus.fingerprint[:12]}, the dump was made from {str(fingerprint)[:12]})"
        )
    return corpus


def connect(
    dump_dir: str | Path, corpus_dir: str | Path | None = None, predictions: str | Path | None = None,
    *, sandbox: bool = False, check_files: bool = True, warn=None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with the views `teacher`, `corpus`, `predictions`.

    `sandbox` (for SQL a user wrote: `cpfd query` without --write) locks the connection down: the
    views read Arrow datasets that pyarrow scans (`_source`), DuckDB's own file access is switched
    off (no COPY TO, ATTACH, EXPORT, INSTALL/LOAD, reading or writing any file, whatever the
    statement: EXPLAIN ANALYZE, PRAGMA and SET included), and the configuration is locked so no
    statement can undo it. Without it the views read with DuckDB's Parquet reader (the canned
    analyses, whose SQL is ours, and `query --write`).
    With `check_files` (the default), a shard that no longer matches the sha256 its manifest records
    is a warning (`warn(message)`, else a CpfdWarning): the numbers would not be the teacher's.
    """
    manifest = read_manifest(dump_dir)
    files = shard_files(dump_dir, manifest)
    missing = [f for f in files if not f.exists()]
    if missing:
        raise CpfdError(f"{missing[0]}: shard listed in the dump manifest is missing")
    if check_files:
        changed = [f for f, entry in zip(files, manifest["shards"]) if file_sha256(f) != entry["sha256"]]
        if changed:
            (warn or cpfd_warn)(f"{changed[0]}{f' and {len(changed) - 1} more shard(s)' if len(changed) > 1 else ''} changed since "
                 f"the dump was written (sha256 differs from {DUMP_MANIFEST}): these numbers are not the teacher's")
    corpus = _find_corpus(manifest, corpus_dir)
    if predictions is not None and not Path(predictions).is_file():
        raise CpfdError(f"{predictions}: no such predictions file")
    con = duckdb.connect(":memory:")
    try:
        teacher = _source(con, "_teacher_files", files, sandbox)
        con.execute(_teacher_view(teacher, int(manifest["num_classes"]), bool(manifest["teacher"].get("folds"))))
        if corpus is not None:
            con.execute(_corpus_view({split: _source(con, f"_corpus_{split}_files", corpus.shard_paths(split), sandbox)
                                      for split in SPLITS if corpus.shard_paths(split)}))
        if predictions is not None:
            source = _source(con, "_predictions_file", [Path(predictions)], sandbox)
            con.execute(f"CREATE VIEW predictions AS SELECT sample_id, label, logits, prob, pred FROM {source}")
            con.execute("SELECT * FROM predictions LIMIT 0")  # bind now: a wrong file fails here
        if sandbox:  # no statement, EXPLAIN, PRAGMA or SET included, can touch a file from here on
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as e:
        con.close()
        raise CpfdError(f"{predictions or dump_dir}: {_one_line(e)}") from None
    return con


# Statements `cpfd query` runs without --write: reading ones. This only makes a clear message for a
# statement that means to change something; what keeps files safe is the sandbox (`connect`).
READ_STATEMENTS = ("SELECT", "EXPLAIN")


def run_query(
    dump_dir: str | Path, sql: str, corpus: str | Path | None = None, predictions: str | Path | None = None,
    *, write: bool = False, batch_rows: int = 10_000, warn=None,
) -> tuple[list[str], Iterator[list[tuple]]]:
    """Run one SQL statement over the views; returns (column names, an iterator of row batches).

    Rows are fetched `batch_rows` at a time, so a large result is never held whole. Without
    `write` the statement must be a SELECT (or EXPLAIN) and the connection is a sandbox that cannot
    touch any file (`connect`); with it, any single statement runs with DuckDB's full access.
    """
    if not sql or not sql.strip():
        raise CpfdError("the SQL statement is empty")
    con = connect(dump_dir, corpus, predictions, sandbox=not write, warn=warn)
    try:
        statements = con.extract_statements(sql)
        if len(statements) != 1:
            raise CpfdError(f"query takes one SQL statement, got {len(statements)} (separate queries, or a stray ';')")
        kind = statements[0].type.name
        if not write and kind not in READ_STATEMENTS:
            raise CpfdError(f"query runs reading statements ({', '.join(READ_STATEMENTS)}); this one is {kind}. "
                            "Pass --write if you mean to change files")
        result = con.execute(sql)
    except duckdb.Error as e:
        con.close()
        raise CpfdError(f"query failed: {_one_line(e)}") from None
    except BaseException:
        con.close()
        raise
    if result.description is None:
        con.close()
        return [], iter(())
    columns = [d[0] for d in result.description]

    def batches() -> Iterator[list[tuple]]:
        try:
            while rows := result.fetchmany(batch_rows):
                yield rows
        except duckdb.Error as e:
            raise CpfdError(f"query failed: {_one_line(e)}") from None
        finally:
            con.close()

    return columns, batches()


def _check_quantiles(qs: Sequence[float]) -> list[float]:
    qs = [float(q) for q in qs]
    bad = [q for q in qs if not 0.0 <= q <= 1.0]
    if not qs or bad:
        raise CpfdError(f"quantiles must be in [0, 1], got {bad or 'none'}")
    return qs


def loss_quantiles(dump_dir: str | Path, qs: Sequence[float] = QUANTILES, warn=None) -> dict[float, float]:
    """Exact (interpolated, like numpy's default) teacher-loss quantiles: {q: value}."""
    qs = _check_quantiles(qs)
    con = connect(dump_dir, warn=warn)
    try:
        values = con.execute("SELECT quantile_cont(teacher_loss::DOUBLE, ?::DOUBLE[]) FROM teacher", [qs]).fetchone()[0]
    finally:
        con.close()
    return dict(zip(qs, values))


def _group_names(classes: list[str]) -> list[str]:
    # The paper's Table 1 speaks of negatives and positives; beyond two classes, use the names.
    return ["negative", "positive"] if len(classes) == 2 else list(classes)


def inspect_dump(dump_dir: str | Path, predictions: str | Path | None = None, warn=None) -> dict:
    """Loss distribution and teacher accuracy of a dump, all computed by DuckDB.

    Returns {dump, split, classes, rows, label_counts {class: n}, teacher_accuracy,
    accuracy_by_label {class: acc}, loss_mean, loss_min, loss_max, loss_quantiles {q: value},
    mean_loss_by_label {class: mean}, loss_histogram {edges [21], counts {class: [20]}},
    table1 (None without `predictions`): {matched, predictions_rows, groups [names],
    correct {group: {mean_teacher_loss, count}}, incorrect {...}}}.
    """
    manifest = read_manifest(dump_dir)
    classes = list(manifest["classes"])
    con = connect(dump_dir, predictions=predictions, warn=warn)
    try:
        by_label = con.execute(
            "SELECT label, count(*), avg(teacher_loss::DOUBLE), sum(CAST(teacher_pred = label AS BIGINT)), "
            "min(teacher_loss::DOUBLE), max(teacher_loss::DOUBLE), sum(teacher_loss::DOUBLE) "
            "FROM teacher GROUP BY label ORDER BY label"
        ).fetchall()
        rows = sum(r[1] for r in by_label)
        if rows == 0:
            raise CpfdError(f"{dump_dir}: the dump holds no rows")
        lo = min(r[4] for r in by_label)
        hi = max(r[5] for r in by_label)
        quantiles = con.execute(
            "SELECT quantile_cont(teacher_loss::DOUBLE, ?::DOUBLE[]) FROM teacher", [list(QUANTILES)]
        ).fetchone()[0]
        width = (hi - lo) / HISTOGRAM_BINS
        histogram_rows = con.execute(
            "SELECT label, CASE WHEN ?::DOUBLE = 0 THEN 0 ELSE LEAST(CAST(floor((teacher_loss::DOUBLE - ?) * (? / ?::DOUBLE)) AS BIGINT), ?) END AS bin, "
            "count(*) FROM teacher GROUP BY ALL",
            [hi - lo, lo, HISTOGRAM_BINS, hi - lo, HISTOGRAM_BINS - 1],
        ).fetchall()
        table1 = _table1(con, classes) if predictions is not None else None
    except duckdb.Error as e:
        raise CpfdError(f"{dump_dir}: {_one_line(e)}") from None
    finally:
        con.close()

    def name(label: int) -> str:
        return classes[label] if 0 <= label < len(classes) else str(label)

    stats = {r[0]: r for r in by_label}
    counts = {c: [0] * HISTOGRAM_BINS for c in classes}
    for label, bin_, n in histogram_rows:
        counts.setdefault(name(label), [0] * HISTOGRAM_BINS)[int(bin_)] += n
    edges = [lo + width * i for i in range(HISTOGRAM_BINS)] + [hi]
    return {
        "dump": str(dump_dir),
        "split": manifest["corpus"].get("split"),
        "classes": classes,
        "rows": rows,
        "label_counts": {name(i): int(stats[i][1]) if i in stats else 0 for i in sorted(set(range(len(classes))) | set(stats))},
        "teacher_accuracy": sum(r[3] for r in by_label) / rows,
        "accuracy_by_label": {name(label): r[3] / r[1] for label, r in stats.items()},
        "loss_mean": sum(r[6] for r in by_label) / rows,
        "loss_min": lo,
        "loss_max": hi,
        "loss_quantiles": dict(zip(QUANTILES, quantiles)),
        "mean_loss_by_label": {name(i): stats[i][2] if i in stats else None for i in sorted(set(range(len(classes))) | set(stats))},
        "loss_histogram": {"edges": edges, "counts": counts},
        "table1": table1,
    }


def _table1(con: duckdb.DuckDBPyConnection, classes: list[str]) -> dict:
    """Mean teacher loss by (student correct / incorrect) x (label group / overall): paper Table 1."""
    predictions_rows = con.execute("SELECT count(*) FROM predictions").fetchone()[0]
    result = con.execute(
        "SELECT p.pred = p.label AS correct, t.label, count(*), avg(t.teacher_loss::DOUBLE) "
        "FROM teacher t JOIN predictions p ON t.sample_id = p.sample_id "
        "GROUP BY GROUPING SETS ((correct, t.label), (correct))"
    ).fetchall()
    matched = sum(n for correct, label, n, _ in result if label is None)
    if matched == 0:
        raise CpfdError(
            "no sample_id of the predictions file is in the dump (evaluate the split the teacher was dumped on)"
        )
    groups = _group_names(classes)
    table = {
        outcome: {g: {"mean_teacher_loss": None, "count": 0} for g in groups + ["overall"]}
        for outcome in ("correct", "incorrect")
    }
    for correct, label, n, mean in result:
        outcome = "correct" if correct else "incorrect"
        group = "overall" if label is None else (groups[label] if 0 <= label < len(groups) else str(label))
        table[outcome].setdefault(group, {})
        table[outcome][group] = {"mean_teacher_loss": mean, "count": int(n)}
    return {"matched": int(matched), "predictions_rows": int(predictions_rows), "groups": groups + ["overall"], **table}


# --------------------------------------------------------------------------------------------
# Text output
# --------------------------------------------------------------------------------------------


def _num(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if math.isfinite(v) else str(v)
    return str(v)


def format_inspect(d: dict) -> str:
    """Human-readable text for `inspect_dump`'s dict."""
    counts = ", ".join(f"{c} {n:,}" for c, n in d["label_counts"].items())
    by_label = ", ".join(f"{c} {_num(a)}" for c, a in d["accuracy_by_label"].items())
    lines = [
        f"teacher dump {d['dump']}: {d['rows']:,} rows of the {d['split']} split",
        f"  labels: {counts}",
        f"  teacher accuracy: {_num(d['teacher_accuracy'])} ({by_label})",
        f"  teacher loss: mean {_num(d['loss_mean'])}, min {_num(d['loss_min'])}, max {_num(d['loss_max'])}",
        "  quantiles: " + "  ".join(f"p{q * 100:g} {_num(v)}" for q, v in d["loss_quantiles"].items()),
        "  mean loss by label: " + ", ".join(f"{c} {_num(m)}" for c, m in d["mean_loss_by_label"].items()),
        f"  histogram of the loss ({len(d['loss_histogram']['edges']) - 1} bins from min to max):",
    ]
    names = list(d["loss_histogram"]["counts"])
    edges = d["loss_histogram"]["edges"]
    lines.append("    " + f"{'bin':>21}" + "".join(f"{c:>12}" for c in names))
    for i in range(len(edges) - 1):
        bounds = f"[{edges[i]:.4g}, {edges[i + 1]:.4g}" + (")" if i < len(edges) - 2 else "]")
        lines.append("    " + f"{bounds:>21}" + "".join(f"{d['loss_histogram']['counts'][c][i]:>12,}" for c in names))
    t = d.get("table1")
    if t:
        lines.append(
            f"  mean teacher loss by student outcome (paper Table 1; {t['matched']:,} of {t['predictions_rows']:,} predictions matched):"
        )
        lines.append("    " + f"{'student':<10}" + "".join(f"{g:>22}" for g in t["groups"]))
        for outcome in ("correct", "incorrect"):
            cells = [
                f"{_num(t[outcome][g]['mean_teacher_loss'])} (n={t[outcome][g]['count']:,})" for g in t["groups"]
            ]
            lines.append("    " + f"{outcome:<10}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, bool)) or v is None:
        return v
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return str(v)


def _cell(v, fmt: str) -> str:
    if v is None:
        return "NULL" if fmt == "table" else ""
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_cell(x, fmt) for x in v) + "]"
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return str(v)


def format_rows(columns: Sequence[str], rows: Sequence[tuple], fmt: str = "table") -> str:
    """Query results as `table` (aligned text), `csv`, or `json` (a list of objects)."""
    return "\n".join(stream_rows(columns, [list(rows)], fmt))


def stream_rows(columns: Sequence[str], batches: Iterable[Sequence[tuple]], fmt: str = "table") -> Iterator[str]:
    """`format_rows` batch by batch, as lines: a result of millions of rows is never held whole.

    `table` sizes its columns from the first batch (later, wider values push their row right);
    `json` is still one JSON list, written an object at a time."""
    if fmt not in ("table", "csv", "json"):
        raise ValueError(f"format must be table, csv or json, got {fmt!r}")
    count = 0
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        yield buffer.getvalue().rstrip("\n")
        for rows in batches:
            buffer.seek(0), buffer.truncate()
            writer.writerows([[_cell(v, fmt) for v in row] for row in rows])
            if rows:
                yield buffer.getvalue().rstrip("\n")
        return
    if fmt == "json":
        yield "["
        for rows in batches:
            for row in rows:
                text = json.dumps({c: _jsonable(v) for c, v in zip(columns, row)})
                yield ("  " if count == 0 else ", ") + text
                count += 1
        yield "]"
        return
    widths, right = None, None
    for rows in batches:
        cells = [[_cell(v, fmt) for v in row] for row in rows]
        if widths is None:
            widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
            right = [all(isinstance(row[i], (int, float)) or row[i] is None for row in rows) for i in range(len(columns))]
            yield _table_line(columns, widths, right)
            yield _table_line(["-" * w for w in widths], widths, right)
        for r in cells:
            yield _table_line(r, widths, right)
        count += len(rows)
    if widths is None:
        widths, right = [len(c) for c in columns], [False] * len(columns)
        yield _table_line(columns, widths, right)
        yield _table_line(["-" * w for w in widths], widths, right)
    yield f"({count} row{'s' if count != 1 else ''})"


def _table_line(values, widths, right) -> str:
    return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()
