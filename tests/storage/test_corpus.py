"""storage/corpus.py, the corpus directory: schema round trip, atomic writes, validation and streaming."""

import json
import math
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpfd.storage.corpus import CORPUS_JSON, Corpus, CorpusWriter, hash_ids, hash_labels
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import CORPUS_SCHEMA, SCHEMA_VERSION
from tests.factories import make_row

REPO = Path(__file__).resolve().parents[2]


def write_corpus(out, n_train=25, n_eval=7, **kw):
    with CorpusWriter(
        out, task="t", classes=["neg", "pos"], frames_per_video=2, image_size=8, has_text=True,
        privileged_features=["reports", "legacy_score"], features=["duration"], **kw,
    ) as w:
        for i in range(n_train):
            w.add("train", make_row(i))
        for i in range(n_train, n_train + n_eval):
            w.add("eval", make_row(i))
    return Corpus(out)


def test_round_trip_keeps_every_value(tmp_path):
    corpus = write_corpus(tmp_path / "c", rows_per_shard=10, row_group_rows=4)
    rows = [r for t in corpus.iter_batches("train", list(CORPUS_SCHEMA.names)) for r in t.to_pylist()]
    assert len(rows) == 25
    for i, row in enumerate(rows):
        expected = make_row(i)
        assert row["privileged"][0] == expected["privileged"][0]
        assert math.isnan(row["privileged"][1])
        assert {k: v for k, v in row.items() if k != "privileged"} == {
            k: v for k, v in expected.items() if k != "privileged"
        }
    meta = json.loads((tmp_path / "c" / CORPUS_JSON).read_text())
    assert meta["schema_version"] == SCHEMA_VERSION
    assert [s["rows"] for s in meta["splits"]["train"]["shards"]] == [10, 10, 5]
    # Row groups never straddle shards and never exceed the requested size.
    assert corpus.row_groups("train") == [[4, 4, 2], [4, 4, 2], [4, 1]]
    assert corpus.num_rows("eval") == 7


def test_projection_reads_only_the_columns_asked_for(tmp_path):
    corpus = write_corpus(tmp_path / "c", row_group_rows=8)
    tables = list(corpus.iter_batches("train", ["label", "privileged"]))
    assert [t.num_rows for t in tables] == [8, 8, 8, 1]
    assert all(t.column_names == ["label", "privileged"] for t in tables)
    with pytest.raises(ValueError, match="unknown column"):
        list(corpus.iter_batches("train", ["pixels"]))


def test_work_units_cover_each_row_once(tmp_path):
    corpus = write_corpus(tmp_path / "c", rows_per_shard=9, row_group_rows=4)
    units = corpus.work_units("train")
    assert sum(u.rows for u in units) == 25
    assert [u.offset for u in units] == [0, 4, 8, 9, 13, 17, 18, 22]
    ids = [i for u in units for i in corpus.read_unit(u, ["sample_id"]).column(0).to_pylist()]
    assert ids == [f"v{i:05d}" for i in range(25)]


def test_existing_corpus_is_refused_without_overwrite(tmp_path):
    write_corpus(tmp_path / "c")
    with pytest.raises(CpfdError, match="already holds a corpus.*--overwrite"):
        write_corpus(tmp_path / "c")
    corpus = write_corpus(tmp_path / "c", n_train=3, n_eval=1, overwrite=True)
    assert corpus.num_rows("train") == 3
    assert len(list((tmp_path / "c" / "train").glob("*.parquet"))) == 1


def test_exception_mid_write_leaves_no_corpus(tmp_path):
    out = tmp_path / "c"
    with pytest.raises(RuntimeError):
        with CorpusWriter(out, task="t", classes=["a", "b"], frames_per_video=0, image_size=8, has_text=False,
                          privileged_features=[], features=["x"], rows_per_shard=5, row_group_rows=2) as w:
            for i in range(12):
                w.add("train", make_row(i))
            raise RuntimeError("boom")
    assert not out.exists()  # the folder this write created goes too
    assert list(tmp_path.iterdir()) == []  # no lock file, no temp file
    with pytest.raises(CpfdError, match="no such corpus directory"):
        Corpus(out)
    out.mkdir()  # a folder that was there before stays, empty
    with pytest.raises(RuntimeError):
        with CorpusWriter(out, task="t", classes=["a", "b"], frames_per_video=0, image_size=8, has_text=False,
                          privileged_features=[], features=["x"], rows_per_shard=5, row_group_rows=2) as w:
            w.add("train", make_row(0))
            raise RuntimeError("boom")
    assert out.exists() is False or list(out.rglob("*")) == []


