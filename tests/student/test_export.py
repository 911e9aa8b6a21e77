"""student/export.py and student/serving.py: `cpfd export` writes a serving folder whose graph takes
the student's inputs only, matches the PyTorch student, and `cpfd predict` runs it without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import torch

from cpfd.student.export import PARITY_TOLERANCE, example_inputs, graph_inputs
from cpfd.student.predict import load_student
from tests.invoke import ok, one_error_line, refused, run
from tests.student.test_predict import write_serving_manifest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(student, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serve") / "serve"
    ok("export", student, "--out", out, "--check-rows", "24")
    return out


def test_the_serving_folder_holds_the_graph_the_tokenizer_and_what_serving_needs(served, student):
    assert sorted(p.name for p in served.iterdir()) == ["model.onnx", "serving.json", "tokenizer"]
    serving = json.loads((served / "serving.json").read_text())
    config = json.loads((student / "config.json").read_text())
    record = json.loads((student / "training.json").read_text())
    assert serving["classes"] == config["classes"] and serving["positive_class"] == config["classes"][1]
    assert serving["threshold"] == record["threshold"]
    assert serving["frames"]["per_video"] == config["frames_per_video"]
    assert serving["frames"]["image_size"] == config["image_size"]
    assert serving["text"]["max_length"] == config["max_length"]
    assert serving["features"]["names"] == config["feature_names"] == ["duration"]
    assert serving["features"]["mean"] == config["feature_mean"]
    parity = serving["parity"]
    assert parity["rows"] == 24 and parity["max_abs_diff_probs"] <= PARITY_TOLERANCE == parity["tolerance"]
    assert len(serving["source"]["weights_sha256"]) == 64 and serving["opset"] >= 17
    assert {"cpfd", "torch", "onnx", "onnxruntime"} <= set(serving["exported_with"])


def test_the_graph_takes_the_students_inputs_and_any_batch_size(served, student):
    model, _ = load_student(student)
    model.eval()  # no dropout: the graph is the eval-mode model
    config = model.config
    graph = onnx.load(str(served / "model.onnx")).graph
    shapes = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert list(shapes) == graph_inputs(config) == ["frames", "input_ids", "attention_mask", "features"]
    assert "privileged" not in shapes  # the teacher's inputs never reach a serving host
    assert shapes["frames"][1:] == [config.frames_per_video, config.image_size, config.image_size, 3]
    assert shapes["features"][1] == len(config.feature_names)
    assert all(isinstance(dims[0], str) and dims[0] for dims in shapes.values())  # a symbolic batch (pytorch#152018)
    assert isinstance(shapes["input_ids"][1], str)  # and a symbolic text length
    session = ort.InferenceSession(str(served / "model.onnx"), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(0)
    for batch, length in ((1, config.max_length), (7, config.max_length), (64, config.max_length), (5, 8)):
        inputs = example_inputs(config, batch, length)
        inputs[0] = torch.randint(0, 256, inputs[0].shape, dtype=torch.uint8, generator=generator)
        inputs[1] = torch.randint(0, 100, inputs[1].shape, generator=generator)  # ids in the test vocabulary
        with torch.no_grad():
            expected = torch.softmax(model(dict(zip(graph_inputs(config), inputs))).logits, -1).numpy()
        got = session.run(["probs"], {n: t.numpy() for n, t in zip(graph_inputs(config), inputs)})[0]
        assert got.shape == (batch, 2)
        assert np.abs(got - expected).max() <= PARITY_TOLERANCE


def test_predict_on_the_serving_folder_gives_the_model_folders_answers(served, student, tmp_path):
    manifest = write_serving_manifest(tmp_path)
    for threshold in ([], ["--threshold", "0.5"]):
        a, b = tmp_path / "onnx.parquet", tmp_path / "torch.parquet"
        onnx_run = ok("predict", served, manifest, "--out", a, "--overwrite", "--quiet", *threshold)
        torch_run = ok("predict", student, manifest, "--out", b, "--overwrite", "--quiet", *threshold)
        assert onnx_run.stderr == torch_run.stderr and "the positive class 'pos'" in onnx_run.stderr
        a, b = pq.read_table(a), pq.read_table(b)
        assert a.column("sample_id").to_pylist() == b.column("sample_id").to_pylist()
        assert np.abs(a.column("prob").to_numpy() - b.column("prob").to_numpy()).max() <= PARITY_TOLERANCE
        assert a.column("pred").to_pylist() == b.column("pred").to_pylist()


def test_predict_on_a_serving_folder_imports_neither_torch_nor_transformers(served, tmp_path):
    manifest = write_serving_manifest(tmp_path)
    code = ("import sys\nfrom cpfd.cli import main\n"
            f"sys.argv = ['cpfd', 'predict', {str(served)!r}, {str(manifest)!r}, '--quiet']\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print(sorted(m for m in ('torch', 'transformers', 'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"
    assert len(done.stdout.splitlines()) == 5  # one JSON line per video


def test_predict_decides_at_the_validation_threshold_and_takes_another(student, tmp_path):
    manifest = write_serving_manifest(tmp_path)
    record = json.loads((student / "training.json").read_text())
    rows = [json.loads(line) for line in ok("predict", student, manifest, "--quiet").stdout.splitlines()]
    decided = [r for r in rows if abs(r["probs"]["pos"] - record["threshold"]) > 1e-5]  # probs print rounded to 1e-6
    assert decided and all(r["pred"] == ("pos" if r["probs"]["pos"] >= record["threshold"] else "neg") for r in decided)
    for threshold, pred in (("0", "pos"), ("1", "neg")):
        result = ok("predict", student, manifest, "--quiet", "--threshold", threshold)
        assert {json.loads(line)["pred"] for line in result.stdout.splitlines()} == {pred}
        assert f"probability >= {threshold} (--threshold)" in result.stderr


def test_a_teacher_is_refused_and_nothing_is_written(teacher, tmp_path):
    refused("export", teacher, "--out", tmp_path / "serve", message="is a teacher (DF-X-VLM)")
    assert not (tmp_path / "serve").exists()


def test_an_export_over_a_folder_needs_overwrite_and_swaps_it_whole(served, student, tmp_path):
    out = tmp_path / "serve"
    shutil.copytree(served, out)
    before = (out / "serving.json").read_bytes()
    refused("export", student, "--out", out, message="already holds a serving folder; pass --overwrite")
    assert (out / "serving.json").read_bytes() == before
    ok("export", student, "--out", out, "--overwrite", "--check-rows", "8")
    assert json.loads((out / "serving.json").read_text())["parity"]["rows"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serve"]  # no staging or lock left behind


def test_an_export_outside_the_tolerance_writes_nothing(student, tmp_path, monkeypatch):
    import cpfd.student.export as export

    monkeypatch.setattr(export, "PARITY_TOLERANCE", -1.0)  # no difference, not even 0, is within it
    refused("export", student, "--out", tmp_path / "serve", message="above the tolerance -1: nothing was written")
    assert list(tmp_path.iterdir()) == []


def flip_a_byte_in_the_middle(folder: Path) -> None:
    data = bytearray((folder / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # the weights' bytes: a value changes, the file still parses
    (folder / "model.onnx").write_bytes(bytes(data))


@pytest.mark.parametrize("damage, message", [
    (lambda d: (d / "model.onnx").write_bytes(b"not a graph"), "model.onnx: its sha256 differs"),
    (flip_a_byte_in_the_middle, "model.onnx: its sha256 differs"),  # still a graph onnxruntime would load
    (lambda d: (d / "model.onnx").unlink(), "model.onnx: missing"),
    (lambda d: (d / "serving.json").write_text("{oops"), "serving.json: not a readable serving.json"),
    (lambda d: (d / "serving.json").write_text('{"format": 99, "inputs": [], "classes": []}'),
     "serving.json: not a serving.json of this cpfd"),
    (lambda d: (d / "tokenizer" / "tokenizer.json").write_text("[]"), "tokenizer.json: its sha256 differs"),
    (lambda d: (d / "tokenizer" / "tokenizer.json").unlink(), "tokenizer.json: not a readable tokenizer"),
])
def test_a_damaged_serving_folder_is_one_line_naming_the_file(served, tmp_path, damage, message):
    folder = tmp_path / "serve"
    shutil.copytree(served, folder)
    damage(folder)
    refused("predict", folder, write_serving_manifest(tmp_path), "--quiet", message=message)


def test_a_manifest_line_the_serving_folder_cannot_read_is_one_line(served, tmp_path):
    manifest = write_serving_manifest(tmp_path)
    lines = [json.loads(line) for line in manifest.read_text().splitlines()]
    lines[1]["features"] = {"duraton": 1.0}
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    result = run("predict", served, manifest, "--quiet", "--out", tmp_path / "p.parquet")
    assert result.exit_code == 1
    assert "serve.jsonl:2: features 'duraton' is not a feature the model reads" in one_error_line(result.stderr)
    assert not (tmp_path / "p.parquet").exists()


def test_int8_quantization_reports_what_it_changed(student, tmp_path):
    ok("export", student, "--out", tmp_path / "q", "--quantize", "int8", "--check-rows", "24")
    q = json.loads((tmp_path / "q" / "serving.json").read_text())["quantization"]
    assert q["rows"] == 24 and set(q["roc_auc"]) == set(q["f1"]) == {"float32", "int8"}
    assert q["batch1_latency_ms"]["int8"]["repeats"] == 30 and q["max_abs_diff_probs_vs_torch"] >= 0
    assert ort.InferenceSession(str(tmp_path / "q" / "model.onnx")).get_inputs()[0].name == "frames"
