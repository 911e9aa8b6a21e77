"""teacher/crossfit.py: cross-fitted teachers (issue 16), K fold teachers, and a dump whose every train
row is scored by a teacher that never trained on it. The corpus is the session's (tests/conftest.py)."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from cpfd.pipeline.data import CorpusBatches, fold_of, fold_rows
from tests.invoke import FAST, ok, refused, run

K = 3


@pytest.fixture(scope="module")
def cross_fitted(corpus, tmp_path_factory):
    """The teacher folder, and the ids each fold's training stream kept (spied, not computed)."""
    streamed: dict[int, set] = {}
    real = CorpusBatches._mask

    def spy(self, ids):
        mask = real(self, ids)
        for k in range(K):
            if fold_rows(k, K, inside=False) in self.select:
                streamed.setdefault(k, set()).update(np.array(ids.to_pylist())[mask].tolist())
        return mask

    out = tmp_path_factory.mktemp("t") / "teacher"
    with pytest.MonkeyPatch.context() as mp:  # undone even when the training fails
        mp.setattr(CorpusBatches, "_mask", spy)
        ok("train-teacher", corpus.path, "--out", out, "--folds", K, *FAST)
    return out, streamed


def logits_of(path) -> np.ndarray:
    return np.array(pq.read_table(path, columns=["logits"]).column(0).to_pylist(), dtype=np.float64)


def test_the_folder_holds_k_teachers_and_says_what_it_is(corpus, cross_fitted):
    teacher, _ = cross_fitted
    data = json.loads((teacher / "folds.json").read_text())
    assert data["folds"] == K and [t["dir"] for t in data["teachers"]] == [f"fold-{k}" for k in range(K)]
    for t in data["teachers"]:
        record = json.loads((teacher / t["dir"] / "training.json").read_text())
        assert record["fold"]["k"] == t["fold"] and record["training_rows"] == t["training_rows"]
    assert "3 folds" in ok("info", teacher).output


def test_no_row_is_scored_by_a_teacher_that_trained_on_it(corpus, cross_fitted, tmp_path):
    teacher, streamed = cross_fitted
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--quiet")
    table = pq.read_table(sorted((tmp_path / "d").glob("*.parquet")))
    ids, fold = table.column("sample_id").to_pylist(), table.column("fold").to_numpy()
    assert np.array_equal(fold, fold_of(table.column("sample_id"), K))
    assert set(streamed) == set(range(K)) and all(streamed[k] for k in range(K))
    for sample_id, f in zip(ids, fold):
        assert sample_id not in streamed[f]  # the teacher of its fold never streamed it in training
    manifest = json.loads((tmp_path / "d" / "_manifest.json").read_text())
    assert [f["fold"] for f in manifest["teacher"]["folds"]] == list(range(K))


def test_each_row_gets_its_fold_teachers_logits_and_eval_rows_the_mean(corpus, cross_fitted, tmp_path):
    teacher, _ = cross_fitted
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--quiet")
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "e", "--split", "eval", "--quiet")
    dumped = np.concatenate([logits_of(f) for f in sorted((tmp_path / "d").glob("*.parquet"))])
    fold = np.concatenate([pq.read_table(f, columns=["fold"]).column(0).to_numpy()
                           for f in sorted((tmp_path / "d").glob("*.parquet"))])
    eval_mean = []
    for k in range(K):
        ok("evaluate", teacher / f"fold-{k}", corpus.path, "--split", "train", "--out", tmp_path / f"p{k}.parquet",
           "--quiet")
        mine = fold == k
        assert np.abs(logits_of(tmp_path / f"p{k}.parquet")[mine] - dumped[mine]).max() < 1e-4
        ok("evaluate", teacher / f"fold-{k}", corpus.path, "--out", tmp_path / f"e{k}.parquet", "--quiet")
        eval_mean.append(logits_of(tmp_path / f"e{k}.parquet"))
    eval_dumped = np.concatenate([logits_of(f) for f in sorted((tmp_path / "e").glob("*.parquet"))])
    assert np.abs(np.mean(eval_mean, axis=0) - eval_dumped).max() < 1e-4
    assert set(pq.read_table(sorted((tmp_path / "e").glob("*.parquet"))).column("fold").to_pylist()) == {-1}


