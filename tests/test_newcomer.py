"""A newcomer's first hour (issue 17): warnings on small or uninformative data, examples that run."""

import io
import json

import numpy as np
from PIL import Image

from cpfd.storage.corpus import Corpus
from tests.factories import layout_corpus, run_dump, tiny_corpus
from tests.invoke import FAST, ok, run


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def test_training_a_handful_of_steps_or_on_a_one_class_split_says_so(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=24, n_eval=6, classes=("a", "b"), seed=4)
    result = ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST)
    said = warnings_of(result)
    assert any("training takes 2 optimizer steps" in w for w in said), said
    counts = corpus.label_counts("eval")
    if min(counts) == 0:
        assert any("the eval split holds one class" in w for w in said), said
    else:
        assert any("metrics on it swing with a single row" in w for w in said), said


def test_import_warns_about_a_split_of_one_class(tmp_path):
    lines = [json.dumps({"id": f"v{i}", "features": {"x": float(i)}, "label": "pos" if i < 3 else "neg",
                         "split": "eval" if i >= 8 else "train"}) for i in range(12)]
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    result = ok("import", tmp_path / "m.jsonl", tmp_path / "c", "--quiet")
    assert any("the eval split holds one class (neg, 4 rows)" in w for w in warnings_of(result)), result.stderr


def test_calibrate_and_distill_warn_when_the_teachers_losses_carry_no_information(tmp_path):
    corpus = layout_corpus(tmp_path / "c", n_train=60, n_eval=8)
    run_dump(tmp_path / "d", corpus)  # a "teacher" of random logits: ROC AUC about 0.5 on its own rows
    result = ok("calibrate", tmp_path / "d")
    assert any("no better than chance: its losses carry no information" in w for w in warnings_of(result)), result.stderr
    result = run("distill", corpus.path, tmp_path / "d", "--out", tmp_path / "s", "--mapping", "tanh", *FAST)
    assert any("no better than chance" in w for w in warnings_of(result)), result.stderr


def test_an_exported_manifest_imports_back_to_the_same_rows(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=10, n_eval=12, image_size=16, frames_per_video=2)
    ok("export-manifest", corpus.path, tmp_path / "m", "--split", "eval", "--keep-split")
    ok("import", tmp_path / "m" / "manifest.jsonl", tmp_path / "back", "--image-size", "16", "--frames-per-video", "2",
       "--classes", "neg,pos", "--quiet")
    again = Corpus(tmp_path / "back")
    columns = ["sample_id", "label", "title", "ocr_text", "frames", "features", "privileged"]
    want = [r for t in corpus.iter_batches("eval", columns) for r in t.to_pylist()]
    have = [r for t in again.iter_batches("eval", columns) for r in t.to_pylist()]
    assert [r["sample_id"] for r in have] == [r["sample_id"] for r in want]
    for a, b in zip(have, want):
        assert (a["label"], a["title"], a["ocr_text"]) == (b["label"], b["title"], b["ocr_text"])
        for key, names, names_back in (("features", corpus.features, again.features),
                                       ("privileged", corpus.privileged_features, again.privileged_features)):
            back = dict(zip(names_back, a[key]))  # import orders feature names alphabetically
            assert np.allclose([back[n] for n in names], b[key], equal_nan=True), key
        for x, y in zip(a["frames"], b["frames"]):  # lossless PNG both ways: the same pixels
            assert np.array_equal(np.asarray(Image.open(io.BytesIO(x))), np.asarray(Image.open(io.BytesIO(y))))


def test_a_serving_export_has_no_labels_and_predict_reads_it(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=32, n_eval=8)
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST)
    ok("export-manifest", corpus.path, tmp_path / "new", "--limit", "3", "--no-labels", "--no-privileged")
    lines = [json.loads(line) for line in (tmp_path / "new" / "manifest.jsonl").read_text().splitlines()]
    assert len(lines) == 3 and not any("label" in line or "privileged" in line for line in lines)
    result = ok("predict", tmp_path / "s", tmp_path / "new" / "manifest.jsonl", "--quiet")
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == [line["id"] for line in lines]
