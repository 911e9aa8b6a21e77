"""pipeline/train.py, the training loop, end to end through `cpfd train-teacher` and `cpfd train-student`:
what a model folder holds, runs that repeat, the schedule (--max-steps, --val-fraction 0, the auto
schedule), resume after an interruption, pretrained backbones, and options that cannot work.

`corpus`, `teacher` and `student` are the session's shared ones (tests/conftest.py): 100 train rows,
so 6 optimizer steps an epoch in batches of 16.
"""

import json
import shutil

import pytest
import torch

from tests.factories import WEIGHTS_TOLERANCE, max_weight_difference, tiny_corpus
from tests.invoke import FAST, ok, refused, run


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


def test_a_run_without_validation_rows_keeps_the_last_epoch(tmp_path):
    corpus = tiny_corpus(tmp_path / "c", n_train=48, n_eval=16)
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST, "--epochs", "3", "--val-fraction", "0")
    record = json.loads((tmp_path / "s" / "training.json").read_text())
    assert record["best_epoch"] == 3 and record["validation"] == {"fraction": 0.0, "rows": 0}
    assert record["schedule"] == {"rule": "fixed", "epochs": 3, "steps": 9, "steps_per_epoch": 3, "min_steps": 600}


def test_the_auto_schedule_gives_a_small_corpus_enough_steps(corpus, tmp_path):
    ok("train-student", corpus.path, "--out", tmp_path / "s", *FAST[2:], "--min-steps", "20")
    record = json.loads((tmp_path / "s" / "training.json").read_text())
    steps_per_epoch = record["schedule"]["steps_per_epoch"]
    assert record["schedule"]["rule"] == "auto" and record["schedule"]["steps"] >= 20
    assert record["schedule"]["epochs"] == max(3, -(-20 // steps_per_epoch)) == len(record["epochs"])


def test_existing_model_folder_is_refused(corpus, student, tmp_path):
    shutil.copytree(student, tmp_path / "student")  # a refusal writes nothing; were it to, into a copy
    result = run("train-student", corpus.path, "--out", tmp_path / "student", *FAST)
    assert result.exit_code == 1 and "already holds a model" in result.output


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


def test_a_finished_run_keeps_its_checkpoint_only_when_asked(corpus, student, tmp_path):
    assert not (student / "checkpoint.safetensors").exists()
    ok("train-student", corpus.path, "--out", tmp_path / "k", *FAST, "--keep-checkpoint")
    assert (tmp_path / "k" / "checkpoint.safetensors").exists()


def test_a_tie_of_the_selection_metric_goes_to_the_lower_validation_log_loss():
    from cpfd.pipeline.train import better_epoch, selection_score

    saturated = [{"val_roc_auc": 1.0, "val_log_loss": 0.20}, {"val_roc_auc": 1.0, "val_log_loss": 0.35}]
    scores = [selection_score(m, "roc_auc", has_validation=True) for m in saturated]
    assert not better_epoch(*scores[1], *scores[0])  # the later, more memorised epoch does not win the tie
    assert better_epoch(*scores[0], *scores[0])  # a tie of both: the later epoch, as before
    assert better_epoch(*selection_score({"val_roc_auc": 0.9, "val_log_loss": 9.0}, "roc_auc", True), 0.8, -0.1)
    by_loss = selection_score({"val_roc_auc": 0.5, "val_log_loss": 0.3}, "log_loss", True)
    assert by_loss == (-0.3, -0.3) and selection_score({"val_roc_auc": float("nan")}, "roc_auc", True)[0] == float("-inf")


def test_select_by_log_loss_keeps_the_epoch_of_the_lowest_validation_loss(corpus, tmp_path):
    ok("train-student", corpus.path, "--out", tmp_path / "s", "--epochs", "4", "--batch-size", "16", "--hidden-size",
       "32", "--num-layers", "1", "--quiet", "--select-by", "log_loss")
    record = json.loads((tmp_path / "s" / "training.json").read_text())
    losses = [e["val_log_loss"] for e in record["epochs"]]
    assert record["best_epoch"] == 1 + max(range(4), key=lambda i: (-losses[i], i))
    assert record["threshold"] == record["epochs"][record["best_epoch"] - 1]["val_best_threshold"]
    bad = run("train-student", corpus.path, "--out", tmp_path / "x", "--select-by", "f1")
    assert bad.exit_code == 2 and "--select-by" in bad.output and not (tmp_path / "x").exists()
