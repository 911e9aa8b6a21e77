"""pipeline/data.py: rows picked by a hash of their id (the validation split, folds), and what the
dataset streams."""

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from cpfd.pipeline.data import CorpusBatches, Inputs, fold_of, fold_rows, id_uniforms, training_rows, validation_rows
from tests.factories import layout_corpus


def test_id_uniforms_are_fixed_uniform_and_do_not_depend_on_chunking():
    ids = [f"video-{i}" for i in range(20000)] + ["", "x\ny", "日本語", "a" * 300]
    u = id_uniforms(pa.array(ids), "salt")
    assert u.shape == (len(ids),) and ((u >= 0) & (u < 1)).all()
    assert np.array_equal(u, id_uniforms(pa.chunked_array([ids[:7], ids[7:]]), "salt"))
    assert np.array_equal(u[1:3], id_uniforms(pa.array(["skip"] + ids).slice(2, 2), "salt"))
    assert not np.array_equal(u, id_uniforms(pa.array(ids), "other salt"))
    counts, _ = np.histogram(u[:20000], bins=10, range=(0, 1))
    assert counts.min() > 1800 and counts.max() < 2200  # uniform: 2,000 a bin, +-4.5 sigma
    # a fixed value on every machine: FNV-1a 64 and a fold of its bits, no Python hash randomization
    assert round(float(id_uniforms(pa.array(["video-0"]), "cpfd.validation")[0]), 12) == round(float(u_video_0()), 12)


def u_video_0() -> float:
    """The same number by a plain Python loop over the bytes (the reference for the vectorized code)."""
    h = 0xCBF29CE484222325
    for byte in b"cpfd.validation" + b"video-0":
        h = ((h ^ byte) * 0x100000001B3) % 2**64
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) % 2**64
    h ^= h >> 33
    return (h >> 11) / float(1 << 53)


def test_validation_and_training_rows_partition_the_split_and_folds_partition_it_too():
    ids = pa.array([hashlib.sha1(str(i).encode()).hexdigest() for i in range(5000)])
    val, train = validation_rows(0.1).mask(ids), training_rows(0.1).mask(ids)
    assert not (val & train).any() and (val | train).all()
    assert 0.08 < val.mean() < 0.12
    folds = fold_of(ids, 5)
    for k in range(5):
        assert np.array_equal(fold_rows(k, 5).mask(ids), folds == k)
        assert np.array_equal(fold_rows(k, 5, inside=False).mask(ids), folds != k)
    assert np.bincount(folds, minlength=5).min() > 900  # 1,000 a fold


@pytest.mark.parametrize("workers", [0, 2])
def test_the_dataset_streams_exactly_the_selected_rows(tmp_path, workers):
    from cpfd.pipeline.data import make_loader

    corpus = layout_corpus(tmp_path / "c", n_train=60, n_eval=8)
    ids = corpus.read_column("train", "sample_id")
    labels = np.array(corpus.read_column("train", "label").to_pylist())
    for select in ((validation_rows(0.3),), (training_rows(0.3), fold_rows(1, 3, inside=False))):
        mask = np.ones(len(ids), bool)
        for s in select:
            mask &= s.mask(ids)
        data = CorpusBatches(corpus, "train", Inputs.for_corpus(corpus, privileged=False), batch_size=4, shuffle=True,
                             select=select)
        assert data.num_rows == mask.sum() and len(data) == -(-mask.sum() // 4)
        seen = np.concatenate([b["labels"].numpy() for b in make_loader(data, workers)])
        assert sorted(seen) == sorted(labels[mask])
