"""student/predict.py: `cpfd predict` scores raw videos of a serving manifest, checks each line
against the model, and refuses a teacher. (Video files in a manifest: tests/storage/test_manifest.py.)"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from tests.factories import tiny_corpus
from tests.invoke import FAST, ok, refused, run


def write_serving_manifest(tmp_path, n=5):
    lines = []
    for i in range(n):
        frames = []
        for j in range(3):  # more frames than the model reads, and a different size: both handled
            path = tmp_path / f"v{i}_{j}.png"
            Image.fromarray(np.full((20, 24, 3), 40 * i, np.uint8)).save(path)
            frames.append(path.name)
        lines.append(json.dumps({"id": f"new-{i}", "frames": frames, "title": f"clip {i}", "ocr_text": "buy now",
                                 "features": {"duration": 1.5}}))
    manifest = tmp_path / "serve.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_predict_scores_raw_videos(student, tmp_path):
    manifest = write_serving_manifest(tmp_path)
    result = ok("predict", student, manifest, "--quiet")
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["id"] for r in rows] == [f"new-{i}" for i in range(5)]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 and r["pred"] in ("neg", "pos") for r in rows)
    ok("predict", student, manifest, "--out", tmp_path / "scores.parquet", "--quiet")
    table = pq.read_table(tmp_path / "scores.parquet")
    assert table.column_names == ["sample_id", "logits", "prob", "pred"]
    assert np.allclose(table.column("prob").to_numpy(), [r["probs"]["pos"] for r in rows], atol=1e-5)


def test_predict_refuses_a_teacher(teacher, tmp_path):
    result = run("predict", teacher, write_serving_manifest(tmp_path), "--quiet")
    assert result.exit_code == 1 and "is a teacher" in result.output


@pytest.mark.parametrize("change, message", [
    (lambda line: {**line, "features": {"duraton": 1.5}}, "features 'duraton' is not a feature the model reads "
                                                          "(did you mean 'duration'?)"),
    (lambda line: {**line, "features": {}}, "features lacks 'duration'"),
    (lambda line: {k: v for k, v in line.items() if k != "features"}, "features lacks 'duration'"),
    (lambda line: {k: v for k, v in line.items() if k not in ("title", "ocr_text")}, "the model reads title / ocr_text"),
    (lambda line: {k: v for k, v in line.items() if k != "frames"}, "the model reads frames"),
])
def test_predict_checks_each_line_against_the_model(student, tmp_path, change, message):
    manifest = write_serving_manifest(tmp_path)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[2] = change(lines[2])
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    refused("predict", student, manifest, "--quiet", message=f"serve.jsonl:3: {message}")


def test_a_tabular_model_refuses_videos_and_text(corpus, tmp_path):
    tabular = tiny_corpus(tmp_path / "tab", frames=False, text=False)
    ok("train-student", tabular.path, "--out", tmp_path / "s", *FAST)
    manifest = write_serving_manifest(tmp_path)  # frames, title, OCR text and the feature
    refused("predict", tmp_path / "s", manifest, "--quiet", message="serve.jsonl:1: frames: the model reads no frames")
    refused("evaluate", tmp_path / "s", corpus.path, "--quiet",  # the shared corpus: frames and text
            message="frames: the model reads no frames")
