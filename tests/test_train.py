"""train-teacher, train-student, evaluate and predict, end to end through the CLI on tiny corpora."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from cpfd.pipeline.metrics import classification_metrics
from cpfd.storage.corpus import Corpus
from tests.factories import WEIGHTS_TOLERANCE, max_weight_difference, tiny_corpus
from tests.invoke import FAST, ok, refused, run

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return tiny_corpus(tmp_path_factory.mktemp("c") / "corpus")


@pytest.fixture(scope="module")
def student(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("s") / "student"
    ok("train-student", corpus.path, "--out", out, *FAST, "--epochs", "2")
    return out


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("t") / "teacher"
    ok("train-teacher", corpus.path, "--out", out, *FAST)
    return out


def test_model_folders_hold_what_design_4_3_says(student, teacher):
    for folder, architecture in ((student, "X-VLM"), (teacher, "DF-X-VLM")):
        assert {"config.json", "model.safetensors", "tokenizer", "training.json"} <= {p.name for p in folder.iterdir()}
        config = json.loads((folder / "config.json").read_text())
        assert config["architecture"] == architecture
        record = json.loads((folder / "training.json").read_text())
        assert record["command"].startswith("cpfd train-")
        assert record["best_epoch"] >= 1
        assert {"train_loss", "val_roc_auc", "val_pr_auc", "val_f1", "samples_per_s"} <= set(record["epochs"][0])
        assert not any(k.startswith("eval_") for k in record["epochs"][0])  # the eval split only reports
        assert record["validation"]["fraction"] == 0.1 and record["validation"]["rows"] > 0
    assert len(json.loads((student / "training.json").read_text())["epochs"]) == 2
    teacher_config = json.loads((teacher / "config.json").read_text())
    assert teacher_config["privileged_features"] == ["reports", "legacy_score"]
    assert len(teacher_config["privileged_mean"]) == 2


def test_training_repeats_on_the_cpu(corpus, tmp_path):
    for name in ("a", "b"):
        ok("train-student", corpus.path, "--out", tmp_path / name, *FAST, "--seed", "3")
    assert max_weight_difference(tmp_path / "a", tmp_path / "b") <= WEIGHTS_TOLERANCE
    ok("train-student", corpus.path, "--out", tmp_path / "c", *FAST, "--seed", "4")
    assert max_weight_difference(tmp_path / "a", tmp_path / "c") > 100 * WEIGHTS_TOLERANCE


def test_max_steps_stops_early(corpus, tmp_path):
    ok("train-student", corpus.path, "--out", tmp_path / "m", *FAST, "--epochs", "5", "--max-steps", "3")
    record = json.loads((tmp_path / "m" / "training.json").read_text())
    assert [e["step"] for e in record["epochs"]] == [3]


def test_teacher_needs_privileged_features(tmp_path):
    plain = tiny_corpus(tmp_path / "plain", privileged=False)
    result = run("train-teacher", plain.path, "--out", tmp_path / "t", *FAST)
    assert result.exit_code == 1
    assert result.output.startswith("error: ") and "no privileged features" in result.output
    assert not (tmp_path / "t" / "config.json").exists()


def test_existing_model_folder_is_refused(corpus, student):
    result = run("train-student", corpus.path, "--out", student, *FAST)
    assert result.exit_code == 1 and "already holds a model" in result.output


def test_evaluate_reports_sklearn_metrics_and_writes_predictions(corpus, student, tmp_path):
    result = ok("evaluate", student, corpus.path, "--out", tmp_path / "pred.parquet", "--json", "--quiet")
    metrics = json.loads(result.output[: result.output.rindex("}") + 1])
    table = pq.read_table(tmp_path / "pred.parquet")
    assert table.column_names == ["sample_id", "label", "logits", "prob", "pred"]
    assert table.column("sample_id").to_pylist() == corpus.read_column("eval", "sample_id").to_pylist()
    logits = np.array(table.column("logits").to_pylist())
    expected = classification_metrics(table.column("label").to_numpy(), logits)
    for key in ("roc_auc", "pr_auc", "f1", "best_f1"):
        assert metrics[key] == pytest.approx(expected[key])
    assert np.allclose(table.column("prob").to_numpy(), np.exp(logits[:, 1]) / np.exp(logits).sum(1), atol=1e-6)


def test_f1_at_the_validation_threshold_uses_that_threshold_not_the_best_one():
    """The F1 a user gets with the threshold found on the validation split, not the optimistic best F1
    over thresholds chosen on these very labels."""
    labels = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.35, 0.6, 0.4, 0.7, 0.9])  # positive-class probabilities
    logits = np.log(np.stack([1 - p, p], axis=1))
    at_half = classification_metrics(labels, logits, threshold=0.5)
    assert at_half["val_threshold"] == 0.5
    assert at_half["f1_at_val_threshold"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # 2 TP, 1 FP, 1 FN
    assert at_half["best_f1"] == pytest.approx(6 / 7) and at_half["best_threshold"] == pytest.approx(0.4)
    assert classification_metrics(labels, logits, threshold=0.95)["f1_at_val_threshold"] == 0.0


def test_student_evaluation_never_reads_privileged(corpus, student, teacher, monkeypatch):
    read = []
    original = Corpus.read_unit

    def spy(self, unit, columns):
        read.append(tuple(columns))
        return original(self, unit, columns)

    monkeypatch.setattr(Corpus, "read_unit", spy)
    ok("evaluate", student, corpus.path, "--quiet")
    assert read and all("privileged" not in c for c in read)
    read.clear()
    ok("evaluate", teacher, corpus.path, "--quiet")
    assert read and all("privileged" in c for c in read)


def test_evaluate_refuses_a_model_of_another_corpus(student, tmp_path):
    other = tiny_corpus(tmp_path / "other", classes=("a", "b", "c"))
    result = run("evaluate", student, other.path, "--quiet")
    assert result.exit_code == 1 and "does not fit corpus" in result.output


def test_corrupt_or_missing_weights_are_one_line_errors(student, corpus, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in ("config.json",):
        (broken / f).write_text((student / f).read_text())
    result = run("evaluate", broken, corpus.path)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "model.safetensors" in result.output
    (broken / "model.safetensors").write_bytes(b"\x00" * 64)
    result = run("evaluate", broken, corpus.path)
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("error:")


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
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["id"] for r in rows] == [f"new-{i}" for i in range(5)]
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 and r["pred"] in ("neg", "pos") for r in rows)
    ok("predict", student, manifest, "--out", tmp_path / "scores.parquet", "--quiet")
    table = pq.read_table(tmp_path / "scores.parquet")
    assert table.column_names == ["sample_id", "logits", "prob", "pred"]
    assert np.allclose(table.column("prob").to_numpy(), [r["probs"]["pos"] for r in rows], atol=1e-5)


def test_predict_refuses_a_teacher(teacher, tmp_path):
    result = run("predict", teacher, write_serving_manifest(tmp_path), "--quiet")
    assert result.exit_code == 1 and "is a teacher" in result.output


def test_tabular_corpus_trains_both_models(tmp_path):
    tabular = tiny_corpus(tmp_path / "tab", frames=False, text=False)
    ok("train-student", tabular.path, "--out", tmp_path / "s", *FAST)
    ok("train-teacher", tabular.path, "--out", tmp_path / "t", *FAST)
    assert not (tmp_path / "s" / "tokenizer").exists()
    result = ok("evaluate", tmp_path / "t", tabular.path, "--json", "--quiet")
    assert json.loads(result.output)["rows"] == 48


def test_pretrained_backbones_from_local_folders(corpus, tmp_path):
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    from cpfd.pipeline.tokenization import save_tokenizer, train_wordpiece_tokenizer

    vision = tmp_path / "vit"
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(vision)
    text = tmp_path / "bert"
    tokenizer = train_wordpiece_tokenizer(["clip calm spam odd buy now"] * 20, vocab_size=200)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(text)
    save_tokenizer(tokenizer, text)
    out = tmp_path / "s"
    ok("train-student", corpus.path, "--out", out, *FAST, "--vision-model", vision, "--text-model", text)
    config = json.loads((out / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "vit" and config["vision_config"]["image_size"] == 32
    assert config["text_config"]["vocab_size"] == len(tokenizer)
    ok("evaluate", out, corpus.path, "--quiet")


def test_resume_after_an_interruption_ends_with_the_same_weights(corpus, tmp_path, monkeypatch):

    args = ["--epochs", "2", "--batch-size", "16", "--hidden-size", "32", "--quiet", "--seed", "5"]
    ok("train-student", corpus.path, "--out", tmp_path / "full", *args)

    calls = {"n": 0}
    real_step = torch.optim.AdamW.step

    def crash_on_step_9(self, *a, **k):  # 6 steps per epoch: dies in the middle of epoch 2
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", crash_on_step_9)
    result = run("train-student", corpus.path, "--out", tmp_path / "cut", *args, "--checkpoint-every", "2")
    assert result.exit_code != 0
    monkeypatch.setattr(torch.optim.AdamW, "step", real_step)
    ok("train-student", corpus.path, "--out", tmp_path / "cut", *args, "--checkpoint-every", "2", "--resume")

    assert max_weight_difference(tmp_path / "full", tmp_path / "cut") <= WEIGHTS_TOLERANCE
    a, b = (json.loads((tmp_path / d / "training.json").read_text()) for d in ("full", "cut"))
    assert [e["train_loss"] for e in a["epochs"]] == pytest.approx([e["train_loss"] for e in b["epochs"]])


def test_resume_refuses_changed_options_and_missing_checkpoints(corpus, student, tmp_path):
    result = run("train-student", corpus.path, "--out", tmp_path / "none", *FAST, "--resume")
    assert result.exit_code == 1 and "no checkpoint.safetensors to resume from" in result.output
    ok("train-student", corpus.path, "--out", tmp_path / "kept", *FAST, "--keep-checkpoint")
    result = run("train-student", corpus.path, "--out", tmp_path / "kept", *FAST, "--lr", "0.1", "--resume")
    assert result.exit_code == 1 and "lr was" in result.output


def export_manifest(corpus, split: str, folder):
    """The split's rows as a serving manifest: frames written out as PNG (lossless), text, features."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for table in corpus.iter_batches(split, ["sample_id", "title", "ocr_text", "frames", "features"]):
        for row in table.to_pylist():
            frames = []
            for k, data in enumerate(row["frames"]):
                name = f"{row['sample_id']}-{k}.png"
                Image.open(io.BytesIO(data)).save(folder / name)
                frames.append(name)
            lines.append(json.dumps({"id": row["sample_id"], "frames": frames, "title": row["title"],
                                     "ocr_text": row["ocr_text"],
                                     "features": dict(zip(corpus.features, row["features"]))}))
    (folder / "serve.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "serve.jsonl"


def logits_of(path) -> np.ndarray:
    return np.array(pq.read_table(path, columns=["logits"]).column(0).to_pylist(), dtype=np.float64)


def test_evaluate_predict_and_the_dump_score_alike(corpus, student, teacher, tmp_path):
    # One scoring path: the same rows and model give the same logits through every command
    # (within float32 rounding: the batches differ, docs/method.md "What repeats exactly").
    ok("evaluate", student, corpus.path, "--out", tmp_path / "eval.parquet", "--batch-size", "7", "--quiet")
    manifest = export_manifest(corpus, "eval", tmp_path / "serve")
    ok("predict", student, manifest, "--out", tmp_path / "pred.parquet", "--batch-size", "5", "--quiet")
    assert np.abs(logits_of(tmp_path / "eval.parquet") - logits_of(tmp_path / "pred.parquet")).max() < 1e-4

    ok("evaluate", teacher, corpus.path, "--split", "train", "--out", tmp_path / "teacher.parquet", "--quiet")
    ok("dump-teacher", teacher, corpus.path, "--out", tmp_path / "dump", "--batch-size", "11", "--quiet")
    dumped = np.concatenate([logits_of(f) for f in sorted((tmp_path / "dump").glob("part-*.parquet"))])
    assert np.abs(logits_of(tmp_path / "teacher.parquet") - dumped).max() < 1e-4


def test_scoring_gives_back_the_mode_it_found(student, corpus):
    from cpfd.pipeline.data import make_loader
    from cpfd.pipeline.scoring import resolve_device, score_batches
    from cpfd.pipeline.stages import dataset_for
    from cpfd.teacher.models import load_model

    model, tokenizer = load_model(student)
    batches = list(make_loader(dataset_for(model, corpus, "eval", tokenizer, 16)))
    for mode in (True, False):
        model.train(mode)
        labels, logits = score_batches(model, batches, resolve_device("cpu"))
        assert model.training is mode and logits.shape == (48, 2) and torch.is_grad_enabled()  # both given back
        again = score_batches(model, batches, resolve_device("cpu"))[1]
        assert np.abs(logits - again).max() < 1e-5  # eval mode inside: dropout never applies


@pytest.mark.parametrize("options, message", [
    (["--hidden-size", "50", "--num-heads", "4"], "--hidden-size 50 is not divisible by --num-heads 4"),
    (["--patch-size", "32"], "--patch-size 32 is larger than the corpus's frames (16 px)"),
    (["--hidden-size", "100000"], "--hidden-size 100000 is above the largest cpfd builds"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--warmup-ratio", "nan"], "--warmup-ratio must be a finite number"),
])
def test_options_that_cannot_work_together_are_one_line_errors(corpus, tmp_path, options, message):
    refused("train-student", corpus.path, "--out", tmp_path / "s", *FAST, *options, message=message)
    assert not (tmp_path / "s").exists()


def test_a_vision_backbone_that_cannot_take_the_frames_is_a_one_line_error(corpus, tmp_path):
    from transformers import YolosConfig, YolosModel

    folder = tmp_path / "yolos"  # made for 32 x 48 images; YOLOS cannot interpolate to 16 px frames
    YolosModel(YolosConfig(image_size=[32, 48], patch_size=8, hidden_size=32, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=64, num_detection_tokens=2)).save_pretrained(folder)
    refused("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--vision-model", folder,
            message="--vision-model")


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


def test_a_tabular_model_refuses_videos_and_text(tmp_path):
    tabular = tiny_corpus(tmp_path / "tab", frames=False, text=False)
    ok("train-student", tabular.path, "--out", tmp_path / "s", *FAST)
    manifest = write_serving_manifest(tmp_path)  # frames, title, OCR text and the feature
    refused("predict", tmp_path / "s", manifest, "--quiet", message="serve.jsonl:1: frames: the model reads no frames")
    refused("evaluate", tmp_path / "s", tiny_corpus(tmp_path / "media").path, "--quiet",
            message="frames: the model reads no frames")


def test_a_finished_run_keeps_its_checkpoint_only_when_asked(corpus, student, tmp_path):
    assert not (student / "checkpoint.safetensors").exists()
    ok("train-student", corpus.path, "--out", tmp_path / "k", *FAST, "--keep-checkpoint")
    assert (tmp_path / "k" / "checkpoint.safetensors").exists()
