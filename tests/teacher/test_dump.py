"""teacher/dump.py: `cpfd dump-teacher` end to end through the CLI, the offline stage of docs/method.md
and docs/formats.md ("Teacher dump").

The session's teacher, trained on a corpus of three train shards (40 + 40 + 20 rows, row groups of
at most 16), and its dump in batches of 8 (tests/conftest.py) are what every test reads or
re-dumps from (a re-dump into that dump works on a copy). The storage-level checks of the writer
and reader are in tests/storage/test_dump.py; here the command is checked as a user runs it: what
lands on disk, that it is what the teacher computes, crashes, job arrays and refusals.

The last part, `--num-workers N`, has a corpus of its own: DataLoader workers read and collate the
row groups, the teacher runs in the main process, and the dump is the same file for file whatever
N. That corpus has an odd number of train row groups of uneven sizes (8, 8, 8, 6 | 8, 8, 8, 6 | 2)
and the batch size cuts them unevenly, so two workers get different numbers of units and pieces,
and the main process has to put the units back in order. Each dump's `created_at` is fixed, so
that two dumps of the same rows are byte-identical files.
"""

import functools
import hashlib
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cpfd.pipeline.data import Inputs, collate, fold_of
from cpfd.teacher import dump as dump_module
from cpfd.teacher.dump import RECOMPUTE_TOLERANCE, CollatedUnits, TeacherScorer, recompute_tolerance, verify_note
from cpfd.teacher.models import load_model
from cpfd.pipeline.train import autocast, resolve_device
from cpfd.storage.atomic import temp_path_for
from cpfd.storage.corpus import Corpus, CorpusWriter
from cpfd.storage.dump import dump_provenance
from cpfd.storage.schema import CORPUS_COLUMNS
from tests.factories import CREATED_AT, tiny_corpus
from tests.invoke import FAST, ok, refused, run


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_tables(dump_dir) -> dict:
    """{file name: table} of a dump's Parquet shards."""
    return {p.name: pq.read_table(p) for p in sorted(dump_dir.glob("*.parquet"))}


# Where --device auto runs the teacher: float32 on the CPU, bf16 autocast on a GPU.
TOLERANCE = recompute_tolerance("bf16 autocast" if torch.cuda.is_available() else "float32")


def assert_same_rows(have_dir, want_dir, tolerance=TOLERANCE) -> None:
    """Two dumps of one teacher and corpus whose rows were computed in different calls: the same
    shards, rows in the same order with the same ids and labels, and logits and losses equal within
    the stated tolerance. Not bit for bit: BLAS kernels (MKL on AVX-512) differ in the last bits
    from call to call (docs/method.md, "What repeats exactly")."""
    have, want = shard_tables(have_dir), shard_tables(want_dir)
    assert have.keys() == want.keys()
    for name in want:
        a, b = have[name], want[name]
        assert a.column("sample_id").equals(b.column("sample_id")), name
        assert a.column("label").equals(b.column("label")), name
        for column in ("logits", "teacher_loss"):
            x = np.array(a.column(column).to_pylist(), dtype=np.float64)
            y = np.array(b.column(column).to_pylist(), dtype=np.float64)
            assert x.shape == y.shape and np.abs(x - y).max() <= tolerance, (name, column, np.abs(x - y).max())


def test_the_corpus_has_several_shards_and_row_groups(corpus):
    assert corpus.shard_rows("train") == [40, 40, 20]
    assert corpus.row_groups("train") == [[16, 16, 8], [16, 16, 8], [16, 4]]


def test_dump_mirrors_the_corpus_shards(corpus, dump):
    corpus_files = corpus.shard_paths("train")
    assert sorted(p.name for p in dump.iterdir()) == ["_manifest.json", *(f.name for f in corpus_files)]
    for corpus_file in corpus_files:
        file = dump / corpus_file.name
        md, corpus_md = pq.ParquetFile(file).metadata, pq.ParquetFile(corpus_file).metadata
        assert md.num_rows == corpus_md.num_rows
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == \
               [corpus_md.row_group(i).num_rows for i in range(corpus_md.num_row_groups)]
        table = pq.read_table(file)
        types = {f.name: f.type for f in table.schema}
        assert list(types) == ["sample_id", "label", "logits", "teacher_loss"]
        assert (types["sample_id"], types["label"], types["teacher_loss"]) == (pa.string(), pa.int32(), pa.float32())
        assert pa.types.is_fixed_size_list(types["logits"]) and types["logits"].list_size == 2
        assert types["logits"].value_type == pa.float32()
        corpus_rows = pq.read_table(corpus_file, columns=["sample_id", "label"])
        assert table.column("sample_id").equals(corpus_rows.column("sample_id"))
        assert table.column("label").equals(corpus_rows.column("label"))


