"""Faults of issue 12, across commands: an --overwrite that fails, two writers on one output, a resume
that must not trust what it keeps, and two corpora whose ids once hashed alike.

`corpus` and `teacher` are the session's (tests/conftest.py); every output is written under the
test's own tmp_path.
"""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cpfd.teacher.dump import TeacherScorer
from cpfd.storage.corpus import CorpusWriter, hash_ids
from cpfd.storage.outputs import exclusive
from tests.invoke import FAST, ok, refused, run


def snapshot(root) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def crash_at_step(monkeypatch, n: int):
    real = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return lambda: monkeypatch.setattr(torch.optim.AdamW, "step", real)


# ---- --overwrite keeps the old result until the new one is complete -------------------------

def test_an_overwrite_that_fails_keeps_the_old_model_and_resumes(corpus, tmp_path, monkeypatch):
    out = tmp_path / "s"
    ok("train-student", corpus.path, "--out", out, *FAST, "--seed", "1")
    before = snapshot(out)
    restore = crash_at_step(monkeypatch, 3)
    assert run("train-student", corpus.path, "--out", out, *FAST, "--overwrite", "--checkpoint-every", "1").exit_code != 0
    restore()
    assert snapshot(out) == before  # the old model, byte for byte
    assert (tmp_path / ".s.cpfd-new" / "checkpoint.safetensors").exists()  # the interrupted replacement
    ok("train-student", corpus.path, "--out", out, *FAST, "--overwrite", "--checkpoint-every", "1", "--resume")
    assert snapshot(out) != before and not (tmp_path / ".s.cpfd-new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no staging, no lock file left


def test_an_overwrite_of_a_dump_that_fails_keeps_the_old_dump(corpus, teacher, tmp_path, monkeypatch):
    out = tmp_path / "d"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
    before = snapshot(out)
    real = TeacherScorer.forward
    calls = {"n": 0}

    def crash_in_shard_2(self, piece):  # one forward a row group; 1-3 are the first shard's
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("simulated crash")
        return real(self, piece)

    monkeypatch.setattr(TeacherScorer, "forward", crash_in_shard_2)
    assert run("dump-teacher", teacher, corpus.path, "--out", out, "--overwrite", "--quiet").exit_code != 0
    monkeypatch.setattr(TeacherScorer, "forward", real)
    assert snapshot(out) == before
    inode = out.stat().st_ino
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--overwrite", "--quiet")
    assert out.stat().st_ino != inode  # the staged dump swapped in whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_an_import_overwrite_that_fails_while_writing_keeps_the_old_corpus(tmp_path):
    from PIL import Image

    frames = tmp_path / "frames"
    frames.mkdir()
    lines = []
    for i in range(6):
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(frames / f"{i}.png")
        lines.append(json.dumps({"id": f"v{i}", "frames": [f"frames/{i}.png"], "label": i % 2}))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "corpus"
    ok("import", manifest, out, "--quiet")
    before = snapshot(out)
    data = (frames / "4.png").read_bytes()
    (frames / "4.png").write_bytes(data[:40])  # its header reads, its pixels do not
    refused("import", manifest, out, "--overwrite", "--quiet", message="4.png")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus", "frames", "m.jsonl"]


# ---- two writers on one output ---------------------------------------------------------------

def test_a_second_writer_of_a_model_folder_is_refused(corpus, tmp_path):
    out = tmp_path / "s"
    with exclusive(out):  # what a running train-student holds
        refused("train-student", corpus.path, "--out", out, *FAST, message="another cpfd process")
    assert not out.exists()
    ok("train-student", corpus.path, "--out", out, *FAST)


def test_a_writer_in_another_process_holds_the_lock_until_it_ends(corpus, tmp_path):
    out = tmp_path / "c"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from cpfd.storage.outputs import exclusive\n"
        f"with exclusive(__import__('pathlib').Path({str(out)!r})):\n"
        "    print('locked', flush=True); time.sleep(30)")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        refused("synth", out, "--train-samples", "20", "--eval-samples", "5", "--quiet", message=f"pid {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    ok("synth", out, "--train-samples", "20", "--eval-samples", "5", "--quiet")  # a killed holder leaves no lock


def test_two_dump_writers_never_share_a_shard(corpus, teacher, tmp_path):
    out = tmp_path / "d"
    with exclusive(out / "part-00001.parquet"):  # another dump-teacher writing shard 1
        refused("dump-teacher", teacher, corpus.path, "--out", out, "--quiet", message="part-00001.parquet")
    # a job-array worker that owns other shards is not held up by it
    with exclusive(out / "part-00001.parquet"):
        ok("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "2", "--shard-index", "0", "--quiet")
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "2", "--shard-index", "1", "--quiet")
    assert (out / "_manifest.json").exists() and not list(out.glob(".*"))


def test_temp_files_are_per_process(corpus, teacher, tmp_path, monkeypatch):
    names = []
    real = pq.ParquetWriter.__init__

    def spy(self, where, *a, **k):
        names.append(str(where))
        return real(self, where, *a, **k)

    monkeypatch.setattr(pq.ParquetWriter, "__init__", spy)
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--quiet")
    import os

    assert names and all(n.endswith(f".{os.getpid()}.tmp") for n in names), names


# ---- a resume checks what it keeps --------------------------------------------------------------

def rewrite_logits(file, change) -> None:
    """Change a committed shard's logits behind cpfd's back, footer (digests, provenance) kept."""
    pf = pq.ParquetFile(file)
    table, meta = pf.read(), pf.metadata.metadata
    flat = table.column("logits").combine_chunks().flatten().to_numpy().copy()
    flat = change(flat)
    logits = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), 2)
    table = table.set_column(table.column_names.index("logits"), "logits", logits)
    with pq.ParquetWriter(file, table.schema.with_metadata({k: v for k, v in meta.items() if k != b"cpfd.shard"}),
                          use_dictionary=False) as writer:
        for g in range(pf.num_row_groups):
            start = sum(pf.metadata.row_group(i).num_rows for i in range(g))
            writer.write_table(table.slice(start, pf.metadata.row_group(g).num_rows))
        writer.add_key_value_metadata({b"cpfd.shard": meta[b"cpfd.shard"]})


