"""`cpfd dump-teacher --num-workers N`: DataLoader workers read and collate the row groups, the
teacher runs in the main process, and the dump is the same file for file whatever N.

The corpus has an odd number of train row groups of uneven sizes (8, 8, 8, 6 | 8, 8, 8, 6 | 2) and
the batch size cuts them unevenly, so two workers get different numbers of units and pieces, and
the main process has to put the units back in order. Each dump's `created_at` is fixed, so that
two dumps of the same rows are byte-identical files.
"""

import functools
import hashlib

import pyarrow.parquet as pq
import pytest
import torch

from cpfd.teacher import dump as dump_module
from cpfd.pipeline.data import fold_of
from cpfd.teacher.dump import CollatedUnits, TeacherScorer
from cpfd.storage.corpus import Corpus, CorpusWriter
from cpfd.storage.dump import dump_provenance
from cpfd.storage.schema import CORPUS_COLUMNS
from tests.factories import CREATED_AT, tiny_corpus
from tests.invoke import FAST, ok, refused

BATCH = "5"  # row groups of 8, 6 and 2 rows: pieces of 5 + 3, 5 + 1 and 2


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("c") / "corpus", n_train=62, n_eval=20, rows_per_shard=30,
                       row_group_rows=8)


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "teacher"
    ok("train-teacher", corpus.path, "--out", out, *FAST)
    return out


@pytest.fixture(scope="module")
def cross_fitted_teacher(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("x") / "teacher"
    ok("train-teacher", corpus.path, "--out", out, "--folds", "2", *FAST)
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


def test_the_units_do_not_divide_evenly_among_the_workers(corpus):
    assert corpus.row_groups("train") == [[8, 8, 8, 6], [8, 8, 8, 6], [2]]
    units = corpus.work_units("train")
    assert len(units[0::2]) != len(units[1::2])


def test_a_dump_is_the_same_file_for_file_with_0_1_or_2_workers(corpus, teacher, tmp_path, fixed_time):
    made = dumps(teacher, corpus, tmp_path, "train", (0, 1, 2))
    assert made[0].keys() == {"_manifest.json", *(p.name for p in corpus.shard_paths("train"))}
    assert made[1] == made[0] and made[2] == made[0]
    # and the rows are the corpus rows, in order, in its row groups
    for shard, groups in zip(corpus.shard_paths("train"), corpus.row_groups("train")):
        dumped = tmp_path / "train-2" / shard.name
        ids = pq.read_table(dumped, columns=["sample_id"]).column(0)
        assert ids.equals(pq.read_table(shard, columns=["sample_id"]).column(0))
        meta = pq.ParquetFile(dumped).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == groups


@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_cross_fitted_dump_is_the_same_with_workers(corpus, cross_fitted_teacher, tmp_path, fixed_time, split):
    # train rows go to the teacher of their fold (each with its own tokenizer), eval rows to all of them
    made = dumps(cross_fitted_teacher, corpus, tmp_path, split, (0, 2))
    assert made[2] == made[0]
    folds = pq.read_table(tmp_path / f"{split}-2" / corpus.shard_paths(split)[0].name).column("fold").to_pylist()
    assert set(folds) == ({0, 1} if split == "train" else {-1})


def test_the_workers_collate_what_the_scorer_collates(corpus, cross_fitted_teacher):
    # the pieces a worker hands over are the batches TeacherScorer.logits runs, model by model
    scorer = TeacherScorer(cross_fitted_teacher, corpus, "cpu", 5)
    columns = ["sample_id", *scorer.inputs.columns()]
    units = corpus.work_units("train")
    pieces = list(CollatedUnits(corpus, units, columns, scorer.collator, 5))
    assert {p.piece.model for p in pieces} == {0, 1}
    for index, unit in enumerate(units):
        mine = [p for p in pieces if p.unit == index]
        table = Corpus(corpus.path).read_unit(unit, columns)
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


def test_a_damaged_frame_read_by_a_worker_is_one_error_line(corpus, teacher, tmp_path):
    damaged = copy_with_a_damaged_frame(corpus, tmp_path / "corpus", "train-0045")  # shard 1, row group 1
    assert damaged.row_groups("train") == corpus.row_groups("train")
    result = refused("dump-teacher", teacher, damaged.path, "--out", tmp_path / "dump", "--num-workers", "2",
                     "--batch-size", BATCH, "--quiet", message="frame 0 is not a readable image")
    line = result.stderr.splitlines()[-1]
    assert str(damaged.shard_paths("train")[1]) in line and "(row group 1)" in line
    assert not (tmp_path / "dump" / "_manifest.json").exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory needs CUDA")
def test_on_cuda_the_workers_hand_over_pinned_batches(corpus, teacher, tmp_path):
    from cpfd.pipeline.data import make_loader

    scorer = TeacherScorer(teacher, corpus, "cuda", 5)
    columns = ["sample_id", *scorer.inputs.columns()]
    dataset = CollatedUnits(corpus, corpus.work_units("train"), columns, scorer.collator, 5)
    item = next(iter(make_loader(dataset, 2, pin_memory=True)))
    assert all(t.is_pinned() for t in item.piece.batch.values())
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--num-workers", "2", "--device", "cuda", "--quiet")