def test_manifest_names_teacher_corpus_split_and_every_shard(corpus, teacher, dump):
    manifest = json.loads((dump / "_manifest.json").read_text())
    assert manifest["teacher"]["weights_sha256"] == sha256(teacher / "model.safetensors")
    assert manifest["teacher"]["config"]["architecture"] == "DF-X-VLM"
    assert manifest["corpus"]["fingerprint"] == corpus.fingerprint
    assert manifest["corpus"]["split"] == "train"
    assert manifest["num_classes"] == 2 and manifest["classes"] == ["neg", "pos"]
    assert manifest["loss"] == "cross_entropy" and manifest["logits_temperature"] == 1
    assert [(s["file"], s["corpus_file"], s["rows"]) for s in manifest["shards"]] == \
           [(f.name, f"train/{f.name}", n) for f, n in zip(corpus.shard_paths("train"), corpus.shard_rows("train"))]
    for shard in manifest["shards"]:
        assert shard["sha256"] == sha256(dump / shard["file"])
        # each shard carries the provenance too, so it can be matched before the manifest exists
        stored = json.loads(pq.ParquetFile(dump / shard["file"]).schema_arrow.metadata[b"cpfd.dump"])
        assert stored["teacher"]["weights_sha256"] == manifest["teacher"]["weights_sha256"]
        assert stored["corpus"] == manifest["corpus"]