def test_a_resume_refuses_a_kept_shard_whose_values_changed(corpus, teacher, tmp_path, monkeypatch):
    out = tmp_path / "d"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--num-shards", "3", "--shard-index", "0", "--quiet")
    # two bytes of one logit flipped: still finite, still plausible, but not what the teacher computed
    rewrite_logits(out / "part-00000.parquet", lambda x: np.concatenate([[x[0] + 0.25], x[1:]]).astype(np.float32))
    refused("dump-teacher", teacher, corpus.path, "--out", out, "--quiet", message="part-00000.parquet")
    assert not (out / "_manifest.json").exists()


def test_a_finished_dump_whose_shard_changed_is_not_called_complete(corpus, teacher, tmp_path):
    out = tmp_path / "d"
    ok("dump-teacher", teacher, corpus.path, "--out", out, "--quiet")
    rewrite_logits(out / "part-00001.parquet", lambda x: x.astype(np.float32))  # same values, other bytes
    refused("dump-teacher", teacher, corpus.path, "--out", out, "--quiet", message="changed since the dump was written")


# ---- fingerprints: ids that contain newlines ------------------------------------------------------

def test_ids_holding_newlines_no_longer_share_a_fingerprint(tmp_path):
    assert hash_ids(["x\ny", "z"]) != hash_ids(["x", "y\nz"])
    fingerprints = []
    for name, ids in (("a", ["x\ny", "z", "w"]), ("b", ["x", "y\nz", "w"])):
        with CorpusWriter(tmp_path / name, task="t", classes=["neg", "pos"], frames_per_video=0, image_size=0,
                          has_text=False, privileged_features=["p"], features=["f"]) as w:
            for i, sample_id in enumerate(ids):
                w.add("train", {"sample_id": sample_id, "label": i % 2, "title": "", "ocr_text": "", "frames": [],
                                "privileged": [1.0], "features": [0.5]})
        fingerprints.append(json.loads((tmp_path / name / "corpus.json").read_text())["fingerprint"])
    assert fingerprints[0] != fingerprints[1]


def test_a_corpus_of_schema_1_is_refused_with_what_to_do(corpus, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(corpus.path, old)
    meta = json.loads((old / "corpus.json").read_text())
    (old / "corpus.json").write_text(json.dumps({**meta, "schema_version": 1}))
    refused("info", old, message="schema_version 1, written by an older cpfd")

