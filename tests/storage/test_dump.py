"""storage/dump.py, the teacher dump's writer and reader: a mirror of the corpus shards, crash-safe
resumption, job arrays, the aligned reader. (`cpfd dump-teacher` itself: tests/teacher/test_dump.py.)"""

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cpfd.storage.atomic import temp_path_for
from cpfd.storage.corpus import hash_ids, hash_labels
from cpfd.storage.dump import (
    DIGESTS_KEY,
    DUMP_MANIFEST,
    PROVENANCE_KEY,
    TeacherDump,
    describe_dump,
    dump_provenance,
    file_sha256,
    finalize_dump,
    open_dump,
    plan_dump,
    values_digest,
    write_dump_shard,
)
from cpfd.storage.errors import CpfdError
from cpfd.storage.schema import DUMP_SCHEMA_VERSION, dump_schema
from tests.factories import CREATED_AT, TEACHER_A, TEACHER_B, cross_entropy, layout_corpus, run_dump, teacher_outputs
from tests.invoke import raises_one_line

def snapshot(folder: Path) -> dict:
    return {p.name: file_sha256(p) for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return layout_corpus(tmp_path_factory.mktemp("c") / "corpus")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    out = tmp_path_factory.mktemp("d") / "dump"
    assert run_dump(out, corpus) is True
    return out


def rewrite_shard(file: Path, change, digests="keep") -> None:
    """Rewrite a committed dump shard after `change(table)`, provenance and row groups kept.

    digests: "keep" the footer's (the file edited behind cpfd's back), "recompute" them from the
    new rows (what a writer would have recorded for those rows), or "drop" them (a shard written
    before cpfd recorded digests).
    """
    pf = pq.ParquetFile(file)
    footer = pf.metadata.metadata
    new = change(pf.read()).replace_schema_metadata({PROVENANCE_KEY: footer[PROVENANCE_KEY]})
    with pq.ParquetWriter(file, new.schema, use_dictionary=False, compression="none") as writer:
        writer.write_table(new, row_group_size=3)
        if digests == "keep":
            writer.add_key_value_metadata({DIGESTS_KEY: footer[DIGESTS_KEY]})
        elif digests == "recompute":
            recorded = {
                "rows": new.num_rows,
                "ids_sha256": hash_ids(new.column("sample_id")),
                "labels_sha256": hash_labels(new.column("label")).hexdigest(),
                "values_sha256": values_digest(
                    np.array(new.column("logits").to_pylist(), dtype=np.float32),
                    new.column("teacher_loss").to_numpy().astype(np.float32)).hexdigest(),
            }
            writer.add_key_value_metadata({DIGESTS_KEY: json.dumps(recorded)})
        else:
            assert digests == "drop", digests


def set_value(table, column, row, value):
    if column == "logits":
        flat = table.column("logits").combine_chunks().flatten().to_numpy().copy()
        flat[row * 2] = value
        array = pa.FixedSizeListArray.from_arrays(pa.array(flat), 2)
    else:
        values = table.column(column).to_pylist()
        values[row] = value
        array = pa.array(values, type=table.schema.field(column).type)
    return table.set_column(table.schema.get_field_index(column), table.schema.field(column), array)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_dump_mirrors_the_corpus_shards(corpus, reference):
    corpus_files = corpus.shard_paths("train")
    assert sorted(p.name for p in reference.iterdir()) == sorted([DUMP_MANIFEST] + [p.name for p in corpus_files])
    assert not [p for p in reference.iterdir() if p.name.startswith(".")]  # no temp files
    for corpus_file in corpus_files:
        dump_pf, corpus_pf = pq.ParquetFile(reference / corpus_file.name), pq.ParquetFile(corpus_file)
        assert dump_pf.schema_arrow.remove_metadata().equals(dump_schema(2))
        groups = lambda pf: [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
        assert groups(dump_pf) == groups(corpus_pf)
        dump = dump_pf.read()
        rows = pq.read_table(corpus_file, columns=["sample_id", "label"])
        assert dump.column("sample_id").to_pylist() == rows.column("sample_id").to_pylist()
        assert dump.column("label").to_pylist() == rows.column("label").to_pylist()
        logits = dump.column("logits").combine_chunks().flatten().to_numpy().reshape(-1, 2)
        labels = dump.column("label").to_numpy()
        np.testing.assert_allclose(dump.column("teacher_loss").to_numpy(), cross_entropy(logits, labels), rtol=1e-6)
        provenance = json.loads(dump_pf.metadata.metadata[PROVENANCE_KEY])
        assert provenance["teacher"]["weights_sha256"] == "a" * 64
        assert provenance["corpus"] == {"path": str(corpus.path.resolve()), "fingerprint": corpus.fingerprint, "split": "train"}
        assert "shards" not in provenance
        for column in range(dump_pf.metadata.num_columns):  # floats never dictionary-encoded
            encodings = dump_pf.metadata.row_group(0).column(column).encodings
            assert not any("DICT" in e for e in encodings)


def test_manifest_fields(corpus, reference):
    m = json.loads((reference / DUMP_MANIFEST).read_text())
    assert m["schema_version"] == DUMP_SCHEMA_VERSION
    assert m["teacher"] == TEACHER_A
    assert m["corpus"] == {"path": str(corpus.path.resolve()), "fingerprint": corpus.fingerprint, "split": "train"}
    assert (m["num_classes"], m["classes"], m["loss"], m["logits_temperature"]) == (2, ["neg", "pos"], "cross_entropy", 1)
    assert m["created_at"] == CREATED_AT and m["cpfd_version"]
    assert [(s["file"], s["corpus_file"], s["rows"]) for s in m["shards"]] == [
        (f"part-0000{i}.parquet", f"train/part-0000{i}.parquet", rows) for i, rows in enumerate([7, 7, 7, 2])
    ]
    assert all(s["sha256"] == file_sha256(reference / s["file"]) for s in m["shards"])
    provenance = json.loads(pq.ParquetFile(reference / "part-00000.parquet").metadata.metadata[PROVENANCE_KEY])
    assert provenance == {k: v for k, v in m.items() if k != "shards"}


def test_writer_refuses_teacher_outputs_that_do_not_fit(tmp_path, corpus):
    out = tmp_path / "dump"
    provenance = dump_provenance(corpus, "train", TEACHER_A, created_at=CREATED_AT)
    plan_dump(out, corpus, "train", TEACHER_A)

    def broken(change):
        for i, arrays in enumerate(teacher_outputs(corpus, "train", 0)):
            yield change(i, list(arrays))

    def wrong_id(i, a):
        a[0] = ["x"] + a[0][1:] if i == 1 else a[0]
        return a

    def smoothed_loss(i, a):
        a[3] = a[3] + 0.2
        return a

    def nan_logits(i, a):
        a[2] = a[2].copy()
        a[2][0, 0] = np.nan
        return a

    cases = [
        (wrong_id, "row group 1\\): sample_id of row 0 is 'x', the corpus has 'v0003'"),
        (smoothed_loss, "teacher_loss of row .* the cross-entropy of its logits is"),
        (nan_logits, "logits hold NaN or inf"),
        (lambda i, a: [a[0], a[1], a[2][:, :1], a[3]], "logits of shape \\(3, 1\\), expected \\(3, 2\\)"),
    ]
    for change, message in cases:
        with pytest.raises(CpfdError, match=message):
            write_dump_shard(out, corpus, "train", 0, broken(change), provenance)
        assert list(out.iterdir()) == []  # the temp file went with the error
    with pytest.raises(CpfdError, match="got 2 row groups, the corpus shard has 3"):
        write_dump_shard(out, corpus, "train", 0, list(teacher_outputs(corpus, "train", 0))[:2], provenance)
    assert list(out.iterdir()) == []


# --------------------------------------------------------------------------------------------
# Resumption, refusals, job arrays
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", ["after 1 shard", "after 3 shards", "temp file left", "before manifest"])
def test_rerun_after_a_crash_gives_the_same_dump(tmp_path, corpus, reference, crash):
    out = tmp_path / "dump"
    if crash == "before manifest":
        run_dump(out, corpus, stop_after=4)
        assert not (out / DUMP_MANIFEST).exists()
        assert plan_dump(out, corpus, "train", TEACHER_A) == []
    else:
        run_dump(out, corpus, stop_after=1 if crash == "after 1 shard" else 3)
        if crash == "temp file left":
            temp_path_for(out / "part-00001.parquet").write_bytes(b"PAR1 half a shard")
        assert not (out / DUMP_MANIFEST).exists()
    assert run_dump(out, corpus) is True
    assert snapshot(out) == snapshot(reference)


def test_rerun_of_a_finished_dump_does_nothing(tmp_path, corpus, reference):
    out = tmp_path / "dump"
    run_dump(out, corpus)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert plan_dump(out, corpus, "train", TEACHER_A) == []
    assert finalize_dump(out, corpus, "train", dump_provenance(corpus, "train", TEACHER_A)) is True
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_another_teachers_dump_is_refused_unless_overwrite(tmp_path, corpus, reference):
    out = tmp_path / "dump"
    run_dump(out, corpus, teacher=TEACHER_A)
    with pytest.raises(CpfdError, match="holds a finished dump of another teacher .*--overwrite"):
        plan_dump(out, corpus, "train", TEACHER_B)
    assert run_dump(out, corpus, teacher=TEACHER_B, overwrite=True, seed=1) is True
    m = json.loads((out / DUMP_MANIFEST).read_text())
    assert m["teacher"]["weights_sha256"] == "b" * 64
    for s in m["shards"]:
        stored = json.loads(pq.ParquetFile(out / s["file"]).metadata.metadata[PROVENANCE_KEY])
        assert stored["teacher"]["weights_sha256"] == "b" * 64

    # An unfinished dump (shards, no manifest) is recognised by its shards' metadata.
    unfinished = tmp_path / "unfinished"
    run_dump(unfinished, corpus, teacher=TEACHER_A, stop_after=2)
    with pytest.raises(CpfdError, match="part-00000.parquet: a shard of another teacher"):
        plan_dump(unfinished, corpus, "train", TEACHER_B)
    assert plan_dump(unfinished, corpus, "train", TEACHER_B, overwrite=True) == [0, 1, 2, 3]
    assert list(unfinished.iterdir()) == []


def test_another_corpus_or_split_is_refused_unless_overwrite(tmp_path, corpus, reference):
    other = layout_corpus(tmp_path / "other", prefix="w")
    with pytest.raises(CpfdError, match="finished dump of another corpus"):
        plan_dump(reference, other, "train", TEACHER_A)
    with pytest.raises(CpfdError, match="finished dump of another split \\(train, this one eval\\)"):
        plan_dump(reference, corpus, "eval", TEACHER_A)
    out = tmp_path / "dump"
    run_dump(out, corpus, stop_after=1)
    with pytest.raises(CpfdError, match="part-00000.parquet: a shard of another corpus"):
        plan_dump(out, other, "train", TEACHER_A)
    assert run_dump(out, other, overwrite=True) is True
    assert json.loads((out / DUMP_MANIFEST).read_text())["corpus"]["fingerprint"] == other.fingerprint


def test_a_damaged_committed_shard_is_refused_not_skipped(tmp_path, corpus):
    out = tmp_path / "dump"
    run_dump(out, corpus, stop_after=2)
    (out / "part-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(CpfdError, match="part-00001.parquet: damaged"):
        plan_dump(out, corpus, "train", TEACHER_A)


def test_job_array_workers_share_the_shards(tmp_path, corpus, reference):
    out = tmp_path / "dump"
    # A temp file of worker 1 (still writing) must survive worker 0's planning.
    out.mkdir()
    temp_path_for(out / "part-00001.parquet").write_bytes(b"being written")
    assert plan_dump(out, corpus, "train", TEACHER_A, num_shards=2, shard_index=0) == [0, 2]
    assert temp_path_for(out / "part-00001.parquet").exists()
    assert run_dump(out, corpus, num_shards=2, shard_index=0) is False
    assert not (out / DUMP_MANIFEST).exists()
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet", "part-00002.parquet"]
    assert plan_dump(out, corpus, "train", TEACHER_A, num_shards=2, shard_index=1) == [1, 3]
    assert not temp_path_for(out / "part-00001.parquet").exists()
    assert run_dump(out, corpus, num_shards=2, shard_index=1) is True
    assert snapshot(out) == snapshot(reference)
    with pytest.raises(CpfdError, match="--shard-index must be in \\[0, 2\\), got 2"):
        plan_dump(out, corpus, "train", TEACHER_A, num_shards=2, shard_index=2)


# --------------------------------------------------------------------------------------------
# Aligned reading
# --------------------------------------------------------------------------------------------


def expected_columns(corpus, split="train"):
    """unit -> (logits, loss) as the teacher handed them to the writer."""
    out = {}
    for shard in range(len(corpus.shard_paths(split))):
        for group, (_, _, logits, loss) in enumerate(teacher_outputs(corpus, split, shard)):
            out[(shard, group)] = (logits, loss)
    return out


def test_reader_yields_what_was_written_for_every_unit(corpus, reference):
    dump = open_dump(reference, corpus)
    expected = expected_columns(corpus)
    units = corpus.work_units("train")
    for unit, (logits, loss) in zip(units, dump.iter_teacher_columns()):
        assert logits.dtype == np.float32 and loss.dtype == np.float32
        np.testing.assert_array_equal(logits, expected[(unit.shard, unit.row_group)][0])
        np.testing.assert_array_equal(loss, expected[(unit.shard, unit.row_group)][1])
    dump.verify()
    assert dump.num_rows == 23


def test_units_dealt_to_three_workers_cover_each_row_once(corpus, reference):
    units = corpus.work_units("train")
    seen = np.zeros(corpus.num_rows("train"), dtype=int)
    logits_by_row = np.zeros((corpus.num_rows("train"), 2), dtype=np.float32)
    for worker in range(3):
        dump = open_dump(reference, corpus)  # each worker opens its own reader
        for unit in units[worker::3]:
            logits, _ = dump.read(unit)
            seen[unit.offset:unit.offset + unit.rows] += 1
            logits_by_row[unit.offset:unit.offset + unit.rows] = logits
    assert (seen == 1).all()
    expected = expected_columns(corpus)
    np.testing.assert_array_equal(logits_by_row, np.concatenate([expected[(u.shard, u.row_group)][0] for u in units]))


def test_extra_for_corpus_batches_is_picklable_and_aligned(corpus, reference):
    opener = pickle.loads(pickle.dumps(open_dump(reference, corpus).extra_for_corpus_batches()))
    extra = opener()
    unit = corpus.work_units("train")[4]
    columns = extra(unit)
    assert set(columns) == {"teacher_logits", "teacher_loss"}
    assert columns["teacher_logits"].shape == (unit.rows, 2) and columns["teacher_logits"].flags.writeable
    np.testing.assert_array_equal(columns["teacher_logits"], expected_columns(corpus)[(unit.shard, unit.row_group)][0])


def test_corpus_batches_carry_the_teacher_columns(corpus, reference):
    torch = pytest.importorskip("torch")
    from cpfd.pipeline.data import CorpusBatches, Inputs, make_loader

    dump = open_dump(reference, corpus)
    dataset = CorpusBatches(corpus.path, "train", Inputs(frames=False, text=False, features=True),
                            batch_size=4, extra_open=dump.extra_for_corpus_batches())
    got = {}
    for batch in make_loader(dataset, num_workers=2):
        assert batch["teacher_logits"].dtype == torch.float32
        for label, logits, loss in zip(batch["labels"], batch["teacher_logits"], batch["teacher_loss"]):
            ce = float(cross_entropy(logits.numpy()[None], np.array([int(label)]))[0])
            assert abs(ce - float(loss)) < 1e-5
            got[tuple(logits.tolist())] = got.get(tuple(logits.tolist()), 0) + 1
    expected = np.concatenate([v[0] for v in expected_columns(corpus).values()])
    assert sorted(got) == sorted(tuple(r) for r in expected.tolist()) and set(got.values()) == {1}


# ---- every mismatch is refused, in one line naming the file --------------------------------


@pytest.fixture
def dump_copy(tmp_path, corpus, reference):
    out = tmp_path / "dump"
    out.mkdir()
    for p in reference.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


def test_dump_of_another_corpus_is_refused(tmp_path, reference):
    other = layout_corpus(tmp_path / "other", prefix="w")
    raises_one_line(lambda: open_dump(reference, other), "dump of another corpus \\(fingerprint")


def test_dump_of_another_split_is_refused(corpus, reference):
    raises_one_line(lambda: open_dump(reference, corpus, split="eval"), "dump of the train split, the eval split was asked for")
    dump = open_dump(reference, corpus)
    raises_one_line(lambda: dump.read(corpus.work_units("eval")[0]), "asked for a row group of eval")


def test_missing_manifest_means_unfinished(dump_copy, corpus):
    (dump_copy / DUMP_MANIFEST).unlink()
    raises_one_line(lambda: open_dump(dump_copy, corpus), "no _manifest.json \\(not a teacher dump, or an unfinished one")


def test_missing_shard_is_refused(dump_copy, corpus):
    (dump_copy / "part-00001.parquet").unlink()
    raises_one_line(lambda: open_dump(dump_copy, corpus), "part-00001.parquet: shard listed in _manifest.json is missing")


def test_truncated_shard_is_refused(dump_copy, corpus):
    rewrite_shard(dump_copy / "part-00002.parquet", lambda t: t.slice(0, 5))
    raises_one_line(lambda: open_dump(dump_copy, corpus), "part-00002.parquet: holds 5 rows, the corpus shard has 7")
    data = (dump_copy / "part-00001.parquet").read_bytes()
    (dump_copy / "part-00001.parquet").write_bytes(data[: len(data) // 2])
    raises_one_line(lambda: open_dump(dump_copy, corpus), "part-00001.parquet: not a readable Parquet file")


def test_an_id_that_differs_is_refused_at_open(dump_copy, corpus):
    # Other rows than the corpus shard's, with the digests a writer would record for them.
    rewrite_shard(dump_copy / "part-00001.parquet", lambda t: set_value(t, "sample_id", 4, "intruder"), digests="recompute")
    raises_one_line(lambda: open_dump(dump_copy, corpus), "part-00001.parquet: its sample_ids differ from the corpus shard's \\(ids sha256")


def test_a_relabelled_corpus_is_refused_at_open_and_by_dump_teacher(tmp_path, corpus, reference, dump_copy):
    # Same ids, so the same fingerprint: only the label digests tell the dump is stale.
    relabelled = layout_corpus(tmp_path / "relabelled", relabel={9})
    assert relabelled.fingerprint == corpus.fingerprint
    stale = "part-00001.parquet: its labels differ from the corpus shard's .* relabelled after the teacher ran"
    raises_one_line(lambda: open_dump(reference, relabelled), stale)
    # dump-teacher does not call the stale dump finished, nor keep its stale shards when resuming
    raises_one_line(lambda: run_dump(dump_copy, relabelled), "holds a finished dump whose labels differ from corpus train/part-00001.parquet")
    (dump_copy / DUMP_MANIFEST).unlink()
    raises_one_line(lambda: run_dump(dump_copy, relabelled), stale + "; delete it or pass --overwrite")
    assert run_dump(dump_copy, relabelled, overwrite=True) is True
    open_dump(dump_copy, relabelled).verify()


def test_a_shard_of_another_dump_is_refused_at_open(tmp_path, corpus, dump_copy):
    other = tmp_path / "other"
    assert run_dump(other, corpus, teacher=TEACHER_B) is True
    (dump_copy / "part-00002.parquet").write_bytes((other / "part-00002.parquet").read_bytes())
    raises_one_line(lambda: open_dump(dump_copy, corpus), "part-00002.parquet: a shard of another teacher .* not of the dump _manifest.json describes")


def test_a_shard_edited_behind_cpfds_back_is_found_by_verify(dump_copy, corpus):
    # The footer still vouches for the corpus rows: opening trusts it, verify() does not.
    file = dump_copy / "part-00001.parquet"
    rewrite_shard(file, lambda t: set_value(t, "sample_id", 4, "intruder"), digests="keep")
    open_dump(dump_copy, corpus)
    raises_one_line(lambda: open_dump(dump_copy, corpus).verify(), "part-00001.parquet: sha256 differs from _manifest.json")
    # With the manifest's sha256 edited to match, the columns themselves give it away.
    manifest = json.loads((dump_copy / DUMP_MANIFEST).read_text())
    manifest["shards"][1]["sha256"] = file_sha256(file)
    (dump_copy / DUMP_MANIFEST).write_text(json.dumps(manifest))
    raises_one_line(
        lambda: open_dump(dump_copy, corpus).verify(),
        "part-00001.parquet: sample_id of row 4 is 'intruder', corpus train/part-00001.parquet has 'v0011'",
    )


def test_without_digests_ids_and_labels_are_compared_on_first_touch(dump_copy, corpus):
    # A dump written before cpfd recorded digests: the columns are compared on a shard's first read.
    rewrite_shard(dump_copy / "part-00001.parquet", lambda t: set_value(t, "sample_id", 4, "intruder"), digests="drop")
    rewrite_shard(dump_copy / "part-00000.parquet", lambda t: set_value(t, "label", 2, 1 - t.column("label")[2].as_py()), digests="drop")
    dump = open_dump(dump_copy, corpus)  # opening reads footers only
    units = corpus.work_units("train")
    dump.read(units[6])  # shard 2 is fine
    raises_one_line(lambda: dump.read(units[3]), "part-00001.parquet: sample_id of row 4 is 'intruder', corpus train/part-00001.parquet has 'v0011'")
    raises_one_line(lambda: dump.read(units[0]), "part-00000.parquet: label of row 2 is")


def test_shards_record_the_digests_of_their_corpus_shard(corpus, reference):
    manifest = json.loads((reference / DUMP_MANIFEST).read_text())
    for entry, (ids_sha256, labels_sha256) in zip(manifest["shards"], corpus.shard_digests("train")):
        pf = pq.ParquetFile(reference / entry["file"])
        footer = json.loads(pf.metadata.metadata[DIGESTS_KEY])
        rows = pf.read(columns=["sample_id", "label", "logits", "teacher_loss"])
        values = hashlib.sha256()
        for g in range(pf.num_row_groups):
            group = pf.read_row_group(g, columns=["logits", "teacher_loss"])
            values.update(np.array(group.column(0).to_pylist(), dtype="<f4").tobytes())
            values.update(group.column(1).to_numpy().astype("<f4").tobytes())
        assert footer == {
            "rows": entry["rows"],
            "ids_sha256": hash_ids(rows.column("sample_id").to_pylist()),
            "labels_sha256": hash_labels(rows.column("label").to_numpy()).hexdigest(),
            "values_sha256": values.hexdigest(),  # computed here from the stored values, by hand
        }
        assert (entry["ids_sha256"], entry["labels_sha256"]) == (footer["ids_sha256"], footer["labels_sha256"])
        assert (footer["ids_sha256"], footer["labels_sha256"]) == (ids_sha256, labels_sha256)


def with_manifest_sha256(dump_dir: Path) -> None:
    """Record the shards' current sha256 in the manifest: an edit that also updated the manifest."""
    manifest = json.loads((dump_dir / DUMP_MANIFEST).read_text())
    for entry in manifest["shards"]:
        entry["sha256"] = file_sha256(dump_dir / entry["file"])
    (dump_dir / DUMP_MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.parametrize("column, shard, message", [
    ("logits", "part-00000.parquet", "part-00000.parquet: row group 1 holds NaN or inf logits or losses"),
    ("teacher_loss", "part-00002.parquet", "part-00002.parquet: row group 0 holds NaN or inf logits or losses"),
])
def test_nan_logits_and_inf_loss_are_refused_by_verify(dump_copy, corpus, column, shard, message):
    # verify() proves every value finite once (distill runs it before training); streaming checks
    # each row it reads again (test_a_shard_damaged_after_commit_...)
    row = 4 if column == "logits" else 0
    rewrite_shard(dump_copy / shard, lambda t: set_value(t, column, row, float("nan" if column == "logits" else "inf")))
    with_manifest_sha256(dump_copy)
    dump = open_dump(dump_copy, corpus)
    raises_one_line(dump.verify, message)


def test_describe_dump(corpus, reference):
    d = describe_dump(reference)
    labels = corpus.read_column("train", "label").to_numpy()
    assert d["kind"] == "dump" and d["rows"] == 23 and d["shards"] == 4 and d["split"] == "train"
    assert d["label_counts"] == {"neg": int((labels == 0).sum()), "pos": int((labels == 1).sum())}
    assert d["teacher"]["weights_sha256"] == "a" * 64 and d["corpus"]["fingerprint"] == corpus.fingerprint
    assert d["schema_version"] == DUMP_SCHEMA_VERSION and d["classes"] == ["neg", "pos"]


# ---- a shard damaged on disk after its writer committed it ------------------------------------

def flip_bytes_in_logits(file: Path, row_group: int = 0) -> None:
    """Flip two bytes in the middle of a row group's logits values (stored uncompressed), in place:
    what a bad disk or a stray write does to a committed file."""
    md = pq.ParquetFile(file).metadata
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    chunk = md.row_group(row_group).column(names.index("logits.list.element"))
    middle = chunk.data_page_offset + chunk.total_compressed_size // 2
    data = bytearray(file.read_bytes())
    data[middle] ^= 0x5A
    data[middle + 1] ^= 0xA5
    file.write_bytes(bytes(data))


def test_whoever_finishes_the_dump_reads_committed_shards_back(corpus, tmp_path):
    out = tmp_path / "dump"
    assert run_dump(out, corpus, num_shards=2, shard_index=0) is False  # commits shards 0 and 2
    flip_bytes_in_logits(out / "part-00000.parquet")
    # the worker of the last shard, finishing the dump, finds it damaged
    raises_one_line(lambda: run_dump(out, corpus, num_shards=2, shard_index=1), r"part-00000\.parquet: .*delete it and rerun")
    assert not (out / DUMP_MANIFEST).exists()


def test_a_shard_damaged_after_the_manifest_fails_its_page_checksum_as_it_is_read(corpus, dump_copy):
    flip_bytes_in_logits(dump_copy / "part-00001.parquet")
    with_manifest_sha256(dump_copy)  # the manifest hashed the damaged file: only reading it can tell
    dump = open_dump(dump_copy, corpus)
    unit = [u for u in corpus.work_units("train") if u.shard == 1][0]
    with pytest.raises(CpfdError, match=r"part-00001\.parquet: cannot read row group 0 \(.*checksum") as info:
        dump.read(unit)
    assert "\n" not in str(info.value)
    raises_one_line(dump.verify, "part-00001.parquet: cannot read row group 0")


def test_a_loss_that_is_not_the_cross_entropy_of_its_logits_is_refused_as_it_is_read(corpus, dump_copy):
    # A file without page checksums (not written by cpfd's writer) whose loss is off by 0.15, the
    # size of the difference --verify found in the damaged shard of the report.
    def off(table):
        loss = table.column("teacher_loss").to_numpy().copy()
        loss[1] += 0.15
        return table.set_column(table.column_names.index("teacher_loss"), table.schema.field("teacher_loss"),
                                pa.array(loss, pa.float32()))

    rewrite_shard(dump_copy / "part-00002.parquet", off, digests="recompute")
    with_manifest_sha256(dump_copy)
    dump = open_dump(dump_copy, corpus)
    unit = [u for u in corpus.work_units("train") if u.shard == 2][0]
    raises_one_line(lambda: dump.read(unit),
                    r"part-00002\.parquet: row group 0, row 1: teacher_loss .* is not the cross-entropy of its logits")
    assert TeacherDump(dump_copy, corpus, check_reads=False).read(unit)[1][1] == pytest.approx(
        pq.read_table(dump_copy / "part-00002.parquet").column("teacher_loss")[1].as_py())  # the switch is real