def test_teacher_loss_is_the_cross_entropy_of_the_stored_logits(dump):
    for table in shard_tables(dump).values():
        logits = np.array(table.column("logits").to_pylist(), dtype=np.float64)
        labels = table.column("label").to_numpy()
        log_softmax = logits - logits.max(1, keepdims=True)
        log_softmax -= np.log(np.exp(log_softmax).sum(1, keepdims=True))
        expected = -log_softmax[np.arange(len(labels)), labels]
        assert table.column("teacher_loss").to_numpy() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_logits_are_what_the_teacher_model_gives(corpus, teacher, dump):
    # The model run by hand on each row group, in the dump's batches of 8, where --device auto runs
    # it (CPU float32 here; CUDA with bf16 autocast on a GPU machine, where the batches matter).
    device = resolve_device("auto")
    model, tokenizer = load_model(teacher)
    model.to(device).eval()
    inputs = Inputs.for_corpus(corpus, privileged=True)
    widths = {"features": len(corpus.features), "privileged": len(corpus.privileged_features)}
    for shard, corpus_file in enumerate(corpus.shard_paths("train")):
        expected = []
        for unit in (u for u in corpus.work_units("train") if u.shard == shard):
            rows = corpus.read_unit(unit, inputs.columns())
            for start in range(0, rows.num_rows, 8):
                batch = collate(rows.slice(start, 8), inputs, tokenizer, model.config.max_length, widths)
                with torch.no_grad(), autocast(device):
                    expected.append(model({k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
        stored = np.array(pq.read_table(dump / corpus_file.name).column("logits").to_pylist(), dtype=np.float32)
        assert np.abs(stored - np.concatenate(expected)).max() < 1e-5


def test_each_shard_records_how_its_logits_were_computed(dump):
    device = resolve_device("auto")
    manifest = json.loads((dump / "_manifest.json").read_text())
    for entry in manifest["shards"]:
        footer = json.loads(pq.ParquetFile(dump / entry["file"]).metadata.metadata[b"cpfd.shard"])
        assert footer["computed"] == entry["computed"]
        assert footer["computed"]["batch_size"] == 8 and footer["computed"]["device"] == device.type
        assert footer["computed"]["precision"] == ("bf16 autocast" if device.type == "cuda" else "float32")


def test_verify_says_when_the_dump_was_computed_elsewhere():
    cpu = {"device": "cpu", "device_name": "x86_64", "precision": "float32", "batch_size": 256}
    gpu = {"device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "precision": "bf16 autocast", "batch_size": 64}
    assert verify_note([cpu], dict(cpu, batch_size=8)) is None  # the batch size alone changes nothing
    assert verify_note([gpu], gpu) is None
    note = verify_note([gpu], cpu)
    assert note.startswith("the dump was computed on cuda (NVIDIA H100 80GB HBM3, bf16 autocast), this check on cpu")
    assert note.endswith("differences of bf16 size (about 1e-2) are expected")
    assert "bf16" not in verify_note([dict(cpu, device_name="aarch64")], cpu)
    assert "older cpfd" in verify_note([{}, cpu], cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_verify_on_cuda_recomputes_the_dumps_own_batches(corpus, teacher, tmp_path):
    # Under bf16 autocast a row's logits depend on its batch; --verify reruns the dump's batches.
    out = tmp_path / "dump"
    result = ok("dump-teacher", teacher, corpus.path, "--out", out, "--batch-size", "8", "--device", "cuda",
                "--verify", "20", "--quiet")
    verified(result.output, 20, RECOMPUTE_TOLERANCE["bf16 autocast"])
    assert "note:" not in result.output
    result = ok("dump-teacher", teacher, corpus.path, "--out", out, "--device", "cpu", "--verify", "20", "--quiet")
    assert "note: the dump was computed on cuda" in result.output and "bf16 size" in result.output


def verified(output: str, rows: int, tolerance=TOLERANCE) -> None:
    """`--verify` printed that `rows` recomputed rows are within `tolerance` of the stored ones."""
    found = re.search(r"verified (\d+) rows: max \|logits diff\| (\S+), max \|loss diff\| (\S+) \(within (\S+)\)", output)
    assert found, output
    assert int(found[1]) == rows and float(found[4]) == tolerance
    assert float(found[2]) <= tolerance and float(found[3]) <= tolerance


def test_verify_recomputes_the_teacher_and_finds_no_difference(corpus, teacher, dump, tmp_path):
    shutil.copytree(dump, tmp_path / "dump")  # the shared dump stays read-only
    result = ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "dump", "--verify", "20", "--quiet")
    # the dump is finished: the rerun writes nothing, then checks 20 random rows
    assert "dumped 0 rows in 0 shard(s)" in result.output and "(complete)" in result.output
    verified(result.output, 20)


def last_bits_off(real_forward, ulps: int):
    """TeacherScorer.forward as another CPU computes it: each value `ulps` float32 steps away."""

    def forward(self, piece):
        out = real_forward(self, piece)
        for _ in range(ulps):
            out = torch.nextafter(out, torch.tensor(float("inf")))
        return out

    return forward


def test_recomputation_that_differs_in_the_last_bits_is_within_the_promise(corpus, teacher, dump, tmp_path,
                                                                          monkeypatch):
    # What an AVX-512 CPU does to a rerun: the kept shard stays byte for byte, the recomputed rows
    # differ from an uninterrupted dump in the last bits, within the stated tolerance, and --verify
    # accepts them; a difference above the tolerance is an error.
    out = tmp_path / "dump"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "3", "--shard-index", "0", "--quiet")
    kept = sha256(out / "part-00000.parquet")
    real = TeacherScorer.forward
    monkeypatch.setattr(TeacherScorer, "forward", last_bits_off(real, 3))
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
    assert sha256(out / "part-00000.parquet") == kept
    assert not shard_tables(out)["part-00001.parquet"].equals(shard_tables(dump)["part-00001.parquet"])
    assert_same_rows(out, dump)
    verified(ok("dump-teacher", teacher, corpus.path, "--out", out, "--verify", "30", "--quiet").output, 30)

    def far_off(self, piece):
        return real(self, piece) + 10 * RECOMPUTE_TOLERANCE["bf16 autocast"]

    monkeypatch.setattr(TeacherScorer, "forward", far_off)
    result = run("dump-teacher", teacher, corpus.path, "--out", out, "--verify", "30", "--quiet")
    last = result.output.splitlines()[-1]
    assert result.exit_code == 1 and last.startswith("error: ") and "the dump does not hold what teacher" in last


def test_a_crash_mid_dump_is_finished_by_a_rerun(corpus, teacher, dump, tmp_path, monkeypatch):
    calls = {"n": 0}
    real_forward = TeacherScorer.forward

    def crash_on_fifth_row_group(self, piece):  # one forward a row group; 1-3 are shard 0: dies inside shard 1
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("simulated crash")
        return real_forward(self, piece)

    out = tmp_path / "dump"
    monkeypatch.setattr(TeacherScorer, "forward", crash_on_fifth_row_group)
    result = run("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
    monkeypatch.setattr(TeacherScorer, "forward", real_forward)
    assert result.exit_code != 0 and calls["n"] == 5
    assert not (out / "_manifest.json").exists()
    assert sorted(p.name for p in out.glob("*.parquet")) == ["part-00000.parquet"]
    committed = (out / "part-00000.parquet").stat()
    kept = sha256(out / "part-00000.parquet")
    # what a kill -9 in the middle of shard 1 would leave behind
    stale = temp_path_for(out / "part-00001.parquet")
    stale.write_bytes(b"half a parquet file")

    result = ok("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
    assert "dumped 60 rows in 2 shard(s)" in result.output and "(complete)" in result.output
    assert not stale.exists()
    assert (out / "part-00000.parquet").stat().st_mtime_ns == committed.st_mtime_ns  # kept, not redone
    assert sha256(out / "part-00000.parquet") == kept  # byte for byte
    assert_same_rows(out, dump)  # the rerun's rows, recomputed
    assert json.loads((out / "_manifest.json").read_text())["shards"][0]["sha256"] == sha256(out / "part-00000.parquet")


def test_job_array_workers_share_the_shards(corpus, teacher, dump, tmp_path):
    out = tmp_path / "dump"
    worker = ["dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "2", "--quiet", "--shard-index"]
    result = ok(*worker, "0")  # corpus shards 0 and 2
    assert "dumped 60 rows in 2 shard(s)" in result.output and "waiting for the other shard workers" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00002.parquet"]
    result = ok(*worker, "1")  # corpus shard 1, and then the manifest
    assert "dumped 40 rows in 1 shard(s)" in result.output and "(complete)" in result.output
    assert (out / "_manifest.json").exists()
    assert_same_rows(out, dump)
    manifest = json.loads((out / "_manifest.json").read_text())
    assert [(s["file"], s["rows"]) for s in manifest["shards"]] == \
           [(s["file"], s["rows"]) for s in json.loads((dump / "_manifest.json").read_text())["shards"]]


def test_job_array_options_go_together(corpus, teacher, tmp_path):
    out = tmp_path / "dump"
    for args in (["--num-shards", "2"], ["--shard-index", "0"]):
        result = run("dump-teacher", teacher, corpus.path, "--out", out, *args, "--quiet")
        assert result.exit_code in (1, 2) and "--num-shards and --shard-index go together" in result.output
    refused("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "2", "--shard-index", "2", "--quiet",
            message="--shard-index must be in [0, 2)")
    assert not out.exists()


def test_verify_needs_a_complete_dump(corpus, teacher, tmp_path):
    out = tmp_path / "dump"
    result = run("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "3", "--shard-index", "2",
                 "--verify", "5", "--quiet")
    assert result.exit_code == 1 and "error: " in result.output and "--verify needs a complete dump" in result.output
    assert (out / "part-00002.parquet").exists() and not (out / "_manifest.json").exists()


def test_a_student_is_refused_as_teacher(corpus, tmp_path):
    student = tmp_path / "student"
    ok("train-student", corpus.path, "--out", student, *FAST, "--max-steps", "1")
    refused("dump-teacher", student, corpus.path, "--out", tmp_path / "dump", "--quiet",
            message="is a X-VLM, dump-teacher needs a teacher")
    assert not (tmp_path / "dump").exists()


def test_another_teachers_dump_is_refused_unless_overwrite(corpus, teacher, dump, tmp_path):
    other = tmp_path / "other-teacher"
    ok("train-teacher", corpus.path, "--out", other, *FAST, "--seed", "1")
    assert sha256(other / "model.safetensors") != sha256(teacher / "model.safetensors")
    out = tmp_path / "dump"
    shutil.copytree(dump, out)
    before = shard_tables(out)
    refused("dump-teacher", other, corpus.path, "--out", out, "--quiet", message="another teacher")
    assert "--overwrite" in run("dump-teacher", other, corpus.path, "--out", out, "--quiet").output
    assert shard_tables(out).keys() == before.keys() and (out / "_manifest.json").exists()

    # an unfinished dump of the first teacher: its committed shards are not silently mixed in either
    (out / "_manifest.json").unlink()
    refused("dump-teacher", other, corpus.path, "--out", out, "--quiet", message="another teacher")

    ok("dump-teacher", other, corpus.path, "--out", out, "--overwrite", "--quiet")
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["teacher"]["weights_sha256"] == sha256(other / "model.safetensors")
    after = shard_tables(out)
    assert after.keys() == before.keys()
    assert not any(after[name].column("logits").equals(before[name].column("logits")) for name in after)


def test_a_teacher_of_another_corpus_is_refused(teacher, tmp_path):
    other = tiny_corpus(tmp_path / "other", n_train=20, n_eval=8, classes=("ok", "violating"))
    refused("dump-teacher", teacher, other.path, "--out", tmp_path / "dump", "--quiet", message="does not fit corpus")
    assert not (tmp_path / "dump").exists()


def test_torchrun_ranks_split_the_shards_with_no_flags(corpus, teacher, dump, tmp_path, monkeypatch):
    out = tmp_path / "dump"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, files in (("0", ["part-00000.parquet", "part-00002.parquet"]), ("1", None)):
        monkeypatch.setenv("RANK", rank)
        ok("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
        if files:
            assert sorted(p.name for p in out.iterdir()) == files
    assert (out / "_manifest.json").exists()
    assert_same_rows(out, dump)


def test_verify_reruns_the_dumps_own_batches_when_both_sides_are_bf16(corpus, teacher, tmp_path, monkeypatch):
    # The CUDA path's batch bookkeeping, on the CPU: both runs claim bf16 autocast, so --verify must
    # recompute whole dump batches (8 rows from the start of each row group of at most 16).
    real = TeacherScorer.computed_with
    monkeypatch.setattr(TeacherScorer, "computed_with", lambda self: dict(real(self), precision="bf16 autocast"))
    out = tmp_path / "dump"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--batch-size", "8", "--quiet")
    calls = []
    real_logits = TeacherScorer.logits

    def spy(self, table, batch_size=None):
        calls.append((table.num_rows, batch_size))
        return real_logits(self, table, batch_size)

    monkeypatch.setattr(TeacherScorer, "logits", spy)
    result = ok("dump-teacher", teacher, corpus.path, "--out", out, "--verify", "20", "--quiet")
    verified(result.output, 20, RECOMPUTE_TOLERANCE["bf16 autocast"])
    assert "note:" not in result.output
    # row groups of 16, 16, 8 rows (shards of 40) and 16, 4 (the shard of 20): dump batches of 8 or 4 rows
    assert calls and {size for _, size in calls} == {8} and {rows for rows, _ in calls} <= {8, 4}, calls


# ---- --num-workers: the same dump whatever the number of DataLoader workers ----------------------

BATCH = "5"  # row groups of 8, 6 and 2 rows: pieces of 5 + 3, 5 + 1 and 2


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """Train row groups 8, 8, 8, 6 | 8, 8, 8, 6 | 2: an odd number, of uneven sizes."""
    return tiny_corpus(tmp_path_factory.mktemp("c") / "corpus", n_train=62, n_eval=20, rows_per_shard=30,
                       row_group_rows=8)


@pytest.fixture(scope="module")
def uneven_teacher(uneven, tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "teacher"
    ok("train-teacher", uneven.path, "--out", out, *FAST)
    return out


@pytest.fixture(scope="module")
def cross_fitted_teacher(uneven, tmp_path_factory):
    out = tmp_path_factory.mktemp("x") / "teacher"
    ok("train-teacher", uneven.path, "--out", out, "--folds", "2", *FAST)
    return out


@pytest.fixture
def fixed_time(monkeypatch):
    monkeypatch.setattr(dump_module, "dump_provenance", functools.partial(dump_provenance, created_at=CREATED_AT))


def files(folder) -> dict:
    """{name: sha256} of every file of a dump folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def dumps(teacher, corpus, root, split, workers) -> dict:
    """{workers: the files of the dump made with that many DataLoader workers}."""
    out = {}
    for n in workers:
        ok("dump-teacher", teacher, corpus.path, "--out", root / f"{split}-{n}", "--split", split,
           "--batch-size", BATCH, "--num-workers", n, "--quiet")
        out[n] = files(root / f"{split}-{n}")
    return out


def test_the_units_do_not_divide_evenly_among_the_workers(uneven):
    assert uneven.row_groups("train") == [[8, 8, 8, 6], [8, 8, 8, 6], [2]]
    units = uneven.work_units("train")
    assert len(units[0::2]) != len(units[1::2])


def test_a_dump_is_the_same_file_for_file_with_0_1_or_2_workers(uneven, uneven_teacher, tmp_path, fixed_time):
    made = dumps(uneven_teacher, uneven, tmp_path, "train", (0, 1, 2))
    assert made[0].keys() == {"_manifest.json", *(p.name for p in uneven.shard_paths("train"))}
    assert made[1] == made[0] and made[2] == made[0]
    # and the rows are the corpus rows, in order, in its row groups
    for shard, groups in zip(uneven.shard_paths("train"), uneven.row_groups("train")):
        dumped = tmp_path / "train-2" / shard.name
        ids = pq.read_table(dumped, columns=["sample_id"]).column(0)
        assert ids.equals(pq.read_table(shard, columns=["sample_id"]).column(0))
        meta = pq.ParquetFile(dumped).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == groups


@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_cross_fitted_dump_is_the_same_with_workers(uneven, cross_fitted_teacher, tmp_path, fixed_time, split):
    # train rows go to the teacher of their fold (each with its own tokenizer), eval rows to all of them
    made = dumps(cross_fitted_teacher, uneven, tmp_path, split, (0, 2))
    assert made[2] == made[0]
    folds = pq.read_table(tmp_path / f"{split}-2" / uneven.shard_paths(split)[0].name).column("fold").to_pylist()
    assert set(folds) == ({0, 1} if split == "train" else {-1})


def test_the_workers_collate_what_the_scorer_collates(uneven, cross_fitted_teacher):
    # the pieces a worker hands over are the batches TeacherScorer.logits runs, model by model
    scorer = TeacherScorer(cross_fitted_teacher, uneven, "cpu", 5)
    columns = ["sample_id", *scorer.inputs.columns()]
    units = uneven.work_units("train")
    pieces = list(CollatedUnits(uneven, units, columns, scorer.collator, 5))
    assert {p.piece.model for p in pieces} == {0, 1}
    for index, unit in enumerate(units):
        mine = [p for p in pieces if p.unit == index]
        table = Corpus(uneven.path).read_unit(unit, columns)
        assert len(mine) == mine[0].pieces and mine[0].labels.tolist() == table.column("label").to_pylist()
        assert {p.piece.model for p in mine} == set(fold_of(table.column("sample_id"), 2).tolist())
        logits = scorer.collator.combine(mine[0].ids, [(p.piece.model, scorer.forward(p.piece).numpy()) for p in mine])
        assert (logits == scorer.logits(table)).all()


def copy_with_a_damaged_frame(corpus: Corpus, out, damaged_id: str) -> Corpus:
    """The same corpus (rows, shards, row groups), one video's first frame replaced by bytes that are no image."""
    with CorpusWriter(out, task="tiny", classes=corpus.classes, frames_per_video=corpus.frames_per_video,
                      image_size=corpus.image_size, has_text=corpus.has_text,
                      privileged_features=corpus.privileged_features, features=corpus.features,
                      rows_per_shard=30, row_group_rows=8) as writer:
        for split in ("train", "eval"):
            for table in corpus.iter_batches(split, list(CORPUS_COLUMNS)):
                for row in table.to_pylist():
                    if row["sample_id"] == damaged_id:
                        row["frames"] = [b"not an image", *row["frames"][1:]]
                    writer.add(split, row)
    return Corpus(out)


def test_a_damaged_frame_read_by_a_worker_is_one_error_line(uneven, uneven_teacher, tmp_path):
    damaged = copy_with_a_damaged_frame(uneven, tmp_path / "corpus", "train-0045")  # shard 1, row group 1
    assert damaged.row_groups("train") == uneven.row_groups("train")
    result = refused("dump-teacher", uneven_teacher, damaged.path, "--out", tmp_path / "dump", "--num-workers", "2",
                     "--batch-size", BATCH, "--quiet", message="frame 0 is not a readable image")
    line = result.stderr.splitlines()[-1]
    assert str(damaged.shard_paths("train")[1]) in line and "(row group 1)" in line
    assert not (tmp_path / "dump" / "_manifest.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_on_cuda_the_workers_hand_over_pinned_batches(uneven, uneven_teacher, tmp_path):
    from cpfd.pipeline.data import make_loader

    scorer = TeacherScorer(uneven_teacher, uneven, "cuda", 5)
    columns = ["sample_id", *scorer.inputs.columns()]
    dataset = CollatedUnits(uneven, uneven.work_units("train"), columns, scorer.collator, 5)
    item = next(iter(make_loader(dataset, 2, pin_memory=True)))
    assert all(t.is_pinned() for t in item.piece.batch.values())
    ok("dump-teacher", uneven_teacher, uneven.path, "--out", tmp_path / "d", "--num-workers", "2", "--device", "cuda",
       "--quiet")


def test_fit_gap_is_the_mean_loss_on_the_teachers_training_and_validation_rows(dump):
    from cpfd.pipeline.data import training_rows
    from cpfd.storage.dump import read_dump_columns

    table = read_dump_columns(dump, ["sample_id", "teacher_loss"])
    trained = training_rows(0.1).mask(table.column("sample_id"))
    losses = table.column("teacher_loss").to_numpy()
    gap = dump_module.fit_gap(dump, 0.1)
    assert gap["training_rows"] == trained.sum() and gap["validation_rows"] == (~trained).sum() > 0
    assert gap["training"] == pytest.approx(losses[trained].mean(), rel=1e-6)
    assert gap["validation"] == pytest.approx(losses[~trained].mean(), rel=1e-6)
    assert dump_module.fit_gap(dump, 0.0) is None  # no validation rows: nothing to compare


def test_a_teacher_that_memorised_its_rows_is_flagged_with_what_to_do():
    line = dump_module.overfit_warning({"training": 0.005, "validation": 0.41, "training_rows": 180, "validation_rows": 20})
    assert "fits the rows it trained on far better than its validation rows" in line and "82x" in line
    assert "train-teacher --folds K" in line and "--temperature" in line
    assert dump_module.overfit_warning({"training": 0.3, "validation": 0.45, "training_rows": 9, "validation_rows": 1}) is None
    assert dump_module.overfit_warning(None) is None


def test_dump_teacher_says_so_when_the_teacher_memorised(corpus, teacher, tmp_path, monkeypatch):
    from tests.invoke import run

    monkeypatch.setattr(dump_module, "OVERFIT_RATIO", 0.0)  # any gap is one: the warning's wiring
    result = run("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"warning: {tmp_path / 'd'}: the teacher fits the rows it trained on far better" in result.stderr
    eval_split = run("dump-teacher", teacher, corpus.path, "--out", tmp_path / "e", "--split", "eval", "--quiet")
    assert "fits the rows it trained on" not in eval_split.stderr  # no training rows there
    shown = run("inspect", tmp_path / "d")  # inspect says it too, from the teacher's own --val-fraction
    assert shown.exit_code == 0 and "warning: the teacher fits the rows it trained on far better" in shown.stdout
    assert "fits the rows" not in run("inspect", tmp_path / "e").stdout