def test_distill_inspect_query_and_calibrate_read_a_cross_fitted_dump(corpus, cross_fitted, tmp_path):
    teacher, _ = cross_fitted
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "d", "--quiet")
    ok("distill", corpus.path, tmp_path / "d", "--out", tmp_path / "s", "--mapping", "exp-decay", *FAST)
    assert "teacher loss" in ok("inspect", tmp_path / "d").output
    ok("calibrate", tmp_path / "d")
    result = ok("query", tmp_path / "d", "SELECT fold, count(*) AS n FROM teacher GROUP BY fold ORDER BY fold",
                "--format", "json")
    assert [r["fold"] for r in json.loads(result.stdout)] == list(range(K))


def test_an_interrupted_cross_fit_resumes_at_its_fold(corpus, tmp_path, monkeypatch):
    out = tmp_path / "t"
    real = torch.optim.AdamW.step
    calls = {"n": 0}
    per_fold = 5  # 100 rows less the validation ones, less a third: 65 rows in fold 0, batches of 16

    def crash_in_fold_1(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == per_fold + 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_in_fold_1)
    assert run("train-teacher", corpus.path, "--out", out, "--folds", K, *FAST, "--checkpoint-every", "1").exit_code != 0
    monkeypatch.setattr(torch.optim.AdamW, "step", real)
    assert (out / "fold-0" / "training.json").exists() and (out / "fold-1" / "checkpoint.safetensors").exists()
    assert not (out / "folds.json").exists()
    refused("train-teacher", corpus.path, "--out", out, "--folds", K, *FAST, message="pass --resume")
    fold_0 = (out / "fold-0" / "model.safetensors").stat().st_mtime_ns
    ok("train-teacher", corpus.path, "--out", out, "--folds", K, *FAST, "--checkpoint-every", "1", "--resume")
    assert (out / "fold-0" / "model.safetensors").stat().st_mtime_ns == fold_0  # kept, not trained again
    assert json.loads((out / "folds.json").read_text())["folds"] == K


def test_a_cross_fitted_folder_is_not_a_model(corpus, cross_fitted):
    teacher, _ = cross_fitted
    refused("evaluate", teacher, corpus.path, "--quiet", message="is a cross-fitted teacher")


def test_a_resume_with_another_k_is_refused_and_changes_nothing(corpus, cross_fitted, tmp_path):
    import shutil

    out = tmp_path / "teacher"
    shutil.copytree(cross_fitted[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    refused("train-teacher", corpus.path, "--out", out, "--folds", 2, "--resume", *FAST,
            message=f"--resume continues the cross-fitted teacher there, which has {K} folds; this run asks for --folds 2")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    # an interrupted run (no folds.json yet, one fold trained): its folds' records say K
    (out / "folds.json").unlink()
    shutil.rmtree(out / "fold-2")
    refused("train-teacher", corpus.path, "--out", out, "--folds", 4, "--resume", *FAST,
            message=f"which was trained with {K} folds (fold-0)")
    assert not (out / "fold-3").exists() and not (out / "folds.json").exists()


def test_more_folds_than_the_rows_can_fill_are_refused_before_training(corpus, tmp_path):
    refused("train-teacher", corpus.path, "--out", tmp_path / "t", "--folds", 1000, *FAST,
            message="of the 1000 folds without a row to hold out; use fewer folds")
    assert not (tmp_path / "t").exists()


def test_a_dump_refuses_a_fold_folder_of_another_cross_fitting(corpus, cross_fitted, tmp_path):
    import shutil

    out = tmp_path / "teacher"
    shutil.copytree(cross_fitted[0], out)
    record = json.loads((out / "fold-1" / "training.json").read_text())
    record["fold"]["folds"] = K + 1  # what a fold folder of a (K+1)-fold run carries
    (out / "fold-1" / "training.json").write_text(json.dumps(record))
    refused("dump-teacher", out, corpus.path, "--out", tmp_path / "dump", "--quiet",
            message=f"its training record says fold 1 of {K + 1}")