def test_kill_9_mid_write_leaves_no_corpus_and_a_rerun_finishes(tmp_path):
    out = tmp_path / "c"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from cpfd.storage.corpus import CorpusWriter
        from tests.factories import make_row
        w = CorpusWriter({str(out)!r}, task="t", classes=["a", "b"], frames_per_video=2, image_size=8,
                         has_text=True, privileged_features=["p", "q"], features=["d"],
                         rows_per_shard=6, row_group_rows=2)
        for i in range(20):
            w.add("train", make_row(i))
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    assert list((out / "train").glob("part-*.parquet")), "the test should kill after some shards committed"
    assert not (out / CORPUS_JSON).exists()
    with pytest.raises(CpfdError, match="no corpus.json"):
        Corpus(out)
    corpus = write_corpus(out)  # a rerun cleans the leftovers and completes
    assert corpus.num_rows("train") == 25
    assert not [p for p in (out / "train").iterdir() if p.name.startswith(".")]


def test_reader_refuses_a_missing_shard(tmp_path):
    write_corpus(tmp_path / "c", rows_per_shard=10)
    (tmp_path / "c" / "train" / "part-00001.parquet").unlink()
    with pytest.raises(CpfdError, match="part-00001.parquet: shard listed in corpus.json is missing"):
        Corpus(tmp_path / "c")


def test_reader_refuses_a_shard_with_other_rows(tmp_path):
    write_corpus(tmp_path / "c", rows_per_shard=10)
    shard = tmp_path / "c" / "train" / "part-00000.parquet"
    pq.write_table(pq.read_table(shard).slice(0, 9), shard)
    with pytest.raises(CpfdError, match="part-00000.parquet: holds 9 rows, corpus.json says 10"):
        Corpus(tmp_path / "c")


def test_reader_refuses_changed_ids(tmp_path):
    write_corpus(tmp_path / "c")
    shard = tmp_path / "c" / "eval" / "part-00000.parquet"
    table = pq.read_table(shard)
    ids = table.column("sample_id").to_pylist()
    ids[0] = "someone-else"
    table = table.set_column(0, CORPUS_SCHEMA.field("sample_id"), [ids])
    pq.write_table(table, shard)
    with pytest.raises(CpfdError, match="sample ids do not match the corpus fingerprint"):
        Corpus(tmp_path / "c")
    Corpus(tmp_path / "c", verify="fast")  # the fast check only looks at counts and schemas


def test_reader_refuses_changed_labels(tmp_path):
    # The fingerprint covers ids only; corpus.json's labels_sha256 covers the labels.
    write_corpus(tmp_path / "c")
    shard = tmp_path / "c" / "train" / "part-00000.parquet"
    table = pq.read_table(shard)
    labels = table.column("label").to_numpy().copy()
    labels[3] = 1 - labels[3]
    pq.write_table(table.set_column(1, CORPUS_SCHEMA.field("label"), [pa.array(labels)]), shard)
    with pytest.raises(CpfdError, match="train/part-00000.parquet: labels do not match labels_sha256 in corpus.json"):
        Corpus(tmp_path / "c")
    Corpus(tmp_path / "c", verify="fast")


def test_shard_digests_hash_what_the_shards_hold(tmp_path):
    corpus = write_corpus(tmp_path / "c", rows_per_shard=10, row_group_rows=4)
    digests = corpus.shard_digests("train")
    assert len(digests) == 3 and len(set(digests)) == 3
    for file, (ids_sha256, labels_sha256) in zip(corpus.shard_paths("train"), digests):
        rows = pq.read_table(file)
        assert hash_ids(rows.column("sample_id").to_pylist()) == ids_sha256
        assert hash_labels(np.array(rows.column("label").to_pylist())).hexdigest() == labels_sha256


def test_the_arrow_ids_hash_is_the_per_id_hash():
    ids = ["v1", "héllo wörld", "", "x" * 300, "日本"]
    want = hash_ids(ids)
    assert hash_ids(pa.array(ids)) == want
    assert hash_ids(pa.chunked_array([ids[:2], [], ids[2:]])) == want
    assert hash_ids(pa.array(["skip"] + ids).slice(1)) == want  # an offset into the buffer
    assert hash_ids(pa.array(ids).slice(1, 2)) == hash_ids(ids[1:3])
    assert hash_ids(pa.array(ids[::-1])) != want


def test_reader_refuses_an_edited_manifest_and_other_versions(tmp_path):
    write_corpus(tmp_path / "c")
    path = tmp_path / "c" / CORPUS_JSON
    meta = json.loads(path.read_text())
    meta["splits"]["train"]["shards"][0]["rows"] += 1
    path.write_text(json.dumps(meta))
    with pytest.raises(CpfdError, match="fingerprint does not match"):
        Corpus(tmp_path / "c")
    meta["schema_version"] = SCHEMA_VERSION + 1
    path.write_text(json.dumps(meta))
    with pytest.raises(CpfdError, match=f"schema_version {SCHEMA_VERSION + 1}"):
        Corpus(tmp_path / "c")
    path.write_text("{not json")
    with pytest.raises(CpfdError, match="not valid JSON"):
        Corpus(tmp_path / "c")


def test_summary_counts_labels(tmp_path):
    summary = write_corpus(tmp_path / "c").summary()
    assert summary["splits"]["train"]["label_counts"] == {"neg": 13, "pos": 12}
    assert summary["splits"]["eval"]["rows"] == 7
    assert summary["privileged_features"] == ["reports", "legacy_score"]
