"""`cpfd dump-teacher` end to end through the CLI: the offline stage of docs/method.md and docs/formats.md ("Teacher dump").

A tiny teacher is trained once on a corpus of three train shards (40 + 40 + 20 rows, row groups of
at most 16), dumped once, and every test reads or re-dumps from there. The storage-level checks of
the writer and reader are in tests/test_dump.py; here the command is checked as a user runs it:
what lands on disk, that it is what the teacher computes, crashes, job arrays and refusals.
"""

import hashlib
import json
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from cpfd.pipeline.data import Inputs, collate
from cpfd.teacher.dump import RECOMPUTE_TOLERANCE, TeacherScorer, recompute_tolerance, verify_note
from cpfd.teacher.models import load_model
from cpfd.pipeline.train import autocast, resolve_device
from cpfd.storage.atomic import temp_path_for
from tests.factories import tiny_corpus
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


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("c") / "corpus", n_train=100, n_eval=24,
                       rows_per_shard=40, row_group_rows=16)


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "teacher"
    ok("train-teacher", corpus.path, "--out", out, *FAST)
    return out


@pytest.fixture(scope="module")
def dump(teacher, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "dump"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--batch-size", "8", "--quiet")
    return out


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


def test_verify_recomputes_the_teacher_and_finds_no_difference(corpus, teacher, dump):
    result = ok("dump-teacher", teacher, corpus.path, "--out", dump, "--verify", "20", "--quiet")
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
